"""Add job_changes and prune_marks for missed-slot detection; indexes for reports and prune.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_FAILED = sa.text("status IN ('failed', 'killed', 'lock_lost', 'lost', 'timed_out')")


def upgrade() -> None:
    op.create_table(
        "job_changes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "job_id",
            sa.Integer,
            sa.ForeignKey("jobs.id", ondelete="CASCADE", name="fk_job_changes_job_id"),
            nullable=False,
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("schedule", sa.Text, nullable=False),
        sa.Column("timezone", sa.Text, nullable=False),
    )
    op.create_index("ix_job_changes_job_id_at", "job_changes", ["job_id", "at"])
    op.create_table(
        "prune_marks",
        sa.Column(
            "job_id",
            sa.Integer,
            sa.ForeignKey("jobs.id", ondelete="CASCADE", name="fk_prune_marks_job_id"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("pruned_before", sa.DateTime(timezone=True), nullable=False),
    )
    # Jobs defined before this revision: their current state, from their creation on.
    op.execute(
        "INSERT INTO job_changes (job_id, at, enabled, schedule, timezone) "
        "SELECT id, created_at, enabled, schedule, timezone FROM jobs"
    )
    op.create_index("ix_runs_job_name_id", "runs", ["job_name", "id"])
    op.create_index(
        "ix_runs_job_claimed",
        "runs",
        ["job_id", "claimed_at"],
        postgresql_include=["status", "attempt", "slot", "duration_seconds"],
    )
    op.create_index(
        "ix_runs_job_success",
        "runs",
        ["job_id", "id"],
        postgresql_where=sa.text("status = 'succeeded'"),
        sqlite_where=sa.text("status = 'succeeded'"),
    )
    op.create_index(
        "ix_runs_job_failure",
        "runs",
        ["job_id", "id"],
        postgresql_where=_FAILED,
        sqlite_where=_FAILED,
    )


def downgrade() -> None:
    for name in ("ix_runs_job_failure", "ix_runs_job_success", "ix_runs_job_claimed",
                 "ix_runs_job_name_id"):  # fmt: skip
        op.drop_index(name, "runs")
    op.drop_table("prune_marks")
    op.drop_table("job_changes")
