"""Signed job definitions, and hosts' refusals of jobs they will not run.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing jobs stay unsigned: hosts that require signatures refuse them until signed.
    op.add_column("jobs", sa.Column("signature", sa.Text, nullable=True))
    op.add_column("jobs", sa.Column("signer", sa.Text, nullable=True))
    op.add_column("jobs", sa.Column("signing_key", sa.Text, nullable=True))
    op.create_table(
        "refusals",
        sa.Column(
            "job_id",
            sa.Integer,
            sa.ForeignKey("jobs.id", ondelete="CASCADE", name="fk_refusals_job_id"),
            nullable=False,
        ),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("job_name", sa.String(63), nullable=False),
        sa.Column("job_revision", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("slot", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("job_id", "host", name="pk_refusals"),
        sa.CheckConstraint("kind IN ('signature', 'policy')", name="ck_kind"),
    )


def downgrade() -> None:
    op.drop_table("refusals")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("signing_key")
        batch.drop_column("signer")
        batch.drop_column("signature")
