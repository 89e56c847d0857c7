"""Shared indexing: claims on queued photos and named leases, so several indexers split the work.

A pending photo row is claimed by one worker (``claimed_by``) until ``claimed_until`` (epoch seconds of the
catalog's clock); a claim that is not renewed expires and the row can be claimed again. ``leases`` holds named,
expiring locks: one scanner per root at a time (``scan:<root id>``), and one row per running worker (``run:<worker>``)
whose expiry tells the others that it died and its half-written work must be checked.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (no batch rebuild): SQLite adds nullable columns in place, whatever the table's size.
    op.add_column("photos", sa.Column("claimed_by", sa.String(128), nullable=True))
    op.add_column("photos", sa.Column("claimed_until", sa.Float, nullable=True))
    op.create_table(
        "leases",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("leases")
    with op.batch_alter_table("photos") as batch:
        batch.drop_column("claimed_until")
        batch.drop_column("claimed_by")
