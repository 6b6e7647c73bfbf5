"""Record on each run how long after its last heartbeat its runner has surely stopped the job.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows written before this revision stay NULL: readers assume the default fence.
    op.add_column("runs", sa.Column("fence_seconds", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("fence_seconds")
