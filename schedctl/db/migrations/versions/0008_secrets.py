"""Secrets by reference: a job's NAME -> REF map, and which env values are secret.

Revision ID: 0008
Revises: 0007
"""

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# The change log's SQLite triggers (0007) name every definition column: they are made again
# here with the two new ones, so a change of secrets alone is recorded and bumps the revision.
# PostgreSQL's triggers read the whole row and need nothing. Only references and names are
# logged: neither column holds a value.
_BEFORE = (
    "name", "command", "shell", "schedule", "timezone", "timeout_seconds", "concurrency",
    "catch_up", "jitter_seconds", "retries", "retry_delay_seconds", "env", "workdir",
    "run_as_user", "description", "tags", "enabled", "output_limit_bytes", "retention_seconds",
    "notify", "notify_on", "placement",
)  # fmt: skip
_JSON = {"command", "tags", "notify", "notify_on", "secrets", "secret_env"}
_NOW = "strftime('%Y-%m-%d %H:%M:%f000', 'now')"
_ENV_DIFF = (
    "json_object("
    "'added', json((SELECT json_group_array(key) FROM (SELECT key FROM json_each(NEW.env)"
    " WHERE key NOT IN (SELECT key FROM json_each(OLD.env)) ORDER BY key))), "
    "'removed', json((SELECT json_group_array(key) FROM (SELECT key FROM json_each(OLD.env)"
    " WHERE key NOT IN (SELECT key FROM json_each(NEW.env)) ORDER BY key))), "
    "'changed', json((SELECT json_group_array(n.key) FROM (SELECT n.key FROM json_each(NEW.env) n"
    " JOIN json_each(OLD.env) o ON o.key = n.key WHERE o.value IS NOT n.value"
    " OR o.type IS NOT n.type ORDER BY n.key) n)))"
)
_INSERT = "INSERT INTO job_audit (job_id, job_name, action, at, revision, changes) VALUES "


def _json() -> Any:
    return sa.JSON().with_variant(JSONB(), "postgresql")


def _value(row: str, col: str) -> str:
    return f"json({row}.{col})" if col in _JSON else f"{row}.{col}"


def _env_keys(row: str) -> str:
    return (
        f"json((SELECT json_group_array(key) FROM (SELECT key FROM json_each({row}.env) "
        f"ORDER BY key)))"
    )


def _definition(row: str, columns: tuple[str, ...]) -> str:
    pairs = [f"'{c}', " + (_env_keys(row) if c == "env" else _value(row, c)) for c in columns]
    return "json_object(" + ", ".join(pairs) + ")"


def _diff(columns: tuple[str, ...]) -> str:
    parts = []
    for c in columns:
        v = _ENV_DIFF if c == "env" else f"json_array({_value('OLD', c)}, {_value('NEW', c)})"
        parts.append(f"SELECT '{c}' AS k, {v} AS v WHERE OLD.{c} IS NOT NEW.{c}")
    return "(SELECT json_group_object(k, json(v)) FROM (" + " UNION ALL ".join(parts) + "))"


def _sqlite_triggers(columns: tuple[str, ...]) -> tuple[str, ...]:
    return (
        f"CREATE TRIGGER tr_jobs_audit_insert AFTER INSERT ON jobs BEGIN {_INSERT}"
        f"(NEW.id, NEW.name, 'insert', {_NOW}, NEW.revision, {_definition('NEW', columns)}); END",
        "CREATE TRIGGER tr_jobs_audit_update AFTER UPDATE ON jobs WHEN "
        + " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in columns)
        + " BEGIN UPDATE jobs SET revision = OLD.revision + 1"
        " WHERE id = NEW.id AND NEW.revision = OLD.revision; "
        f"{_INSERT}(NEW.id, NEW.name, 'update', {_NOW},"
        f" (SELECT revision FROM jobs WHERE id = NEW.id), {_diff(columns)}); END",
        f"CREATE TRIGGER tr_jobs_audit_delete AFTER DELETE ON jobs BEGIN {_INSERT}"
        f"(OLD.id, OLD.name, 'delete', {_NOW}, OLD.revision, {_definition('OLD', columns)}); END",
    )


def _drop_sqlite_triggers() -> bool:
    if op.get_bind().dialect.name != "sqlite":
        return False
    for name in ("insert", "update", "delete"):
        op.execute(f"DROP TRIGGER IF EXISTS tr_jobs_audit_{name}")
    return True


def upgrade() -> None:
    # Existing jobs have neither: an empty map and an empty list.
    op.add_column(
        "jobs", sa.Column("secrets", _json(), nullable=False, server_default=sa.text("'{}'"))
    )
    op.add_column(
        "jobs", sa.Column("secret_env", _json(), nullable=False, server_default=sa.text("'[]'"))
    )
    if _drop_sqlite_triggers():
        for ddl in _sqlite_triggers((*_BEFORE, "secrets", "secret_env")):
            op.execute(ddl)


def downgrade() -> None:
    # SQLite copies the table to drop a column: its triggers go first and come back after.
    sqlite = _drop_sqlite_triggers()
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("secret_env")
        batch.drop_column("secrets")
    if sqlite:
        for ddl in _sqlite_triggers(_BEFORE):
            op.execute(ddl)
