"""Alembic migrations, on SQLAlchemy: the only place besides tables.py that loads it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import Connection, Engine

from schedctl.config import DatabaseURL
from schedctl.db.connector import PG_CONNECT_ARGS, SQLITE_BUSY, create_private, pg_params
from schedctl.db.dberrors import INSUFFICIENT_PRIVILEGE, refusal, translate
from schedctl.db.version import HEAD, SchemaStatus, require_current
from schedctl.errors import ConfigError, SchemaError, ValidationError

MIGRATIONS = Path(__file__).parent / "migrations"
# Serialises concurrent `db upgrade` runs from several hosts (PostgreSQL advisory lock key).
UPGRADE_LOCK_KEY = 0x5C4ED0

__all__ = [
    "HEAD",
    "GrantOutcome",
    "SchemaStatus",
    "current_revision",
    "grant",
    "make_engine",
    "status",
    "upgrade",
]


def make_engine(url: DatabaseURL) -> Engine:
    """Create an engine for `url` with the session settings schedctl relies on."""
    if url.backend == "sqlite":
        create_private(url)
        engine = sa.create_engine(sa.engine.URL.create("sqlite", database=str(url.sqlite_path)))
        event.listen(engine, "connect", _sqlite_pragmas)
        # sqlite3 would run DDL outside any transaction and take the write lock only at the
        # first write: a schema then half made, or made twice by two first users at once.
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    # Every libpq keyword as libpq parsed it (config.py), not a string for SQLAlchemy to parse
    # again: its rules read some passwords differently.
    params = pg_params(url, "schedctl db")
    keywords = {k: v for k, v in params.items() if k not in PG_CONNECT_ARGS}
    return sa.create_engine(
        sa.engine.URL.create("postgresql+psycopg", query=keywords),
        connect_args={k: params[k] for k in PG_CONNECT_ARGS},
    )


# First users of a fresh data directory all upgrade at once and take the write lock in turn;
# the last waits for every migration and check before it, which a loaded host stretches past
# the everyday commands' busy wait.
SQLITE_UPGRADE_BUSY = 12 * SQLITE_BUSY


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={int(SQLITE_UPGRADE_BUSY * 1000)}")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.close()
    dbapi_conn.isolation_level = None  # transactions are begun by _sqlite_begin only


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def current_revision(conn: Connection) -> str | None:
    """Return the stamped Alembic revision, or None when the schema was never created."""
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def status(conn: Connection) -> SchemaStatus:
    """Return the schema status seen through `conn`."""
    return SchemaStatus(current_revision(conn), HEAD)


def upgrade(url: DatabaseURL) -> tuple[str | None, str]:
    """Migrate the database to HEAD; return (before, after) revisions."""
    from alembic import command
    from alembic.config import Config

    engine = make_engine(url)
    before: str | None = None
    try:
        # One transaction for every migration and the revision stamp: a failure (a full disk)
        # leaves the database as it was, and a concurrent upgrade waits, then finds it done.
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": UPGRADE_LOCK_KEY})
            before = current_revision(conn)
            if conn.dialect.name == "sqlite" and before is None:
                _clear_half_made(conn, url)
            if before is not None and before > HEAD:
                require_current(SchemaStatus(before, HEAD))
            cfg = Config()
            cfg.set_main_option("script_location", str(MIGRATIONS))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            after = current_revision(conn)
    except (exc.OperationalError, exc.InterfaceError) as e:
        if url.backend == "sqlite" and _half_applied(str(e.orig)):
            raise _half_upgraded(url, before, e) from e
        raise translate(e, url) from e
    except exc.DBAPIError as e:
        found = refusal(getattr(e.orig, "sqlstate", None), str(e.orig), url)
        if found is None:
            raise
        raise found from e
    finally:
        engine.dispose()
    return before, after or HEAD


def _clear_half_made(conn: Connection, url: DatabaseURL) -> None:
    """Drop what an interrupted first creation left, before creating the schema again.

    Earlier versions created the SQLite schema one statement at a time, so a full disk or a
    concurrent first use could leave tables without a revision. They can hold nothing of
    value: every command refuses a database without a revision.
    """
    tables = [
        str(name)
        for (name,) in conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    filled = [t for t in tables if conn.exec_driver_sql(f'SELECT 1 FROM "{t}" LIMIT 1').first()]
    if filled:
        raise SchemaError(
            f"the SQLite database {url.sqlite_path} has tables ({', '.join(sorted(filled))}) "
            f"with rows but no schedctl schema revision, so it is not schedctl's or was "
            f"changed by hand: move it away (`mv {url.sqlite_path} {url.sqlite_path}.old`) "
            f"and run `schedctl db upgrade` to start an empty one"
        )
    for name in tables:
        conn.exec_driver_sql(f'DROP TABLE "{name}"')


def _half_upgraded(url: DatabaseURL, before: str | None, e: exc.DBAPIError) -> SchemaError:
    """Say what to do with a schema an earlier version left part-way into a migration."""
    return SchemaError(
        f"the SQLite database {url.sqlite_path} is at schema revision {before} but already "
        f"holds part of a later one ({_first(e)}): an upgrade by an earlier schedctl was "
        f"interrupted; restore the file from a backup taken before that upgrade, or move it "
        f"away (`mv {url.sqlite_path} {url.sqlite_path}.old`) to start an empty one, then run "
        f"`schedctl db upgrade`"
    )


def _first(e: exc.DBAPIError) -> str:
    return (str(e.orig).splitlines() or [type(e.orig).__name__])[0]


def _half_applied(message: str) -> bool:
    """Return whether a migration failed on something it creates being there already."""
    return "already exists" in message or "duplicate column name" in message


# Everything `db grant` sets, as text: equal before and after means it changed nothing.
_GRANTS_STATE = """
SELECT c.relname, coalesce((SELECT string_agg(x, ',' ORDER BY x) FROM unnest(c.relacl::text[]) x),
  ''), c.relrowsecurity,
  coalesce((SELECT string_agg(a.attname || '=' || x, ',' ORDER BY a.attnum, x)
    FROM pg_attribute a, unnest(a.attacl::text[]) x WHERE a.attrelid = c.oid), ''),
  coalesce((SELECT string_agg(p.polname || ':' || p.polcmd::text
      || ':' || coalesce(pg_get_expr(p.polqual, p.polrelid), '')
      || ':' || coalesce(pg_get_expr(p.polwithcheck, p.polrelid), ''), ',' ORDER BY p.polname)
    FROM pg_policy p WHERE p.polrelid = c.oid), '')
FROM pg_class c WHERE c.relnamespace = to_regnamespace(:schema) ORDER BY c.relname
"""
_FUNCTIONS_STATE = """
SELECT p.proname, p.prosecdef, coalesce(p.proconfig::text, '') FROM pg_proc p
WHERE p.pronamespace = to_regnamespace(:schema) ORDER BY p.proname
"""


# The kind a role was granted before, told by what only `db grant` gives each kind, directly
# (not through another role): drawing job ids is an admin's, drawing run ids a runner's, and
# reading jobs without either a reader's. Privileges added by hand on tables do not count.
_KIND_NOW = """
SELECT r.rolname, CASE
  WHEN bool_or(c.relname = 'jobs_id_seq' AND a.privilege_type = 'USAGE') THEN 'admin'
  WHEN bool_or(c.relname = 'runs_id_seq' AND a.privilege_type = 'USAGE') THEN 'runner'
  WHEN bool_or(c.relname = 'jobs' AND a.privilege_type = 'SELECT') THEN 'reader' END
FROM pg_roles r
JOIN pg_class c ON c.relnamespace = to_regnamespace(:schema)
  AND c.relname IN ('jobs', 'jobs_id_seq', 'runs_id_seq')
CROSS JOIN LATERAL aclexplode(c.relacl) a
WHERE a.grantee = r.oid AND r.rolname = ANY(:n) GROUP BY r.rolname
"""


class GrantOutcome(NamedTuple):
    """What `db grant` did: the SQL, the roles it created, whether anything changed, and the
    roles that changed kind (role -> the kind it had)."""

    sql: list[str]
    created: tuple[str, ...]
    changed: bool
    rekinded: dict[str, str]


def grant(
    url: DatabaseURL, roles: dict[str, str], dry_run: bool, rekind: bool = False
) -> GrantOutcome:
    """Give each role (by kind: admin, runner, reader) exactly its privileges, in one transaction.

    A role granted another kind before is refused unless `rekind`.
    """
    from schedctl.db.grants import Grant, statements

    if url.backend != "postgresql":
        raise ConfigError(
            "`db grant` needs PostgreSQL: SQLite has no database roles (who may use the "
            f"file {url.sqlite_path} is up to its permissions)"
        )
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": UPGRADE_LOCK_KEY})
            require_current(status(conn))
            schema, owner = conn.execute(
                sa.text(
                    "SELECT n.nspname, pg_get_userbyid(c.relowner) FROM pg_class c"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE c.oid = 'jobs'::regclass"
                )
            ).one()
            found = {
                str(name): bool(superuser)
                for name, superuser in conn.execute(
                    sa.text("SELECT rolname, rolsuper FROM pg_roles WHERE rolname = ANY(:n)"),
                    {"n": list(roles.values())},
                )
            }
            for kind, role in roles.items():
                if role == owner or found.get(role):
                    raise ValidationError(
                        f"the role '{role}' owns schedctl's tables or is a superuser, so it "
                        f"may do everything already: give --{kind} another role"
                    )
            had = {
                str(name): str(kind)
                for name, kind in conn.execute(
                    sa.text(_KIND_NOW), {"schema": str(schema), "n": list(roles.values())}
                )
                if kind is not None
            }
            rekinded = {r: had[r] for k, r in roles.items() if had.get(r, k) != k}
            if rekinded and not rekind:
                role = next(iter(rekinded))
                kind = next(k for k, r in roles.items() if r == role)
                raise ValidationError(
                    f"the role '{role}' is granted as {rekinded[role]}, and a role is taken "
                    f"for one kind only: give --{kind} another role, or add --rekind to make "
                    f"it {_article(kind)} {kind} (it loses what {_article(rekinded[role])} "
                    f"{rekinded[role]} may do)"
                )
            plan = Grant(roles, str(schema), tuple(r for r in roles.values() if r not in found))
            sql = statements(plan)
            if dry_run:
                return GrantOutcome(sql, plan.create, False, rekinded)
            before = _grants_state(conn, str(schema))
            for statement in sql:
                conn.exec_driver_sql(statement)
            changed = bool(plan.create) or _grants_state(conn, str(schema)) != before
    except exc.OperationalError as e:
        raise translate(e, url) from e
    except exc.DBAPIError as e:
        if getattr(e.orig, "sqlstate", None) == INSUFFICIENT_PRIVILEGE:
            raise ConfigError(
                f"the database refused `db grant` to the URL's role ({_first(e)}): run it as "
                f"the owner of schedctl's tables (who ran `schedctl db upgrade`) or a "
                f"superuser; creating roles also takes CREATEROLE"
            ) from e
        found_error = refusal(getattr(e.orig, "sqlstate", None), str(e.orig), url)
        if found_error is None:
            raise
        raise found_error from e
    finally:
        engine.dispose()
    return GrantOutcome(sql, plan.create, changed, rekinded)


def _article(kind: str) -> str:
    return "an" if kind[0] in "aeiou" else "a"


def _grants_state(conn: Connection, schema: str) -> list[tuple[Any, ...]]:
    tables = [tuple(r) for r in conn.execute(sa.text(_GRANTS_STATE), {"schema": schema})]
    functions = [tuple(r) for r in conn.execute(sa.text(_FUNCTIONS_STATE), {"schema": schema})]
    return tables + functions
