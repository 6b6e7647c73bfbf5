"""Count finished runs per job and status as they finish, so metrics never scan history.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# A run is counted once it reaches a final status, whichever writer puts it there (the run,
# a spooled result, reconciliation to `lost`). Deletes are not counted back: the counters
# are Prometheus counters, and `prune` must not lower them.
_PG_FUNCTION = """
CREATE FUNCTION schedctl_count_run() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO run_counts (job_name, status, total) VALUES (NEW.job_name, NEW.status, 1)
    ON CONFLICT (job_name, status) DO UPDATE SET total = run_counts.total + 1;
    RETURN NULL;
END
$$
"""
_PG_TRIGGERS = (
    "CREATE TRIGGER tr_runs_count_insert AFTER INSERT ON runs FOR EACH ROW"
    " WHEN (NEW.status <> 'running') EXECUTE FUNCTION schedctl_count_run()",
    "CREATE TRIGGER tr_runs_count_update AFTER UPDATE OF status ON runs FOR EACH ROW"
    " WHEN (NEW.status <> OLD.status AND NEW.status <> 'running')"
    " EXECUTE FUNCTION schedctl_count_run()",
)
_SQLITE_COUNT = (
    " BEGIN INSERT INTO run_counts (job_name, status, total) VALUES (NEW.job_name, NEW.status, 1)"
    " ON CONFLICT (job_name, status) DO UPDATE SET total = total + 1; END"
)
_SQLITE_TRIGGERS = (
    "CREATE TRIGGER tr_runs_count_insert AFTER INSERT ON runs"
    " WHEN NEW.status <> 'running'" + _SQLITE_COUNT,
    "CREATE TRIGGER tr_runs_count_update AFTER UPDATE OF status ON runs"
    " WHEN NEW.status <> OLD.status AND NEW.status <> 'running'" + _SQLITE_COUNT,
)


def upgrade() -> None:
    op.create_table(
        "run_counts",
        sa.Column("job_name", sa.String(63), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("total", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("job_name", "status", name="pk_run_counts"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        # Creating a trigger locks out writers to runs until this transaction commits, so no
        # run finishes between the triggers and the count below: none is missed or counted twice.
        for ddl in _PG_TRIGGERS:
            op.execute(ddl)
    else:
        for ddl in _SQLITE_TRIGGERS:
            op.execute(ddl)
    op.execute(
        "INSERT INTO run_counts (job_name, status, total) SELECT job_name, status, count(*)"
        " FROM runs WHERE status <> 'running' GROUP BY job_name, status"
    )


def downgrade() -> None:
    op.execute(
        "DROP TRIGGER tr_runs_count_update"
        + (" ON runs" if op.get_bind().dialect.name == "postgresql" else "")
    )
    op.execute(
        "DROP TRIGGER tr_runs_count_insert"
        + (" ON runs" if op.get_bind().dialect.name == "postgresql" else "")
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION schedctl_count_run()")
    op.drop_table("run_counts")
