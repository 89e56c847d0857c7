"""The daemon's durable work queue, and an index for "photos indexed in the last minute/hour".

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "queue",
        sa.Column("path", sa.Text, primary_key=True),
        sa.Column("moved_from", sa.Text, nullable=True),
        sa.Column("is_dir", sa.Boolean, nullable=False),
        sa.Column("first_seen", sa.Float, nullable=False),
        sa.Column("due_at", sa.Float, nullable=False),
    )
    op.create_index("ix_queue_due_at", "queue", ["due_at"])
    op.create_index("ix_photos_indexed_at", "photos", ["indexed_at"])


def downgrade() -> None:
    op.drop_index("ix_photos_indexed_at", "photos")
    op.drop_table("queue")
