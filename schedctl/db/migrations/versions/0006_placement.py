"""Place jobs on hosts by label selector, and keep a row per host with its labels.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing jobs stay NULL: on every host, as before.
    op.add_column("jobs", sa.Column("placement", sa.Text, nullable=True))
    op.create_table(
        "hosts",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("labels", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("scheduler", sa.String(16), nullable=True),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_sync", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("hosts")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("placement")
