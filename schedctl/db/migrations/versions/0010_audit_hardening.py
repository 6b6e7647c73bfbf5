"""The change log cannot be diverted, holds no webhook token, and records signature changes.

- The functions that run with their owner's rights (the change log's, and the run counter
  once `db grant` makes it so) name every relation by its schema and search only pg_catalog,
  then pg_temp last: a role that creates a temporary `job_audit` or `run_counts` no longer
  receives the owner's write in place of the real table.
- Notification targets are logged as `show` prints them (`webhook:SCHEME://HOST/***`): a
  webhook's path, query and user:password are its credential. Rows already logged are masked.
- A change of the signature columns alone is recorded (no new revision: they sign a
  definition rather than define it) as `signature: [before, after]`, each `null` (unsigned) or
  the signer and key fingerprint the row claims.

Revision ID: 0010
Revises: 0009
"""

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _migration(file: str) -> ModuleType:
    """Load an earlier migration, whose texts this one extends or restores."""
    path = Path(__file__).with_name(file)
    spec = importlib.util.spec_from_file_location(f"schedctl_migration_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_NOT_DEFINITION = (
    "'{id,created_at,updated_at,revision,signature,signer,signed_at,signing_key}'::text[]"
)
# pg_temp is searched first unless named: named last, nothing there is ever found.
_SEARCH_PATH = "SET search_path = pg_catalog, pg_temp"


def _pg_schema() -> str:
    """Return the quoted schema schedctl's tables live in (the URL may name any)."""
    name = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT n.nspname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n"
                " ON n.oid = c.relnamespace WHERE c.oid = 'jobs'::regclass"
            )
        )
        .scalar_one()
    )
    return '"' + str(name).replace('"', '""') + '"'


# As models.mask_target: scheme and host (no user:password) of a webhook, the rest as ***.
_PG_MASK = """
CREATE OR REPLACE FUNCTION __S__.schedctl_mask_targets(targets jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
SELECT CASE WHEN jsonb_typeof(targets) IS DISTINCT FROM 'array' THEN targets ELSE (
    SELECT coalesce(jsonb_agg(CASE
        WHEN jsonb_typeof(t) <> 'string' OR left(t #>> '{}', 8) <> 'webhook:' THEN t
        WHEN strpos(substr(t #>> '{}', 9), '://') = 0 THEN to_jsonb('webhook:***'::text)
        ELSE to_jsonb('webhook:' || split_part(substr(t #>> '{}', 9), '://', 1) || '://'
            || regexp_replace(split_part(split_part(substr(substr(t #>> '{}', 9),
                   strpos(substr(t #>> '{}', 9), '://') + 3), '/', 1), '?', 1), '^.*@', '')
            || '/***')
        END ORDER BY n), '[]')
    FROM jsonb_array_elements(targets) WITH ORDINALITY AS e(t, n)) END
$$
"""

# SECURITY DEFINER: a role that may write jobs but not the log still records its change, and
# only the owner of the schema can write or delete log rows. Inside it current_user is the
# owner, so the role is the one the session logged in as, or the one it SET ROLE to.
_PG_AUDIT = """
CREATE OR REPLACE FUNCTION __S__.schedctl_audit_job() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER __PATH__ AS $$
DECLARE
    old_row jsonb := CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END;
    new_row jsonb := CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END;
    old_def jsonb := old_row - __ND__;
    new_def jsonb := new_row - __ND__;
    old_sig jsonb;
    new_sig jsonb;
    what jsonb;
    signer text;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        SELECT coalesce(jsonb_object_agg(k, jsonb_build_array(old_def -> k, new_def -> k)), '{}')
        INTO what FROM (SELECT jsonb_object_keys(old_def) UNION SELECT jsonb_object_keys(new_def))
            AS keys(k)
        WHERE old_def -> k IS DISTINCT FROM new_def -> k;
        IF what ? 'env' THEN
            what := jsonb_set(what, '{env}', __S__.schedctl_env_diff(OLD.env, NEW.env));
        END IF;
        IF what ? 'notify' THEN
            what := jsonb_set(what, '{notify}', jsonb_build_array(
                __S__.schedctl_mask_targets(OLD.notify), __S__.schedctl_mask_targets(NEW.notify)));
        END IF;
        IF (OLD.signature, OLD.signer, OLD.signing_key)
           IS DISTINCT FROM (NEW.signature, NEW.signer, NEW.signing_key) THEN
            old_sig := CASE WHEN OLD.signature IS NOT NULL THEN
                jsonb_build_object('signer', OLD.signer, 'key', OLD.signing_key) END;
            new_sig := CASE WHEN NEW.signature IS NOT NULL THEN
                jsonb_build_object('signer', NEW.signer, 'key', NEW.signing_key) END;
            what := what || jsonb_build_object('signature', jsonb_build_array(old_sig, new_sig));
        END IF;
        IF what = '{}' THEN
            RETURN NULL;
        END IF;
        IF OLD.signature IS DISTINCT FROM NEW.signature THEN
            signer := NEW.signer;
        END IF;
    ELSIF TG_OP = 'INSERT' THEN
        what := jsonb_set(new_def, '{env}', __S__.schedctl_env_diff('{}', NEW.env) -> 'added');
        what := jsonb_set(what, '{notify}', __S__.schedctl_mask_targets(NEW.notify));
        signer := NEW.signer;
    ELSE
        what := jsonb_set(old_def, '{env}', __S__.schedctl_env_diff(OLD.env, '{}') -> 'removed');
        what := jsonb_set(what, '{notify}', __S__.schedctl_mask_targets(OLD.notify));
    END IF;
    INSERT INTO __S__.job_audit (job_id, job_name, action, at, revision, db_role, session_role,
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

# `db grant` makes it SECURITY DEFINER; replacing a function resets that, so it is kept.
_PG_COUNT = """
CREATE OR REPLACE FUNCTION __S__.schedctl_count_run() RETURNS trigger LANGUAGE plpgsql
__DEFINER__ AS $$
BEGIN
    INSERT INTO __TABLE__ (job_name, status, total) VALUES (NEW.job_name, NEW.status, 1)
    ON CONFLICT (job_name, status) DO UPDATE SET total = run_counts.total + 1;
    RETURN NULL;
END
$$
"""


def _pg_audit(schema: str) -> str:
    return (
        _PG_AUDIT.replace("__S__", schema)
        .replace("__PATH__", _SEARCH_PATH)
        .replace("__ND__", _NOT_DEFINITION)
    )


def _pg_count(schema: str, restore: bool) -> str:
    """Return the counter's text, qualified (or as 0004 made it), definer if it was one."""
    definer = (
        op.get_bind()
        .execute(
            sa.text("SELECT prosecdef FROM pg_catalog.pg_proc WHERE oid = to_regprocedure(:f)"),
            {"f": schema + ".schedctl_count_run()"},
        )
        .scalar_one()
    )
    if not definer:
        rights = "" if restore else _SEARCH_PATH
    else:
        # Restored as `db grant` leaves it: its schema, then pg_temp.
        rights = "SECURITY DEFINER " + (
            f"SET search_path = {schema}, pg_temp" if restore else _SEARCH_PATH
        )
    table = "run_counts" if restore else f"{schema}.run_counts"
    return (
        _PG_COUNT.replace("__S__", schema)
        .replace("__DEFINER__", rights)
        .replace("__TABLE__", table)
    )


# SQLite: the same masking in plain string functions. `v` is the target, `r` what follows
# "webhook:", `a` what follows "://", `h` the host part (user:password@ included), from which
# rtrim keeps everything up to the last "@".
def _sqlite_masked(array: str) -> str:
    host = "substr(h, length(rtrim(h, replace(h, '@', ''))) + 1)"
    cut = (
        "CASE WHEN instr(a, '/') > 0 AND (instr(a, '?') = 0 OR instr(a, '/') < instr(a, '?'))"
        " THEN substr(a, 1, instr(a, '/') - 1)"
        " WHEN instr(a, '?') > 0 THEN substr(a, 1, instr(a, '?') - 1) ELSE a END"
    )
    masked = (
        "CASE WHEN t <> 'text' OR substr(v, 1, 8) <> 'webhook:' THEN v"
        " WHEN instr(r, '://') = 0 THEN 'webhook:***'"
        f" ELSE 'webhook:' || substr(r, 1, instr(r, '://') - 1) || '://' || {host} || '/***' END"
    )
    rows = (
        f"SELECT k, v, t, r, a, {cut} AS h FROM (SELECT k, v, t, r,"
        " substr(r, instr(r, '://') + 3) AS a FROM (SELECT key AS k, value AS v, type AS t,"
        f" substr(value, 9) AS r FROM json_each({array})))"
    )
    return (
        f"CASE WHEN json_type({array}) IS NOT 'array' THEN json({array}) ELSE"
        f" json((SELECT json_group_array({masked}) FROM ({rows} ORDER BY k))) END"
    )


def _sqlite_signature(row: str) -> str:
    return (
        f"CASE WHEN {row}.signature IS NOT NULL THEN"
        f" json_object('signer', {row}.signer, 'key', {row}.signing_key) END"
    )


_SIGNATURE_CHANGED = (
    "(OLD.signature IS NOT NEW.signature OR OLD.signer IS NOT NEW.signer"
    " OR OLD.signing_key IS NOT NEW.signing_key)"
)


def _sqlite_triggers(s: ModuleType) -> list[str]:
    """Return the insert, update and delete triggers of the log, masking and with signatures."""
    columns: tuple[str, ...] = (*s._BEFORE, "secrets", "secret_env")

    def value(row: str, col: str) -> str:
        if col == "notify":
            return _sqlite_masked(f"{row}.notify")
        if col == "env":
            return str(s._env_keys(row))
        return str(s._value(row, col))

    def definition(row: str) -> str:
        return "json_object(" + ", ".join(f"'{c}', {value(row, c)}" for c in columns) + ")"

    parts = []
    for c in columns:
        v = s._ENV_DIFF if c == "env" else f"json_array({value('OLD', c)}, {value('NEW', c)})"
        parts.append(f"SELECT '{c}' AS k, {v} AS v WHERE OLD.{c} IS NOT NEW.{c}")
    parts.append(
        f"SELECT 'signature' AS k, json_array(json({_sqlite_signature('OLD')}),"
        f" json({_sqlite_signature('NEW')})) AS v WHERE {_SIGNATURE_CHANGED}"
    )
    diff = "(SELECT json_group_object(k, json(v)) FROM (" + " UNION ALL ".join(parts) + "))"
    defined = "(" + " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in columns) + ")"
    insert = (
        "INSERT INTO job_audit (job_id, job_name, action, at, revision, signer, changes) VALUES "
    )
    return [
        f"CREATE TRIGGER tr_jobs_audit_insert AFTER INSERT ON jobs BEGIN {insert}"
        f"(NEW.id, NEW.name, 'insert', {s._NOW}, NEW.revision, NEW.signer, "
        f"{definition('NEW')}); END",
        # Only a definition change takes a new revision; a signature change alone is recorded.
        f"CREATE TRIGGER tr_jobs_audit_update AFTER UPDATE ON jobs WHEN {defined}"
        f" OR {_SIGNATURE_CHANGED} BEGIN UPDATE jobs SET revision = OLD.revision + 1"
        f" WHERE id = NEW.id AND NEW.revision = OLD.revision AND {defined}; "
        f"{insert}(NEW.id, NEW.name, 'update', {s._NOW},"
        " (SELECT revision FROM jobs WHERE id = NEW.id),"
        " CASE WHEN NEW.signature IS NOT OLD.signature THEN NEW.signer END,"
        f" {diff}); END",
        f"CREATE TRIGGER tr_jobs_audit_delete AFTER DELETE ON jobs BEGIN {insert}"
        f"(OLD.id, OLD.name, 'delete', {s._NOW}, OLD.revision, NULL, {definition('OLD')}); END",
    ]


def _mask(target: Any) -> Any:
    """Return a logged notification target as models.mask_target shows it (as of 0010)."""
    if not isinstance(target, str):
        return target
    kind, _, rest = target.partition(":")
    if kind != "webhook":
        return target
    scheme, sep, after = rest.partition("://")
    host = after.split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1]
    return f"webhook:{scheme}{sep}{host}/***" if sep else "webhook:***"


def _masked(targets: Any) -> Any:
    return [_mask(t) for t in targets] if isinstance(targets, list) else targets


def _mask_logged_targets() -> None:
    """Mask the webhook targets of change records written before this migration."""
    bind = op.get_bind()
    pg = bind.dialect.name == "postgresql"
    found = bind.execute(
        sa.text(
            "SELECT id, action, changes" + ("::text" if pg else "") + " FROM job_audit"
            " WHERE changes" + ("::text" if pg else "") + " LIKE '%webhook:%'"
        )
    ).all()
    for row_id, action, text in found:
        changes = json.loads(text)
        notify = changes.get("notify")
        if notify is None:
            continue
        if action == "update" and isinstance(notify, list) and len(notify) == 2:
            changes["notify"] = [_masked(notify[0]), _masked(notify[1])]
        else:
            changes["notify"] = _masked(notify)
        bind.execute(
            sa.text(
                "UPDATE job_audit SET changes = "
                + ("CAST(:c AS jsonb)" if pg else ":c")
                + " WHERE id = :id"
            ),
            {"c": json.dumps(changes), "id": row_id},
        )


def _drop_sqlite_triggers() -> None:
    for name in ("insert", "update", "delete"):
        op.execute(f"DROP TRIGGER IF EXISTS tr_jobs_audit_{name}")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        s = _pg_schema()
        op.execute(_PG_MASK.replace("__S__", s))
        op.execute(_pg_audit(s))
        op.execute(_pg_count(s, restore=False))
        op.execute(f"REVOKE ALL ON FUNCTION {s}.schedctl_audit_job() FROM PUBLIC")
    else:
        _drop_sqlite_triggers()
        for ddl in _sqlite_triggers(_migration("0008_secrets.py")):
            op.execute(ddl)
    _mask_logged_targets()


def downgrade() -> None:
    # Records masked stay masked: the tokens are gone.
    signing = _migration("0009_signing.py")
    if op.get_bind().dialect.name == "postgresql":
        s = _pg_schema()
        for text in signing._pg_functions(signing._change_log(), signing._NOT_DEFINITION):
            op.execute(text)
        op.execute(_pg_count(s, restore=True))
        op.execute(f"DROP FUNCTION {s}.schedctl_mask_targets(jsonb)")
        return
    _drop_sqlite_triggers()
    secrets = signing._secrets()
    for ddl in signing._sqlite_triggers(secrets):
        op.execute(ddl)
    op.execute(secrets._sqlite_triggers(signing._sqlite_columns(secrets))[2])
