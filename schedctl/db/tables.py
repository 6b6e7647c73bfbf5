"""Table definitions: the single source of truth the migrations must reproduce."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect

from schedctl.models import FAILURE_STATUSES, NOTIFY_EVENTS

metadata = sa.MetaData()


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Store instants in UTC; always hand back timezone-aware datetimes."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert to UTC (naive for SQLite, which has no zone support)."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("refusing to store a naive datetime")
        utc = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return an aware UTC datetime."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _json() -> Any:
    return sa.JSON().with_variant(JSONB(), "postgresql")


CONCURRENCY_VALUES = ("forbid", "allow", "queue")
CATCH_UP_VALUES = ("latest", "skip")
STATUS_VALUES = (
    "running",
    "succeeded",
    "failed",
    "timed_out",
    "killed",
    "skipped_overlap",
    "lock_lost",
    "lost",
)
TRIGGER_VALUES = ("timer", "cron", "manual", "daemon", "catch-up")


def _in(column: str, values: tuple[str, ...]) -> sa.CheckConstraint:
    quoted = ", ".join(f"'{v}'" for v in values)
    return sa.CheckConstraint(f"{column} IN ({quoted})", name=f"ck_{column}")


jobs = sa.Table(
    "jobs",
    metadata,
    # The id doubles as the advisory-lock key, so it stays a 32-bit integer.
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
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("revision", sa.Integer, nullable=False),
    # Notification targets and the events they get (migration 0005).
    sa.Column("notify", _json(), nullable=False, server_default=sa.text("'[]'")),
    sa.Column(
        "notify_on",
        _json(),
        nullable=False,
        server_default=sa.text("'" + json.dumps(list(NOTIFY_EVENTS)) + "'"),
    ),
    # A label selector (schedctl/placement.py); NULL places the job on every host.
    sa.Column("placement", sa.Text, nullable=True),
    # Secrets by reference (migration 0008): NAME -> REF, never a value; and the names of the
    # `env` entries whose values are masked in every output.
    sa.Column("secrets", _json(), nullable=False, server_default=sa.text("'{}'")),
    sa.Column("secret_env", _json(), nullable=False, server_default=sa.text("'[]'")),
    # The operator's signature over the canonical definition (signing.py); NULL: unsigned.
    sa.Column("signature", sa.Text, nullable=True),
    sa.Column("signer", sa.Text, nullable=True),
    sa.Column("signing_key", sa.Text, nullable=True),
    # The canonical bytes that were signed (migration 0011): what changed since is shown.
    sa.Column("signed_definition", sa.Text, nullable=True),
    sa.UniqueConstraint("name", name="uq_jobs_name"),
    _in("concurrency", CONCURRENCY_VALUES),
    _in("catch_up", CATCH_UP_VALUES),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    # History outlives a removed job (unless purged), so the link is nulled, not cascaded.
    sa.Column(
        "job_id",
        sa.Integer,
        sa.ForeignKey("jobs.id", ondelete="SET NULL", name="fk_runs_job_id"),
        nullable=True,
    ),
    sa.Column("job_name", sa.String(63), nullable=False),
    sa.Column("job_revision", sa.Integer, nullable=True),
    sa.Column("slot", UTCDateTime, nullable=True),
    sa.Column("trigger", sa.String(16), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("host", sa.Text, nullable=False),
    sa.Column("pid", sa.Integer, nullable=True),
    sa.Column("db_backend_pid", sa.Integer, nullable=True),
    sa.Column("claimed_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=True),
    sa.Column("finished_at", UTCDateTime, nullable=True),
    sa.Column("heartbeat_at", UTCDateTime, nullable=True),
    sa.Column("exit_code", sa.Integer, nullable=True),
    sa.Column("signal", sa.Integer, nullable=True),
    sa.Column("duration_seconds", sa.Float, nullable=True),
    sa.Column("output_tail", sa.Text, nullable=True),
    sa.Column("output_bytes", sa.BigInteger, nullable=False),
    sa.Column("output_truncated", sa.Boolean, nullable=False),
    sa.Column("clock_skew_seconds", sa.Float, nullable=True),
    sa.Column("schedctl_version", sa.String(32), nullable=False),
    # Seconds after heartbeat_at by which this runner has surely stopped its job, should it
    # lose its session: the next holder of the job's lock waits that long (the fence).
    sa.Column("fence_seconds", sa.Float, nullable=True),
    _in("status", STATUS_VALUES),
    _in("trigger", TRIGGER_VALUES),
)

# One claim per scheduled slot fleet-wide; retries of that slot are attempts 2, 3, ...
sa.Index(
    "uq_runs_job_slot",
    runs.c.job_id,
    runs.c.slot,
    unique=True,
    postgresql_where=runs.c.attempt == 1,
    sqlite_where=runs.c.attempt == 1,
)
sa.Index("ix_runs_job_id_id", runs.c.job_id, runs.c.id)
# `history JOB`: newest runs of one job by name (history outlives a removed job's id).
sa.Index("ix_runs_job_name_id", runs.c.job_name, runs.c.id)
# `report --since` and `prune`: one job's window read from the index alone, job by job
# (PostgreSQL INCLUDE); a per-job range scan beat one global claimed_at scan plus a sort.
sa.Index(
    "ix_runs_job_claimed",
    runs.c.job_id,
    runs.c.claimed_at,
    postgresql_include=["status", "attempt", "slot", "duration_seconds"],
)
# Last success / last failure per job without walking the job's whole history.
sa.Index(
    "ix_runs_job_success",
    runs.c.job_id,
    runs.c.id,
    postgresql_where=runs.c.status == "succeeded",
    sqlite_where=runs.c.status == "succeeded",
)
_failed_sql = sa.text("status IN (" + ", ".join(f"'{s}'" for s in sorted(FAILURE_STATUSES)) + ")")
sa.Index(
    "ix_runs_job_failure",
    runs.c.job_id,
    runs.c.id,
    postgresql_where=_failed_sql,
    sqlite_where=_failed_sql,
)
sa.Index(
    "ix_runs_running",
    runs.c.job_id,
    postgresql_where=runs.c.status == "running",
    sqlite_where=runs.c.status == "running",
)

# The schedule-relevant state of a job from each change on, so missed-slot detection judges
# every past slot by the schedule (and enabled flag) in force at the time.
job_changes = sa.Table(
    "job_changes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "job_id",
        sa.Integer,
        sa.ForeignKey("jobs.id", ondelete="CASCADE", name="fk_job_changes_job_id"),
        nullable=False,
    ),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("schedule", sa.Text, nullable=False),
    sa.Column("timezone", sa.Text, nullable=False),
)
sa.Index("ix_job_changes_job_id_at", job_changes.c.job_id, job_changes.c.at)

# Every change to a job, written by triggers on jobs (migration 0007) whoever makes it, so
# direct SQL is recorded too. No foreign key: the record of a removed job stays, by name, and
# `prune` leaves it. Environment values are never copied here, only their keys.
JOB_AUDIT_ACTIONS = ("insert", "update", "delete")
job_audit = sa.Table(
    "job_audit",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("job_id", sa.Integer, nullable=True),
    sa.Column("job_name", sa.String(63), nullable=False),
    sa.Column("action", sa.String(8), nullable=False),
    # The database's clock.
    sa.Column("at", UTCDateTime, nullable=False),
    # The job's revision after the change (on delete: the one removed).
    sa.Column("revision", sa.Integer, nullable=True),
    # PostgreSQL: the role in effect (SET ROLE, else the login role) and the login role.
    sa.Column("db_role", sa.Text, nullable=True),
    sa.Column("session_role", sa.Text, nullable=True),
    sa.Column("application_name", sa.Text, nullable=True),
    sa.Column("client_addr", sa.Text, nullable=True),
    # The OS user schedctl ran as, as schedctl says; NULL for a change by other SQL.
    sa.Column("os_user", sa.Text, nullable=True),
    # Who signed the definition this change wrote, when it wrote a signature.
    sa.Column("signer", sa.Text, nullable=True),
    # insert/delete: the definition; update: {field: [old, new]} for the fields changed.
    sa.Column("changes", _json(), nullable=False),
    _in("action", JOB_AUDIT_ACTIONS),
)
sa.Index("ix_job_audit_job_name_id", job_audit.c.job_name, job_audit.c.id)
sa.Index("ix_job_audit_at", job_audit.c.at)

# Runs claimed before `pruned_before` may have been deleted: slots before it are not judged.
prune_marks = sa.Table(
    "prune_marks",
    metadata,
    sa.Column(
        "job_id",
        sa.Integer,
        sa.ForeignKey("jobs.id", ondelete="CASCADE", name="fk_prune_marks_job_id"),
        primary_key=True,
        autoincrement=False,
    ),
    sa.Column("pruned_before", UTCDateTime, nullable=False),
)

# Finished runs per job name and status, counted by triggers on runs (migration 0004) as each
# run reaches a final status. Never counted down: `prune` leaves them, so metrics' counters
# stay monotonic, and metrics reads them instead of counting all history.
run_counts = sa.Table(
    "run_counts",
    metadata,
    sa.Column("job_name", sa.String(63), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("total", sa.BigInteger, nullable=False),
    sa.PrimaryKeyConstraint("job_name", "status", name="pk_run_counts"),
)

NOTIFICATION_STATES = ("pending", "sent", "failed")

# The outbox: one row per notification to deliver, written by triggers on runs in the same
# transaction as the run's result (migration 0005), or by `schedctl notify` for a missed
# slot. Deliverers claim a row (claimed_by, claimed_until) before sending it.
notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column(
        "job_id",
        sa.Integer,
        sa.ForeignKey("jobs.id", ondelete="SET NULL", name="fk_notifications_job_id"),
        nullable=True,
    ),
    sa.Column("job_name", sa.String(63), nullable=False),
    # No foreign key: a notification outlives a pruned or purged run.
    sa.Column("run_id", sa.BigInteger, nullable=True),
    sa.Column("slot", UTCDateTime, nullable=True),
    sa.Column("event", sa.String(16), nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("next_attempt_at", UTCDateTime, nullable=False),
    sa.Column("claimed_by", sa.Text, nullable=True),
    sa.Column("claimed_until", UTCDateTime, nullable=True),
    sa.Column("done_at", UTCDateTime, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    _in("event", NOTIFY_EVENTS),
    _in("state", NOTIFICATION_STATES),
)
sa.Index(
    "ix_notifications_due",
    notifications.c.next_attempt_at,
    postgresql_where=notifications.c.state == "pending",
    sqlite_where=notifications.c.state == "pending",
)
sa.Index("ix_notifications_run_id", notifications.c.run_id)
sa.Index("ix_notifications_created", notifications.c.created_at)
# A missed slot is notified once per target, whichever host finds it first.
sa.Index(
    "uq_notifications_missed",
    notifications.c.job_id,
    notifications.c.slot,
    notifications.c.target,
    unique=True,
    postgresql_where=notifications.c.event == "missed",
    sqlite_where=notifications.c.event == "missed",
)

# Every host that ran `sync`, `daemon` or `run`, as it last said: its labels decide which jobs
# it carries. Times are the database's clock, so hosts with skewed clocks agree.
hosts = sa.Table(
    "hosts",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("labels", _json(), nullable=False),
    sa.Column("version", sa.String(32), nullable=False),
    # systemd, cron or daemon: how it schedules (NULL until a sync or the daemon says).
    sa.Column("scheduler", sa.String(16), nullable=True),
    sa.Column("first_seen", UTCDateTime, nullable=False),
    sa.Column("last_seen", UTCDateTime, nullable=False),
    # Set by `sync` and the daemon: a host that did once is expected to keep doing it.
    sa.Column("last_sync", UTCDateTime, nullable=True),
)

# A host's refusal to run a job (trust.py): its definition failed the signature check or the
# host's policy. One row per job and host, kept while the host still refuses; it never takes a
# slot, so a host with a stale allowed-signers file cannot stop others from running the job.
refusals = sa.Table(
    "refusals",
    metadata,
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
    sa.Column("slot", UTCDateTime, nullable=True),
    sa.Column("first_at", UTCDateTime, nullable=False),
    sa.Column("last_at", UTCDateTime, nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
    sa.PrimaryKeyConstraint("job_id", "host", name="pk_refusals"),
    _in("kind", ("signature", "policy")),
)
