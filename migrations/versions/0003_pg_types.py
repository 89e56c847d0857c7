"""PostgreSQL only: 64-bit sizes and mtimes, and byte-order ("C") collation on the path columns.

0001 wrote ``size`` and ``mtime_ns`` as INTEGER, which is 64-bit in SQLite but 32-bit in PostgreSQL (a file of
2 GiB, any nanosecond mtime would not fit), and its text columns take the database's collation, under which the
prefix range Catalog.file_states queries ("a/" <= path < "a0") is not the set of paths below a folder. On
SQLite both already hold, so this revision changes nothing there.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BIG = [("photos", "size"), ("photos", "mtime_ns")]
PATHS = [("roots", "path", False), ("photos", "path", False), ("photos", "folder", False),
         ("photos", "error", True), ("queue", "path", False), ("queue", "moved_from", True)]  # fmt: skip


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in BIG:
        op.alter_column(table, column, type_=sa.BigInteger(), existing_type=sa.Integer(), existing_nullable=False)
    for table, column, nullable in PATHS:  # their indexes are rebuilt with the new collation
        op.alter_column(table, column, type_=sa.Text(collation="C"), existing_type=sa.Text(),
                        existing_nullable=nullable)  # fmt: skip


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column, nullable in PATHS:
        op.alter_column(table, column, type_=sa.Text(), existing_type=sa.Text(collation="C"),
                        existing_nullable=nullable, postgresql_using=f'"{column}" COLLATE "default"')  # fmt: skip
    for table, column in BIG:
        op.alter_column(table, column, type_=sa.Integer(), existing_type=sa.BigInteger(), existing_nullable=False)
