"""Notification targets on jobs, and the outbox that their notifications wait in.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_FAILED = "('failed', 'killed', 'lock_lost', 'lost', 'timed_out')"
# The newest earlier run of the job that reached a result (skips are no result).
_PREVIOUS = (
    "(SELECT p.status FROM runs p WHERE p.job_id = NEW.job_id AND p.id < NEW.id"
    " AND p.status NOT IN ('running', 'skipped_overlap') ORDER BY p.id DESC LIMIT 1)"
)
# A run's result and its notifications are written in one transaction, whichever writer puts
# it there (the run, a spooled result, reconciliation to `lost`): none is lost, none doubled.
_PG_FUNCTION = f"""
CREATE FUNCTION schedctl_notify_run() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ev text;
BEGIN
    IF NEW.status IN {_FAILED} THEN
        ev := 'failure';
    ELSIF NEW.status = 'succeeded' AND {_PREVIOUS} IN {_FAILED} THEN
        ev := 'recovery';
    ELSE
        RETURN NULL;
    END IF;
    INSERT INTO notifications (job_id, job_name, run_id, slot, event, target, state, attempts,
        created_at, next_attempt_at)
    SELECT j.id, NEW.job_name, NEW.id, NEW.slot, ev, t.value, 'pending', 0,
        clock_timestamp(), clock_timestamp()
    FROM jobs j CROSS JOIN jsonb_array_elements_text(j.notify) AS t(value)
    WHERE j.id = NEW.job_id AND j.notify_on @> to_jsonb(ev);
    RETURN NULL;
END
$$
"""
_PG_TRIGGER = (
    "CREATE TRIGGER tr_runs_notify AFTER UPDATE OF status ON runs FOR EACH ROW"
    " WHEN (OLD.status = 'running' AND NEW.status <> 'running')"
    " EXECUTE FUNCTION schedctl_notify_run()"
)
_SQLITE_TRIGGER = f"""
CREATE TRIGGER tr_runs_notify AFTER UPDATE OF status ON runs
WHEN OLD.status = 'running' AND NEW.status <> 'running'
BEGIN
    INSERT INTO notifications (job_id, job_name, run_id, slot, event, target, state, attempts,
        created_at, next_attempt_at)
    SELECT j.id, NEW.job_name, NEW.id, NEW.slot, e.ev, t.value, 'pending', 0,
        strftime('%Y-%m-%d %H:%M:%f000', 'now'), strftime('%Y-%m-%d %H:%M:%f000', 'now')
    FROM jobs j, json_each(j.notify) t, (SELECT CASE
        WHEN NEW.status IN {_FAILED} THEN 'failure'
        WHEN NEW.status = 'succeeded' AND {_PREVIOUS} IN {_FAILED} THEN 'recovery'
        END AS ev) e
    WHERE j.id = NEW.job_id AND e.ev IS NOT NULL
    AND EXISTS (SELECT 1 FROM json_each(j.notify_on) o WHERE o.value = e.ev);
END
"""


def _json() -> sa.types.TypeEngine:  # type: ignore[type-arg]
    return sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.add_column("jobs", sa.Column("notify", _json(), nullable=False, server_default="[]"))
    op.add_column(
        "jobs",
        sa.Column(
            "notify_on",
            _json(),
            nullable=False,
            server_default='["failure", "recovery", "missed"]',
        ),
    )
    op.create_table(
        "notifications",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column(
            "job_id",
            sa.Integer,
            sa.ForeignKey("jobs.id", ondelete="SET NULL", name="fk_notifications_job_id"),
            nullable=True,
        ),
        sa.Column("job_name", sa.String(63), nullable=False),
        sa.Column("run_id", sa.BigInteger, nullable=True),
        sa.Column("slot", sa.DateTime(timezone=True), nullable=True),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.Text, nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.CheckConstraint("event IN ('failure', 'recovery', 'missed')", name="ck_event"),
        sa.CheckConstraint("state IN ('pending', 'sent', 'failed')", name="ck_state"),
    )
    pending = sa.text("state = 'pending'")
    op.create_index(
        "ix_notifications_due", "notifications", ["next_attempt_at"],
        postgresql_where=pending, sqlite_where=pending,
    )  # fmt: skip
    op.create_index("ix_notifications_run_id", "notifications", ["run_id"])
    op.create_index("ix_notifications_created", "notifications", ["created_at"])
    missed = sa.text("event = 'missed'")
    op.create_index(
        "uq_notifications_missed", "notifications", ["job_id", "slot", "target"], unique=True,
        postgresql_where=missed, sqlite_where=missed,
    )  # fmt: skip
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        op.execute(_PG_TRIGGER)
    else:
        op.execute(_SQLITE_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER tr_runs_notify ON runs")
        op.execute("DROP FUNCTION schedctl_notify_run()")
    else:
        op.execute("DROP TRIGGER tr_runs_notify")
    op.drop_table("notifications")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("notify_on")
        batch.drop_column("notify")
