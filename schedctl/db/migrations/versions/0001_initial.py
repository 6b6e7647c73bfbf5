"""Create jobs and runs.

Revision ID: 0001
Revises:
"""

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts(name: str, nullable: bool) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("command", _json(), nullable=False),
        sa.Column("shell", sa.Boolean, nullable=False),
        sa.Column("schedule", sa.Text, nullable=False),
        sa.Column("timezone", sa.Text, nullable=False),
        sa.Column("timeout_seconds", sa.Integer, nullable=True),
        sa.Column("concurrency", sa.String(16), nullable=False),
        sa.Column("catch_up", sa.String(16), nullable=False),
        sa.Column("jitter_seconds", sa.Integer, nullable=False),
        sa.Column("retries", sa.Integer, nullable=False),
        sa.Column("retry_delay_seconds", sa.Integer, nullable=False),
        sa.Column("env", _json(), nullable=False),
        sa.Column("workdir", sa.Text, nullable=True),
        sa.Column("run_as_user", sa.Text, nullable=True),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("tags", _json(), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("output_limit_bytes", sa.Integer, nullable=False),
        sa.Column("retention_seconds", sa.Integer, nullable=True),
        _ts("created_at", False),
        _ts("updated_at", False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.UniqueConstraint("name", name="uq_jobs_name"),
        sa.CheckConstraint("concurrency IN ('forbid', 'allow', 'queue')", name="ck_concurrency"),
        sa.CheckConstraint("catch_up IN ('latest', 'skip')", name="ck_catch_up"),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column(
            "job_id",
            sa.Integer,
            sa.ForeignKey("jobs.id", ondelete="SET NULL", name="fk_runs_job_id"),
            nullable=True,
        ),
        sa.Column("job_name", sa.String(63), nullable=False),
        sa.Column("job_revision", sa.Integer, nullable=True),
        _ts("slot", True),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=True),
        sa.Column("db_backend_pid", sa.Integer, nullable=True),
        _ts("claimed_at", False),
        _ts("started_at", True),
        _ts("finished_at", True),
        _ts("heartbeat_at", True),
        sa.Column("exit_code", sa.Integer, nullable=True),
        sa.Column("signal", sa.Integer, nullable=True),
        sa.Column("duration_seconds", sa.Float, nullable=True),
        sa.Column("output_tail", sa.Text, nullable=True),
        sa.Column("output_bytes", sa.BigInteger, nullable=False),
        sa.Column("output_truncated", sa.Boolean, nullable=False),
        sa.Column("clock_skew_seconds", sa.Float, nullable=True),
        sa.Column("schedctl_version", sa.String(32), nullable=False),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'failed', 'timed_out', 'killed', "
            "'skipped_overlap', 'lock_lost', 'lost')",
            name="ck_status",
        ),
        sa.CheckConstraint(
            "trigger IN ('timer', 'cron', 'manual', 'daemon', 'catch-up')", name="ck_trigger"
        ),
    )
    op.create_index(
        "uq_runs_job_slot",
        "runs",
        ["job_id", "slot"],
        unique=True,
        postgresql_where=sa.text("attempt = 1"),
        sqlite_where=sa.text("attempt = 1"),
    )
    op.create_index("ix_runs_job_id_id", "runs", ["job_id", "id"])
    op.create_index(
        "ix_runs_running",
        "runs",
        ["job_id"],
        postgresql_where=sa.text("status = 'running'"),
        sqlite_where=sa.text("status = 'running'"),
    )


def downgrade() -> None:
    op.drop_table("runs")
    op.drop_table("jobs")
