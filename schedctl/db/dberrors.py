"""Turn driver errors into one-line schedctl errors; no SQLAlchemy, so the run path can use it."""

from __future__ import annotations

import os
import re

from schedctl import redact
from schedctl.config import DatabaseURL
from schedctl.errors import (
    ConfigError,
    DatabaseAuthError,
    DatabaseUnavailableError,
    PrivilegeError,
    SchedctlError,
)


def _first_line(text: str, url: DatabaseURL) -> str:
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "unknown error")
    redact.remember(url.password)
    line = redact.scrub(line)
    return line.removeprefix("connection failed: ").removeprefix("FATAL:  ")


# A server that refuses a connection because it is full (SQLSTATE 53300: max_connections, the
# slots reserved for superusers or pg_use_reserved_connections, a role's or database's
# connection limit) or not yet open (57P03: starting up, in recovery, shutting down). libpq
# gives no SQLSTATE for an error at connection time, only the message; these are the
# server's (English) texts of those errors, and PgBouncer's for a full pool.
BUSY_MARKERS = (
    "too many clients already",
    "remaining connection slots are reserved",
    "too many connections for role",
    "too many connections for database",
    "the database system is starting up",
    "the database system is not yet accepting connections",
    "the database system is not accepting connections",
    "the database system is in recovery mode",
    "the database system is shutting down",
    "no more connections allowed",
)


def refused_as_busy(error: Exception) -> str | None:
    """Return the server's refusal line if it refused the connection for now, else None."""
    for line in str(error).splitlines():
        if any(marker in line.lower() for marker in BUSY_MARKERS):
            return line.strip().split("FATAL:", 1)[-1].strip()
    return None


# A server that is not open for connections: what to do about each state (57P03).
_NOT_OPEN = (
    (
        "shutting down",
        "the server is shutting down: start it again once it has stopped (a smart shutdown "
        "waits for every open session to end), or check its state with pg_isready",
    ),
    (
        "starting up",
        "the server is starting up: wait for it, or check its state with pg_isready",
    ),
    (
        "not yet accepting connections",
        "the server is starting up (replaying its log): wait for it, or check its state with "
        "pg_isready",
    ),
    (
        "recovery mode",
        "the server is recovering after a crash: wait for it, or check its state with "
        "pg_isready and its log",
    ),
    (
        "not accepting connections",
        "the server does not accept connections (a standby with hot_standby = off): point the "
        "URL at the primary",
    ),
)


def busy_error(url: DatabaseURL, refusals: int, seconds: float, line: str) -> SchedctlError:
    """Return the error for a server that kept refusing connections for the whole budget."""
    redact.remember(url.password)
    said = (
        f"the database at {url} refused {refusals} connection"
        f"{'' if refusals == 1 else 's'} over {seconds:.0f} s ({redact.scrub(line)})"
    )
    lower = line.lower()
    fix = next((fix for state, fix in _NOT_OPEN if state in lower), None)
    if fix is not None:
        return DatabaseUnavailableError(f"{said}; {fix}")
    return DatabaseUnavailableError(
        f"{said}; it has no connection slot free: raise its max_connections, or put a pooler "
        f"such as PgBouncer (pool_mode = session) in front of it, or wait longer with "
        f"$SCHEDCTL_CONNECT_RETRY (seconds)"
    )


def translate(error: Exception, url: DatabaseURL) -> SchedctlError:
    """Map a driver (or SQLAlchemy-wrapped) connection error to an error with the fix in it."""
    orig = getattr(error, "orig", None) or error
    message = _first_line(str(orig), url)
    lower = message.lower()
    where = str(url)
    if url.backend == "sqlite":
        if "locked" in lower or "busy" in lower:
            return DatabaseUnavailableError(
                f"the SQLite database {url.sqlite_path} is busy ({message}); try again"
            )
        if "disk is full" in lower:
            return DatabaseUnavailableError(
                f"cannot use the SQLite database {url.sqlite_path}: {message}; free space on "
                f"its file system, then try again"
            )
        return DatabaseUnavailableError(
            f"cannot use the SQLite database {url.sqlite_path}: {message}; check that the file "
            f"and its directory are readable and writable"
        )
    if "password authentication failed" in lower or "no password supplied" in lower:
        return DatabaseAuthError(
            f"the database at {where} refused the credentials ({message}); fix the user or "
            f"password in --db / SCHEDCTL_DATABASE_URL"
        )
    if "unsupported startup parameter" in lower:
        # PgBouncer refuses libpq's `options`, through which schedctl sets the session's
        # keepalives and time zone; the generic "cannot reach" hint would send people astray.
        return ConfigError(
            f"the server at {where} refused a connection setting ({message}): a connection "
            f"pooler such as PgBouncer is in between; add `ignore_startup_parameters = options` "
            f"to its [pgbouncer] section and use pool_mode = session, or connect to PostgreSQL "
            f"directly"
        )
    if "statement timeout" in lower or "lock timeout" in lower:
        # The server is up and cancelled the statement: a setting is too short, not an outage.
        return DatabaseUnavailableError(
            f"the database at {where} cancelled a statement ({message}); raise the "
            f"statement_timeout / lock_timeout set in the URL's options or for the role"
        )
    if "does not exist" in lower and "database" in lower:
        return ConfigError(
            f"{message} at {where}; create it (createdb) or fix the database name in the URL"
        )
    servers = tried_servers(str(orig))
    attrs = url.libpq_params().get("target_session_attrs")
    if attrs in ("read-only", "standby") and any(map(_writable, servers.values())):
        # The URL asks for a standby and got a primary; schedctl writes to every session.
        return ConfigError(
            f"the database URL {where} asks for a read-only server "
            f"(target_session_attrs={attrs}), but schedctl needs one that accepts writes: use "
            f"target_session_attrs=read-write"
        )
    if "invalid target_session_attrs value" in lower:
        return ConfigError(
            f"the database URL {where} has a target_session_attrs value this libpq does not "
            f"know ({message}): use target_session_attrs=read-write"
        )
    if any(_read_only(why) for why in servers.values()):
        # Every server answered or failed, none is a primary: a failover under way (the
        # primary down, its standby not promoted yet), or a URL that lists only standbys.
        tried = "; ".join(
            f"{name}: {'read-only (a standby)' if _read_only(why) else why}"
            for name, why in servers.items()
        )
        return DatabaseUnavailableError(
            f"no server of the database URL {where} accepts writes ({tried}): if a failover is "
            f"under way, promote a standby and try again; otherwise add the primary to the URL"
        )
    if len(servers) > 1:
        tried = "; ".join(f"{name}: {why}" for name, why in servers.items())
        return DatabaseUnavailableError(
            f"cannot reach any server of the database URL {where} ({tried}); check that "
            f"PostgreSQL is running and accepts connections there (`pg_isready`), and that the "
            f"URL is right (--db, $SCHEDCTL_DATABASE_URL or the configuration file)"
        )
    return DatabaseUnavailableError(
        f"cannot reach the database at {where}: {message}; check that PostgreSQL is running "
        f"and accepts connections there (`pg_isready`), and that the URL is right (--db, "
        f"$SCHEDCTL_DATABASE_URL or the configuration file)"
    )


# libpq's line per server it tried (psycopg repeats them): `connection to server at "H", port
# P failed: WHY` or `connection to server on socket "PATH" failed: WHY`.
_TRIED = re.compile(
    r'connection to server (?:at "(?P<host>[^"]*)"(?: \([^)]*\))?, port (?P<port>\d+)'
    r'|on socket "(?P<socket>[^"]*)") failed: (?P<why>[^\n]*)'
)


def tried_servers(message: str) -> dict[str, str]:
    """Return each server libpq says it tried (`host:port` or the socket) and why it failed."""
    found: dict[str, str] = {}
    for m in _TRIED.finditer(message):
        name = m["socket"] or f"{m['host']}:{m['port']}"
        found[name] = redact.scrub(m["why"].strip()).removeprefix("FATAL:  ")
    return found


def _writable(why: str) -> bool:
    # What libpq says of a primary that target_session_attrs=read-only or standby passes over.
    return why in ("session is not read-only", "server is not in hot standby mode")


def _read_only(why: str) -> bool:
    # What libpq says of a server target_session_attrs passes over (read-write, primary).
    return why in ("session is read-only", "server is in hot standby mode")


READ_ONLY_TRANSACTION = "25006"
INSUFFICIENT_PRIVILEGE = "42501"
INVALID_SCHEMA_NAME = "3F000"


def refusal(
    sqlstate: str | None, message: str, url: DatabaseURL, statement: str | None = None
) -> SchedctlError | None:
    """Return the error for a statement the server will not run for this session, if it is one.

    A read-only server (a hot standby, default_transaction_read_only), a role without the
    right grants and a search_path naming no schema are the deployment's doing, not
    schedctl's: no internal error for them.
    """
    line = _first_line(message, url)
    if sqlstate == READ_ONLY_TRANSACTION:
        return DatabaseUnavailableError(
            f"the database at {url} is read-only ({line}): point the URL at the primary server "
            f"(not a standby) and try again"
        )
    if sqlstate == INVALID_SCHEMA_NAME:
        return ConfigError(
            f"the database at {url} has no schema to create schedctl's tables in ({line}): "
            f"create the schema the URL's search_path names, or fix the search_path in its "
            f"options"
        )
    if sqlstate == INSUFFICIENT_PRIVILEGE:
        return PrivilegeError(_privilege_line(line, url, statement))
    return None


_FIXES = {
    "admin": "run this as an admin role (schedctl db grant --admin ROLE)",
    "runner": "run this as a runner role, as hosts do (schedctl db grant --runner ROLE)",
    "reader": "run this as a reader or admin role (schedctl db grant --reader ROLE)",
}


def _privilege_line(line: str, url: DatabaseURL, statement: str | None) -> str:
    """Name the role, what it may not do and the role kind that may."""
    import getpass

    from schedctl.db.grants import needed_role

    role = url.libpq_params().get("user") or os.environ.get("PGUSER") or getpass.getuser()
    if statement is None:
        what, fix = (
            "change the schema",
            "run `schedctl db upgrade` as the owner of schedctl's tables or a superuser",
        )
    else:
        what, kind = needed_role(statement)
        fix = _FIXES[kind]
    return f"the database role '{role}' may not {what} ({line}): {fix}"
