"""Connections to schedctl's database: a libpq session (PostgreSQL) or sqlite3, one protocol.

Neither SQLAlchemy nor psycopg: importing either costs more than a whole `schedctl run`
(README, "Where schedctl does not use a chosen library"). Both connections run in autocommit,
so each statement is its own transaction unless `transaction()` groups several.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from schedctl.config import DatabaseURL, connect_retry_seconds
from schedctl.db import queries
from schedctl.db.dberrors import busy_error, refusal, refused_as_busy, translate
from schedctl.errors import ConfigError, DatabaseUnavailableError, TransactionPoolerError
from schedctl.models import MIN_HEARTBEAT_REPLY_SECONDS

if TYPE_CHECKING:
    pass

# Data sent and not acknowledged for this long breaks the connection (TCP_USER_TIMEOUT, in ms):
# on a black-holed network a blocking call then fails as soon as a heartbeat would have counted
# the session lost, instead of after the kernel's retransmissions (~15 minutes), during which
# the supervisor would neither stream output nor enforce timeouts nor forward signals.
TCP_USER_TIMEOUT_MS = int(MIN_HEARTBEAT_REPLY_SECONDS * 1000)
PG_CONNECT_ARGS: dict[str, Any] = {
    "connect_timeout": 5,
    # Client side: notice a dead server quickly.
    "keepalives": 1,
    "keepalives_idle": 20,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
}
# Server side: end the session of a host that died (and free its advisory lock) within a
# minute, instead of the kernel default of two hours; the same bound on unacknowledged data.
# Sessions in UTC: timestamps arrive already in the zone schedctl computes in. Appended to the
# URL's own `options`. Warnings and notices not sent at all: schedctl never shows them, and
# libpq prints those that arrive while it connects (a server's goodbye when stopped
# immediately) on stderr itself, before the notice processor can be set.
PG_SESSION_OPTIONS = (
    "-c tcp_keepalives_idle=20 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3"
    f" -c tcp_user_timeout={TCP_USER_TIMEOUT_MS} -c TimeZone=UTC -c client_min_messages=error"
)
# A server refusing connections because it is full (or starting up) is tried again, after a
# random wait up to a bound that doubles from the first to the cap ("full jitter": hosts
# refused together spread out instead of returning together), for this long in all. A slot's
# claim is still worth making seconds late; a person at a terminal waits less.
CONNECT_RETRY_RUN = 30.0
CONNECT_RETRY = 5.0
MIN_CONNECT_TIMEOUT = 2  # libpq's: a smaller connect_timeout counts as 2 s
RETRY_FIRST = 0.1
RETRY_CAP = 5.0
# `run` waits long for the write lock: hundreds of runs starting in the same second on one host
# queue for it, and giving up would mean a slot not run. Other commands give up sooner.
SQLITE_BUSY_RUN = 60.0
SQLITE_BUSY = 10.0
SQLITE_TS = "%Y-%m-%d %H:%M:%S.%f"  # the text form of SQLite timestamps (SQLAlchemy's too)


class Rows(NamedTuple):
    """What a statement returned: column names, rows, and how many rows it touched."""

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    rowcount: int

    def one(self) -> tuple[Any, ...] | None:
        """Return the first row, or None."""
        return self.rows[0] if self.rows else None

    def dicts(self) -> list[dict[str, Any]]:
        """Return the rows as column -> value mappings."""
        return [dict(zip(self.columns, r, strict=True)) for r in self.rows]


class RefusedError(Exception):
    """The database refused the values (a constraint, a data error): retrying cannot help."""

    def __init__(self, message: str, unique: bool = False, missing_parent: bool = False) -> None:
        super().__init__(message)
        self.unique = unique  # a unique constraint: the row exists already
        self.missing_parent = missing_parent  # a foreign key: the row it names is gone


class Connector(Protocol):
    """A session on schedctl's database."""

    backend: str
    url: DatabaseURL

    def run(self, name: str, params: Mapping[str, Any] | None = None) -> Rows:
        """Execute the named statement of queries.sql; raise RefusedError or a schedctl error."""
        ...

    def transaction(self) -> Any:
        """Return a context manager that runs its statements as one transaction."""
        ...

    def close(self) -> None:
        """Close the session (which also drops any advisory lock it holds)."""
        ...


def _first_line(text: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "refused")


def backoff(refusals: int) -> float:
    """Return a random wait before the next try: uniform up to a bound doubling to the cap."""
    bound = min(RETRY_CAP, RETRY_FIRST * 2.0 ** min(refusals, 16))
    # os.urandom, not random: `run` is a hot path and random's import is not free.
    return float(bound * int.from_bytes(os.urandom(4), "big") / 0xFFFFFFFF)


def attempt_timeout(params: Mapping[str, str], deadline: float) -> int:
    """Return a connect_timeout that ends an attempt on every listed server by `deadline`.

    libpq counts it per server, in whole seconds, and takes anything under 2 as 2.
    """
    servers = max(1, len(params.get("host", "").split(",")))
    left = int((deadline - time.monotonic()) / servers)
    return max(MIN_CONNECT_TIMEOUT, min(int(PG_CONNECT_ARGS["connect_timeout"]), left))


def pg_params(url: DatabaseURL, application_name: str) -> dict[str, str]:
    """Return the libpq keywords for a session: the URL's, schedctl's on top, options merged."""
    params = {**url.libpq_params(), **{k: str(v) for k, v in PG_CONNECT_ARGS.items()}}
    own = url.libpq_params().get("options", "").strip()
    # The URL's own options (a search_path, say) stay; schedctl's come after, so they win.
    params["options"] = f"{own} {PG_SESSION_OPTIONS}".strip()
    params["application_name"] = application_name
    params["client_encoding"] = "UTF8"
    if len(params.get("host", "").split(",")) > 1 and "target_session_attrs" not in params:
        # Several servers, as a primary and its standbys are listed: libpq takes the first that
        # answers, and every command writes (a claim, a flushed result, a reconciled row).
        # A standby would refuse each write; libpq skips it instead, and after a failover
        # finds the promoted one. The URL's own target_session_attrs wins.
        params["target_session_attrs"] = "read-write"
    if url.skip_passfile:
        # A path that cannot exist (/dev/null is no directory): libpq then reads no password
        # file, silently, instead of refusing the one it found and printing that itself.
        params["passfile"] = "/dev/null/refused-passfile"
    return params


class PgConnector:
    """An autocommit libpq session; the run's advisory locks live on it too."""

    backend = "postgresql"

    def __init__(
        self,
        url: DatabaseURL,
        application_name: str = "schedctl",
        retry_seconds: float | None = None,
    ) -> None:
        from schedctl.db import libpq

        if retry_seconds is None:
            retry_seconds = connect_retry_seconds(os.environ, CONNECT_RETRY)
        self.url = url
        self.params = pg_params(url, application_name)
        # The server's own pid for this session (pg_backend_pid()); libpq's can be a pooler's.
        self.server_pid: int | None = None
        self.refusals = 0  # connections the server refused as full before this one
        tries, last = 0, ""
        started = time.monotonic()
        deadline = started + retry_seconds
        while True:
            if retry_seconds:
                # The budget is a deadline the last attempt keeps too: no attempt may wait
                # for an answer past it.
                self.params["connect_timeout"] = str(attempt_timeout(self.params, deadline))
            try:
                self.session = libpq.Connection(self.params, expand_dbname=False)
                return
            except libpq.LibpqMissingError as e:
                raise ConfigError(e.advice()) from None
            except libpq.PgError as e:
                line = refused_as_busy(e)
                # A server too busy to answer within connect_timeout is tried again too: in a
                # storm that is the same crowd. An unreachable host costs the budget, no more.
                slow = line is None and "timeout expired" in str(e)
                if line is None and not slow:
                    raise translate(e, url) from None
                if line is not None:
                    self.refusals += 1
                    last = line
                tries += 1
                # A server that let an attempt time out gets another only with time left for
                # a whole one (libpq's shortest connect_timeout); one that refused at once is
                # tried up to the deadline.
                left = deadline - time.monotonic() - (MIN_CONNECT_TIMEOUT if slow else 0)
                if left <= 0:
                    if not self.refusals:
                        raise translate(e, url) from None
                    spent = time.monotonic() - started
                    raise busy_error(url, self.refusals, spent, last) from None
                time.sleep(min(left, backoff(tries)))

    def run(
        self, name: str, params: Mapping[str, Any] | None = None, timeout: float | None = None
    ) -> Rows:
        """Execute a named statement; a lost session becomes a one-line schedctl error."""
        from schedctl.db import libpq

        q = queries.get(name, "postgresql")
        given = params or {}
        try:
            res = self.session.execute(q.sql, [given[p] for p in q.params], timeout=timeout)
        except libpq.PgOperationalError as e:
            raise translate(e, self.url) from e
        except libpq.PgError as e:
            # Data exceptions and constraint violations: the values are at fault, not the
            # session, so trying again later would fail the same way.
            if e.sqlstate is not None and e.sqlstate[:2] in ("22", "23"):
                raise RefusedError(
                    _first_line(str(e)),
                    unique=e.sqlstate == "23505",
                    missing_parent=e.sqlstate == "23503",
                ) from e
            found = refusal(e.sqlstate, str(e), self.url, q.sql)
            if found is not None:
                raise found from e
            raise
        return Rows(res.columns, res.rows, res.rowcount)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Run the block's statements as one transaction."""
        self._plain("BEGIN")
        try:
            yield
        except BaseException:
            if not self.session.closed:
                self._plain("ROLLBACK")
            raise
        self._plain("COMMIT")

    def _plain(self, sql: str) -> None:
        from schedctl.db import libpq

        try:
            self.session.execute(sql)
        except libpq.PgOperationalError as e:
            raise translate(e, self.url) from e

    def backend_pid(self) -> int | None:
        """Return this session's server backend pid (the server's, not a pooler's)."""
        return self.session.backend_pid if self.server_pid is None else self.server_pid

    @property
    def pooled_pid(self) -> int | None:
        """Return the server backend pid when a pooler stands between, else None."""
        if self.server_pid is None or self.server_pid == self.session.backend_pid:
            return None
        return self.server_pid

    def require_own_session(self) -> None:
        """Refuse a pooler that may hand this session's server backend to other clients.

        libpq's backend pid comes from the server's BackendKeyData, which PgBouncer replaces
        with its own; when it equals pg_backend_pid() nothing is in between and nothing more
        is sent. Through a pooler, a session pool keeps one backend ours for the whole
        connection: two statements in a row run on it, and another client never gets it. A
        transaction pool hands an idle backend to the next statement of any client: the one
        used last (PgBouncer's default), which the other client's statement then gets, or the
        one idle longest (server_round_robin), which our second statement gets when there are
        several, and the other client when ours is the only one.
        """
        if self.server_pid is None:
            self.server_pid = self._server_pid(self)
        if self.pooled_pid is None:
            return
        if any(self._server_pid(self) != self.server_pid for _ in range(2)):
            raise TransactionPoolerError()
        other = PgConnector(self.url, "schedctl run (pool check)")
        try:
            theirs = self._server_pid(other)
        finally:
            other.close()
        if theirs == self.server_pid:
            raise TransactionPoolerError()

    @staticmethod
    def _server_pid(conn: PgConnector) -> int:
        row = conn.run("backend_pid").one()
        assert row is not None
        return int(row[0])

    def close(self) -> None:
        """End the session."""
        self.session.close()


def sqlite_ts(value: datetime) -> str:
    """Return an aware datetime as SQLite stores instants: naive UTC text, sortable."""
    return value.astimezone(UTC).strftime(SQLITE_TS)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return sqlite_ts(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _sqlite_value(value: Any) -> Any:
    # Lists travel as JSON text, read back with json_each.
    return json.dumps(_plain(value)) if isinstance(value, (list, tuple)) else _plain(value)


class SqliteConnector:
    """The embedded database (autocommit sqlite3, WAL); created private on first use."""

    backend = "sqlite"

    def __init__(self, url: DatabaseURL, busy_seconds: float = SQLITE_BUSY) -> None:
        # Imported here, like libpq: each command loads one driver only.
        import sqlite3

        assert url.sqlite_path is not None
        self.url = url
        create_private(url)
        from schedctl.datadir import root_trusts

        # Run as root, another user's database (or one in their directory) decides what root runs.
        instead = "point SCHEDCTL_DATABASE_URL at a database root owns"
        root_trusts(url.sqlite_path.parent, "SQLite database directory", instead)
        root_trusts(url.sqlite_path, "SQLite database", instead)
        try:
            self.conn = sqlite3.connect(url.sqlite_path, timeout=busy_seconds, isolation_level=None)
            self.conn.execute("PRAGMA foreign_keys=ON")
            self.conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.Error as e:
            raise translate(e, url) from None

    def run(self, name: str, params: Mapping[str, Any] | None = None) -> Rows:
        """Execute a named statement; a locked or unreadable file becomes a schedctl error."""
        import sqlite3

        q = queries.get(name, "sqlite")
        values = {k: _sqlite_value(v) for k, v in (params or {}).items()}
        try:
            cur = self.conn.execute(q.sql, values)
            rows = cur.fetchall()
        except sqlite3.OperationalError as e:
            raise translate(e, self.url) from e
        except sqlite3.IntegrityError as e:
            raise RefusedError(
                _first_line(str(e)),
                unique="UNIQUE" in str(e),
                missing_parent="FOREIGN KEY" in str(e),
            ) from e
        except (sqlite3.DataError, sqlite3.InterfaceError, OverflowError) as e:
            # OverflowError: an integer wider than SQLite's 64 bits.
            raise RefusedError(_first_line(str(e))) from e
        columns = tuple(d[0] for d in cur.description or ())
        return Rows(columns, rows, cur.rowcount if cur.rowcount >= 0 else len(rows))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Run the block's statements as one transaction, holding the write lock from the start."""
        self._plain("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        self._plain("COMMIT")

    def _plain(self, sql: str) -> None:
        import sqlite3

        try:
            self.conn.execute(sql)
        except sqlite3.OperationalError as e:
            raise translate(e, self.url) from e

    def close(self) -> None:
        """Close the file."""
        self.conn.close()


def create_private(url: DatabaseURL) -> None:
    """Create the database file 0600 in a 0700 directory: job definitions can hold secrets."""
    path = url.sqlite_path
    assert path is not None
    if path.exists():
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    except OSError as e:
        raise DatabaseUnavailableError(
            f"cannot create the SQLite database {path}: {e.strerror}; make its directory "
            f"writable or point SCHEDCTL_DATABASE_URL elsewhere"
        ) from None


def connect(
    url: DatabaseURL,
    application_name: str = "schedctl",
    busy_seconds: float = SQLITE_BUSY,
    retry_seconds: float | None = None,
) -> PgConnector | SqliteConnector:
    """Open a session on `url` with the driver of its backend.

    On PostgreSQL a server refusing connections as full is tried again for `retry_seconds`
    ($SCHEDCTL_CONNECT_RETRY, else CONNECT_RETRY).
    """
    if url.backend == "postgresql":
        return PgConnector(url, application_name, retry_seconds)
    return SqliteConnector(url, busy_seconds)


def from_sqlite_ts(text: str) -> datetime:
    """Read a timestamp SQLite stored as text back as an aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)
