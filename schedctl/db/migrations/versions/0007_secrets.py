"""Secrets by reference: a job's NAME -> REF map, and which env values are secret.

Revision ID: 0007
Revises: 0006
"""

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _json() -> Any:
    return sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    # Existing jobs have neither: an empty map and an empty list.
    op.add_column(
        "jobs", sa.Column("secrets", _json(), nullable=False, server_default=sa.text("'{}'"))
    )
    op.add_column(
        "jobs", sa.Column("secret_env", _json(), nullable=False, server_default=sa.text("'[]'"))
    )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("secret_env")
        batch.drop_column("secrets")
