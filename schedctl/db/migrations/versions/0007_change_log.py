"""Record every change to a job, however it is made, and bump the revision of any edit.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Columns that are bookkeeping, not the definition a host runs: a change to these alone bumps
# no revision and records nothing. The signature columns sign a definition rather than define
# it (named here before they exist, so that re-signing never invalidates itself).
_NOT_DEFINITION = "'{id,created_at,updated_at,revision,signature,signer,signed_at}'::text[]"

# A direct `UPDATE jobs SET command = ...` that leaves the revision alone still gets a new
# one: whatever was signed or synced at the old revision no longer matches.
_PG_REVISION = f"""
CREATE FUNCTION schedctl_job_revision() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.revision = OLD.revision
       AND to_jsonb(NEW) - {_NOT_DEFINITION} IS DISTINCT FROM to_jsonb(OLD) - {_NOT_DEFINITION}
    THEN
        NEW.revision := OLD.revision + 1;
    END IF;
    RETURN NEW;
END
$$
"""

# Environment values may be secrets: the log holds their keys only (create/delete: the keys;
# update: which keys were added, removed or changed).
_PG_ENV_KEYS = """
CREATE FUNCTION schedctl_env_diff(old_env jsonb, new_env jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
SELECT jsonb_build_object(
    'added', (SELECT coalesce(jsonb_agg(k ORDER BY k), '[]') FROM jsonb_object_keys(new_env) k
              WHERE NOT old_env ? k),
    'removed', (SELECT coalesce(jsonb_agg(k ORDER BY k), '[]') FROM jsonb_object_keys(old_env) k
                WHERE NOT new_env ? k),
    'changed', (SELECT coalesce(jsonb_agg(k ORDER BY k), '[]') FROM jsonb_object_keys(new_env) k
                WHERE old_env ? k AND old_env -> k IS DISTINCT FROM new_env -> k))
$$
"""

# SECURITY DEFINER: a role that may write jobs but not the log still records its change, and
# only the owner of the schema can write or delete log rows. Inside it current_user is the
# owner, so the role is the one the session logged in as, or the one it SET ROLE to.
# The signer comes from the row when a `signer` column exists, only when the signature was
# (re)written by this change; a change that leaves an old signature in place has no signer.
_PG_AUDIT = f"""
CREATE FUNCTION schedctl_audit_job() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path FROM CURRENT AS $$
DECLARE
    old_row jsonb := CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END;
    new_row jsonb := CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END;
    old_def jsonb := old_row - {_NOT_DEFINITION};
    new_def jsonb := new_row - {_NOT_DEFINITION};
    what jsonb;
    signer text;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        SELECT coalesce(jsonb_object_agg(k, jsonb_build_array(old_def -> k, new_def -> k)), '{{}}')
        INTO what FROM (SELECT jsonb_object_keys(old_def) UNION SELECT jsonb_object_keys(new_def))
            AS keys(k)
        WHERE old_def -> k IS DISTINCT FROM new_def -> k;
        IF what = '{{}}' THEN
            RETURN NULL;
        END IF;
        IF what ? 'env' THEN
            what := jsonb_set(what, '{{env}}', schedctl_env_diff(OLD.env, NEW.env));
        END IF;
        IF old_row -> 'signature' IS DISTINCT FROM new_row -> 'signature' THEN
            signer := new_row ->> 'signer';
        END IF;
    ELSIF TG_OP = 'INSERT' THEN
        what := jsonb_set(new_def, '{{env}}', schedctl_env_diff('{{}}', NEW.env) -> 'added');
        signer := new_row ->> 'signer';
    ELSE
        what := jsonb_set(old_def, '{{env}}', schedctl_env_diff(OLD.env, '{{}}') -> 'removed');
    END IF;
    INSERT INTO job_audit (job_id, job_name, action, at, revision, db_role, session_role,
        application_name, client_addr, os_user, signer, changes)
    VALUES (
        CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END,
        CASE WHEN TG_OP = 'DELETE' THEN OLD.name ELSE NEW.name END,
        lower(TG_OP), clock_timestamp(),
        CASE WHEN TG_OP = 'DELETE' THEN OLD.revision ELSE NEW.revision END,
        CASE WHEN current_setting('role') = 'none' THEN session_user::text
             ELSE current_setting('role') END,
        session_user::text,
        nullif(current_setting('application_name'), ''),
        host(inet_client_addr()),
        nullif(current_setting('schedctl.os_user', true), ''),
        signer, what);
    RETURN NULL;
END
$$
"""
_PG_TRIGGERS = (
    "CREATE TRIGGER tr_jobs_revision BEFORE UPDATE ON jobs FOR EACH ROW"
    " EXECUTE FUNCTION schedctl_job_revision()",
    "CREATE TRIGGER tr_jobs_audit AFTER INSERT OR UPDATE OR DELETE ON jobs FOR EACH ROW"
    " EXECUTE FUNCTION schedctl_audit_job()",
)

# SQLite names every column: a migration that adds a definition column to jobs recreates
# these triggers with it.
_SQLITE_COLUMNS = (
    "name", "command", "shell", "schedule", "timezone", "timeout_seconds", "concurrency",
    "catch_up", "jitter_seconds", "retries", "retry_delay_seconds", "env", "workdir",
    "run_as_user", "description", "tags", "enabled", "output_limit_bytes", "retention_seconds",
    "notify", "notify_on", "placement",
)  # fmt: skip
_SQLITE_JSON = {"command", "tags", "notify", "notify_on"}
_SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f000', 'now')"


def _value(row: str, col: str) -> str:
    return f"json({row}.{col})" if col in _SQLITE_JSON else f"{row}.{col}"


def _env_keys(row: str) -> str:
    return f"json((SELECT json_group_array(key) FROM (SELECT key FROM json_each({row}.env) ORDER BY key)))"


def _definition(row: str) -> str:
    pairs = [
        f"'{c}', " + (_env_keys(row) if c == "env" else _value(row, c)) for c in _SQLITE_COLUMNS
    ]
    return "json_object(" + ", ".join(pairs) + ")"


_SQLITE_ENV_DIFF = (
    "json_object("
    "'added', json((SELECT json_group_array(key) FROM (SELECT key FROM json_each(NEW.env)"
    " WHERE key NOT IN (SELECT key FROM json_each(OLD.env)) ORDER BY key))), "
    "'removed', json((SELECT json_group_array(key) FROM (SELECT key FROM json_each(OLD.env)"
    " WHERE key NOT IN (SELECT key FROM json_each(NEW.env)) ORDER BY key))), "
    "'changed', json((SELECT json_group_array(n.key) FROM (SELECT n.key FROM json_each(NEW.env) n"
    " JOIN json_each(OLD.env) o ON o.key = n.key WHERE o.value IS NOT n.value"
    " OR o.type IS NOT n.type ORDER BY n.key) n)))"
)


def _diff() -> str:
    parts = []
    for c in _SQLITE_COLUMNS:
        v = (
            _SQLITE_ENV_DIFF
            if c == "env"
            else f"json_array({_value('OLD', c)}, {_value('NEW', c)})"
        )
        parts.append(f"SELECT '{c}' AS k, {v} AS v WHERE OLD.{c} IS NOT NEW.{c}")
    return "(SELECT json_group_object(k, json(v)) FROM (" + " UNION ALL ".join(parts) + "))"


_SQLITE_INSERT = "INSERT INTO job_audit (job_id, job_name, action, at, revision, changes) VALUES "
# The OS user is filled in by schedctl in the same transaction (a trigger cannot know it):
# a row written by other SQL keeps NULL there.
_SQLITE_TRIGGERS = (
    f"CREATE TRIGGER tr_jobs_audit_insert AFTER INSERT ON jobs BEGIN {_SQLITE_INSERT}"
    f"(NEW.id, NEW.name, 'insert', {_SQLITE_NOW}, NEW.revision, {_definition('NEW')}); END",
    "CREATE TRIGGER tr_jobs_audit_update AFTER UPDATE ON jobs WHEN "
    + " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in _SQLITE_COLUMNS)
    + " BEGIN UPDATE jobs SET revision = OLD.revision + 1"
    " WHERE id = NEW.id AND NEW.revision = OLD.revision; "
    f"{_SQLITE_INSERT}(NEW.id, NEW.name, 'update', {_SQLITE_NOW},"
    f" (SELECT revision FROM jobs WHERE id = NEW.id), {_diff()}); END",
    f"CREATE TRIGGER tr_jobs_audit_delete AFTER DELETE ON jobs BEGIN {_SQLITE_INSERT}"
    f"(OLD.id, OLD.name, 'delete', {_SQLITE_NOW}, OLD.revision, {_definition('OLD')}); END",
)


def upgrade() -> None:
    op.create_table(
        "job_audit",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("job_id", sa.Integer, nullable=True),
        sa.Column("job_name", sa.String(63), nullable=False),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revision", sa.Integer, nullable=True),
        sa.Column("db_role", sa.Text, nullable=True),
        sa.Column("session_role", sa.Text, nullable=True),
        sa.Column("application_name", sa.Text, nullable=True),
        sa.Column("client_addr", sa.Text, nullable=True),
        sa.Column("os_user", sa.Text, nullable=True),
        sa.Column("signer", sa.Text, nullable=True),
        sa.Column("changes", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
        sa.CheckConstraint("action IN ('insert', 'update', 'delete')", name="ck_action"),
    )
    op.create_index("ix_job_audit_job_name_id", "job_audit", ["job_name", "id"])
    op.create_index("ix_job_audit_at", "job_audit", ["at"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_REVISION)
        op.execute(_PG_ENV_KEYS)
        op.execute(_PG_AUDIT)
        for ddl in _PG_TRIGGERS:
            op.execute(ddl)
        # Nobody but the owner writes the log: the trigger function does, as the owner.
        op.execute("REVOKE ALL ON job_audit FROM PUBLIC")
        op.execute("REVOKE ALL ON FUNCTION schedctl_audit_job() FROM PUBLIC")
    else:
        for ddl in _SQLITE_TRIGGERS:
            op.execute(ddl)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER tr_jobs_audit ON jobs")
        op.execute("DROP TRIGGER tr_jobs_revision ON jobs")
        op.execute("DROP FUNCTION schedctl_audit_job()")
        op.execute("DROP FUNCTION schedctl_env_diff(jsonb, jsonb)")
        op.execute("DROP FUNCTION schedctl_job_revision()")
    else:
        for name in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER tr_jobs_audit_{name}")
    op.drop_table("job_audit")
