"""Run-path data access on plain drivers (libpq, sqlite3): `schedctl run` loads no SQLAlchemy.

Rows written here must read back identically through the SQLAlchemy store, so SQLite
timestamps use SQLAlchemy's text format (naive UTC) and JSON columns hold JSON text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from schedctl.clock import Clock
from schedctl.config import DatabaseURL
from schedctl.db.dberrors import translate
from schedctl.db.version import SchemaStatus, require_current
from schedctl.errors import ConfigError, NotFoundError, TransactionPoolerError
from schedctl.models import DEFAULT_FENCE_SECONDS, Job, RunStatus, Trigger, job_from_row

if TYPE_CHECKING:
    import sqlite3

    from schedctl.db import libpq

# Shared with the SQLAlchemy engine (store/engine.py).
PG_CONNECT_ARGS: dict[str, Any] = {
    "connect_timeout": 5,
    # Client side: notice a dead server quickly.
    "keepalives": 1,
    "keepalives_idle": 20,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    # Server side: end the session of a host that died (and free its advisory lock) within a
    # minute, instead of the kernel default of two hours.
    # Sessions in UTC: timestamps arrive already in the zone schedctl computes in.
    "options": "-c tcp_keepalives_idle=20 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3"
    " -c TimeZone=UTC",
}
SQLITE_BUSY_SECONDS = 60.0
SQLITE_TS = "%Y-%m-%d %H:%M:%S.%f"  # SQLAlchemy's SQLite DateTime storage format
JOB_COLUMNS = (
    "id", "name", "command", "shell", "schedule", "timezone", "timeout_seconds", "concurrency",
    "catch_up", "jitter_seconds", "retries", "retry_delay_seconds", "env", "workdir",
    "run_as_user", "description", "tags", "enabled", "output_limit_bytes", "retention_seconds",
    "created_at", "updated_at", "revision",
)  # fmt: skip
JSON_COLUMNS = ("command", "env", "tags")
_TS_COLUMNS = ("created_at", "updated_at")


class Claim(NamedTuple):
    """A run row to insert: the claim of a slot (attempt 1), a retry, or a manual run."""

    job: Job
    slot: datetime | None
    trigger: Trigger
    attempt: int
    host: str
    pid: int
    claimed_at: datetime
    clock_skew_seconds: float | None
    version: str
    # How long after its last heartbeat this runner has certainly stopped its job.
    fence_seconds: float | None = None


class RunResult(NamedTuple):
    """The end of one attempt."""

    status: RunStatus
    exit_code: int | None
    signal: int | None
    started_at: datetime | None
    finished_at: datetime
    duration_seconds: float | None
    output_tail: str
    output_bytes: int
    output_truncated: bool


class RecordRefusedError(Exception):
    """The database will never take this result as it is: no such run, or a value it rejects."""


class RunDB(Protocol):
    """What `schedctl run` needs from the database."""

    backend: str

    def check_schema(self) -> None:
        """Raise SchemaError unless the schema is at this schedctl's version."""
        ...

    def now(self) -> datetime:
        """Return the database's clock (PostgreSQL) or the host's (SQLite)."""
        ...

    def backend_pid(self) -> int | None:
        """Return this session's server process id (PostgreSQL), else None."""
        ...

    def require_own_session(self) -> None:
        """Raise TransactionPoolerError unless this session keeps one server backend."""
        ...

    def load_job(self, name: str) -> Job:
        """Return the job called `name`, or raise NotFoundError."""
        ...

    def claim(self, claim: Claim) -> int | None:
        """Insert the run row; return its id, or None when the slot is already claimed."""
        ...

    def ran_before_readded(self, name: str, slot: datetime) -> bool:
        """Return whether a removed job of the same name already ran `slot`."""
        ...

    def mark_started(self, run_id: int) -> datetime:
        """Record that the job process starts now (also its first heartbeat); return when."""
        ...

    def heartbeat(self, run_id: int, timeout: float | None = None) -> None:
        """Prove the session is alive; raises when it is not, or no reply comes in `timeout`."""
        ...

    def fence_left(self, job_id: int, run_id: int) -> float | None:
        """Return the seconds until other runners' started runs of the job have surely stopped.

        None or a negative number: no other runner can still be running the job.
        """
        ...

    def finish(self, run_id: int, result: RunResult) -> None:
        """Record the outcome; RecordRefusedError when no retry could ever store it."""
        ...

    def reconcile_lost(self, host: str) -> int:
        """Mark `running` rows whose runner is gone as `lost`; return how many."""
        ...

    def select(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Return the rows of a read-only query written with `%s` placeholders."""
        ...

    def close(self) -> None:
        """Close the session (which also drops any advisory lock it holds)."""
        ...


def _first_line(text: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "refused")


def _not_found(name: str) -> NotFoundError:
    return NotFoundError(f"no job named {name!r}: see `schedctl list` for the jobs there are")


_INSERT_COLUMNS = (
    "job_id, job_name, job_revision, slot, trigger, attempt, status, host, pid, "
    "db_backend_pid, claimed_at, output_bytes, output_truncated, clock_skew_seconds, "
    "schedctl_version, fence_seconds"
)
_INSERT_PLACEHOLDERS = 16
_FINISH_SET = (
    "status = {p}, exit_code = {p}, signal = {p}, started_at = {p}, finished_at = {p}, "
    "duration_seconds = {p}, output_tail = {p}, output_bytes = {p}, output_truncated = {p}"
)


def _claim_values(c: Claim, backend_pid: int | None, ts: Any) -> tuple[Any, ...]:
    return (
        c.job.id, c.job.name, c.job.revision, ts(c.slot), c.trigger.value, c.attempt,
        RunStatus.RUNNING.value, c.host, c.pid, backend_pid, ts(c.claimed_at), 0, False,
        c.clock_skew_seconds, c.version, c.fence_seconds,
    )  # fmt: skip


def _finish_values(r: RunResult, ts: Any) -> tuple[Any, ...]:
    # PostgreSQL text cannot hold NUL, and a job may well print one: store U+FFFD instead, as
    # for invalid UTF-8, rather than fail to record the run (spooled results too).
    tail = r.output_tail.replace("\x00", "\ufffd")
    return (
        r.status.value, r.exit_code, r.signal, ts(r.started_at), ts(r.finished_at),
        r.duration_seconds, tail, r.output_bytes, r.output_truncated,
    )  # fmt: skip


# A removed job's runs keep its name with job_id NULL: a job added again under that name must
# not run a slot its predecessor already ran.
_RAN_BEFORE_READDED = (
    "SELECT 1 FROM runs WHERE job_name = %s AND slot = %s AND attempt = 1 AND job_id IS NULL "
    "LIMIT 1"
)


class PgRunDB:
    """The run's own PostgreSQL session (autocommit); advisory locks live on it too.

    On libpq directly (store/libpq.py), not psycopg: loading psycopg would be most of the
    cost of every `schedctl run` and `schedctl check`.
    """

    backend = "postgresql"

    def __init__(self, url: DatabaseURL, application_name: str = "schedctl run") -> None:
        from schedctl.db import libpq

        self.url = url
        # The keywords libpq parsed from the URL (config.py), then schedctl's own on top.
        params = {
            **url.libpq_params(),
            **PG_CONNECT_ARGS,
            "application_name": application_name,
            "client_encoding": "UTF8",
        }
        self._params = params
        # The server's own pid for this session (pg_backend_pid()); libpq's can be a pooler's.
        self.server_pid: int | None = None
        try:
            self.conn = libpq.Connection(params, expand_dbname=False)
        except libpq.LibpqMissingError as e:
            raise ConfigError(e.advice()) from None
        except libpq.PgError as e:
            raise translate(e, url) from None

    def _sql(self, sql: str, params: Sequence[Any] = ()) -> libpq.Result:
        """Execute on the run's session; a lost connection becomes a one-line schedctl error."""
        from schedctl.db import libpq

        try:
            return self.conn.execute(sql, params)
        except libpq.PgOperationalError as e:
            raise translate(e, self.url) from e

    def check_schema(self) -> None:
        """Raise SchemaError unless the schema is at HEAD."""
        from schedctl.db import libpq

        # One round trip in the usual case; a missing table is the rare, first-use case. The
        # server's pid comes along: compared with libpq's, it tells whether a pooler is between.
        try:
            found = self._sql(
                "SELECT version_num, pg_backend_pid() FROM alembic_version"
            ).fetchone()
        except libpq.PgError as e:
            if e.sqlstate != libpq.UNDEFINED_TABLE:
                raise
            found = None
        if found:
            self.server_pid = int(found[1])
        require_current(SchemaStatus(str(found[0]) if found else None))

    def now(self) -> datetime:
        """Return the server's clock (the same for every host, whatever their skew)."""
        row = self._sql("SELECT clock_timestamp()").fetchone()
        assert row is not None
        value: datetime = row[0]
        return value.astimezone(UTC)

    def backend_pid(self) -> int | None:
        """Return this session's server backend pid (the server's, not a pooler's)."""
        return self.conn.backend_pid if self.server_pid is None else self.server_pid

    @property
    def pooled_pid(self) -> int | None:
        """Return the server backend pid when a pooler stands between, else None."""
        if self.server_pid is None or self.server_pid == self.conn.backend_pid:
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
        from schedctl.db import libpq

        if self.server_pid is None:
            row = self._sql("SELECT pg_backend_pid()").fetchone()
            assert row is not None
            self.server_pid = int(row[0])
        if self.pooled_pid is None:
            return
        ours = [self._sql("SELECT pg_backend_pid()").fetchone() for _ in range(2)]
        if any(row is None or int(row[0]) != self.server_pid for row in ours):
            raise TransactionPoolerError()
        try:
            with libpq.Connection(
                {**self._params, "application_name": "schedctl run (pool check)"},
                expand_dbname=False,
            ) as other:
                theirs = other.execute("SELECT pg_backend_pid()").fetchone()
        except libpq.PgError as e:
            raise translate(e, self.url) from None
        if theirs is None or int(theirs[0]) == self.server_pid:
            raise TransactionPoolerError()

    def load_job(self, name: str) -> Job:
        """Return the job called `name`."""
        cur = self._sql(f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs WHERE name = %s", (name,))
        row = cur.fetchone()
        if row is None:
            raise _not_found(name)
        return job_from_row(dict(zip(JOB_COLUMNS, row, strict=True)))

    def select(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Return the rows of a read-only query."""
        return self._sql(sql, params).fetchall()

    def claim(self, claim: Claim) -> int | None:
        """Insert-or-nothing on (job_id, slot): the fleet-wide claim of a slot."""
        placeholders = ", ".join(["%s"] * _INSERT_PLACEHOLDERS)
        conflict = "ON CONFLICT (job_id, slot) WHERE attempt = 1 DO NOTHING" if claim.slot else ""
        row = self._sql(
            f"INSERT INTO runs ({_INSERT_COLUMNS}) VALUES ({placeholders}) {conflict} RETURNING id",
            _claim_values(claim, self.backend_pid(), lambda v: v),
        ).fetchone()
        return None if row is None else int(row[0])

    def ran_before_readded(self, name: str, slot: datetime) -> bool:
        """Return whether a removed job of the same name already ran `slot`."""
        return bool(self._sql(_RAN_BEFORE_READDED, (name, slot)).fetchone())

    def mark_started(self, run_id: int) -> datetime:
        """Record the start, by the server's clock: it is the run's first heartbeat too."""
        row = self._sql(
            "UPDATE runs SET started_at = clock_timestamp(), heartbeat_at = clock_timestamp() "
            "WHERE id = %s RETURNING started_at",
            (run_id,),
        ).fetchone()
        assert row is not None
        value: datetime = row[0]
        return value.astimezone(UTC)

    def heartbeat(self, run_id: int, timeout: float | None = None) -> None:
        """Touch heartbeat_at on this session; raise if the session is gone or answers late.

        The row names the server backend that claimed it: a statement that lands on another
        backend (a transaction pooler moved us) updates nothing, which counts as lost too.
        """
        from schedctl.db import libpq

        sql = (
            "UPDATE runs SET heartbeat_at = clock_timestamp() "
            "WHERE id = %s AND db_backend_pid = pg_backend_pid()"
        )
        try:
            cur = self.conn.execute(sql, (run_id,), timeout=timeout)
        except libpq.PgOperationalError as e:
            raise translate(e, self.url) from e
        if cur.rowcount == 0:
            raise TransactionPoolerError()

    def fence_left(self, job_id: int, run_id: int) -> float | None:
        """Return the seconds until other runners' started runs of the job have surely stopped."""
        row = self._sql(
            "SELECT extract(epoch FROM max(coalesce(heartbeat_at, started_at)"
            " + coalesce(fence_seconds, %s) * interval '1 second') - clock_timestamp())::float8"
            " FROM runs WHERE job_id = %s AND status = 'running' AND started_at IS NOT NULL"
            " AND id <> %s",
            (DEFAULT_FENCE_SECONDS, job_id, run_id),
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def finish(self, run_id: int, result: RunResult) -> None:
        """Record the outcome; RecordRefusedError when no retry could ever store it."""
        from schedctl.db import libpq

        try:
            cur = self._sql(
                f"UPDATE runs SET {_FINISH_SET.format(p='%s')} WHERE id = %s",
                (*_finish_values(result, lambda v: v), run_id),
            )
        except libpq.PgError as e:
            # Data exceptions and constraint violations: the values are at fault, not the
            # session, so trying again later would fail the same way.
            if e.sqlstate is not None and e.sqlstate[:2] in ("22", "23"):
                raise RecordRefusedError(_first_line(str(e))) from e
            raise
        if cur.rowcount == 0:
            raise RecordRefusedError(f"the database has no run {run_id}")

    def reconcile_lost(self, host: str = "") -> int:
        """Mark `running` rows whose session has ended as `lost`, from any host."""
        cur = self._sql(
            "UPDATE runs SET status = 'lost', finished_at = clock_timestamp() "
            "WHERE status = 'running' AND db_backend_pid IS NOT NULL "
            # The function, not the pg_stat_activity view: planning the view's joins in a
            # fresh session costs more than the rest of this statement.
            "AND NOT EXISTS (SELECT 1 FROM pg_stat_get_activity(runs.db_backend_pid)) "
            # A runner outlives its session (a restarted server) until its fence has passed:
            # until then its job may still be running, so the row is not final yet.
            "AND (started_at IS NULL OR coalesce(heartbeat_at, started_at)"
            " + coalesce(fence_seconds, %s) * interval '1 second' < clock_timestamp())",
            (DEFAULT_FENCE_SECONDS,),
        )
        return cur.rowcount

    def close(self) -> None:
        """Close the session."""
        self.conn.close()


def _sqlite_ts(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime(SQLITE_TS)


def _from_sqlite_ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def job_from_json_text(values: dict[str, Any]) -> Job:
    """Build a Job from a `jobs` row whose JSON columns are still JSON text."""
    for col in JSON_COLUMNS:
        values[col] = json.loads(values[col])
    return job_from_row(values)


def _sqlite_job(row: Sequence[Any]) -> Job:
    values = dict(zip(JOB_COLUMNS, row, strict=True))
    for col in _TS_COLUMNS:
        values[col] = _from_sqlite_ts(values[col])
    return job_from_json_text(values)


def as_time(value: datetime | str | None) -> datetime | None:
    """Return a timestamp column's value as an aware UTC datetime, from either driver."""
    if value is None:
        return None
    if isinstance(value, str):
        return _from_sqlite_ts(value)
    return value if value.tzinfo is UTC else value.astimezone(UTC)


def time_param(db: RunDB, value: datetime) -> datetime | str:
    """Return `value` as the driver of `db` compares it with stored timestamps."""
    return value if db.backend == "postgresql" else value.astimezone(UTC).strftime(SQLITE_TS)


class SqliteRunDB:
    """The embedded database: one host, so the host clock and flock stand in for the server's."""

    backend = "sqlite"

    def __init__(self, url: DatabaseURL, clock: Clock) -> None:
        # Imported here, like libpq in PgRunDB: each run loads one driver only.
        import sqlite3

        assert url.sqlite_path is not None
        self.url = url
        self.clock = clock
        try:
            # isolation_level=None: autocommit, like the PostgreSQL session. A generous busy
            # timeout: hundreds of runs starting in the same second on one host queue for the
            # write lock, and giving up would mean a slot not run.
            self.conn = sqlite3.connect(
                url.sqlite_path, timeout=SQLITE_BUSY_SECONDS, isolation_level=None
            )
            self.conn.execute("PRAGMA foreign_keys=ON")
            self.conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.Error as e:
            raise translate(e, url) from None

    def _sql(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        """Execute; a locked or unreadable database becomes a one-line schedctl error."""
        import sqlite3

        try:
            return self.conn.execute(sql, params)
        except sqlite3.OperationalError as e:
            raise translate(e, self.url) from e

    def check_schema(self) -> None:
        """Raise SchemaError unless the schema is at HEAD."""
        has = self._sql(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
        ).fetchone()
        row = self._sql("SELECT version_num FROM alembic_version").fetchone() if has else None
        require_current(SchemaStatus(row[0] if row else None))

    def now(self) -> datetime:
        """Return the host's clock (there is only one host)."""
        return self.clock.now().astimezone(UTC)

    def backend_pid(self) -> int | None:
        """SQLite has no server process."""
        return None

    def require_own_session(self) -> None:
        """The lock is a file lock of this process: nothing can take it away."""

    def load_job(self, name: str) -> Job:
        """Return the job called `name`."""
        cur = self._sql(f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs WHERE name = ?", (name,))
        row = cur.fetchone()
        if row is None:
            raise _not_found(name)
        return _sqlite_job(row)

    def select(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Return the rows of a read-only query (`%s` placeholders, as on PostgreSQL)."""
        return self._sql(sql.replace("%s", "?"), params).fetchall()

    def claim(self, claim: Claim) -> int | None:
        """Insert-or-nothing on (job_id, slot)."""
        placeholders = ", ".join(["?"] * _INSERT_PLACEHOLDERS)
        conflict = "ON CONFLICT (job_id, slot) WHERE attempt = 1 DO NOTHING" if claim.slot else ""
        row = self._sql(
            f"INSERT INTO runs ({_INSERT_COLUMNS}) VALUES ({placeholders}) {conflict} RETURNING id",
            _claim_values(claim, None, _sqlite_ts),
        ).fetchone()
        return None if row is None else int(row[0])

    def ran_before_readded(self, name: str, slot: datetime) -> bool:
        """Return whether a removed job of the same name already ran `slot`."""
        sql = _RAN_BEFORE_READDED.replace("%s", "?")
        return bool(self._sql(sql, (name, _sqlite_ts(slot))).fetchone())

    def mark_started(self, run_id: int) -> datetime:
        """Record the start."""
        at = self.now()
        ts = _sqlite_ts(at)
        self._sql("UPDATE runs SET started_at = ?, heartbeat_at = ? WHERE id = ?", (ts, ts, run_id))
        return at

    def heartbeat(self, run_id: int, timeout: float | None = None) -> None:
        """Touch heartbeat_at (a local file: the busy timeout bounds the wait)."""
        self._sql("UPDATE runs SET heartbeat_at = ? WHERE id = ?", (_sqlite_ts(self.now()), run_id))

    def fence_left(self, job_id: int, run_id: int) -> float | None:
        """No fence: the flock is held by a live runner process only, never by a lost one."""
        return None

    def finish(self, run_id: int, result: RunResult) -> None:
        """Record the outcome; RecordRefusedError when no retry could ever store it."""
        import sqlite3

        try:
            cur = self._sql(
                f"UPDATE runs SET {_FINISH_SET.format(p='?')} WHERE id = ?",
                (*_finish_values(result, _sqlite_ts), run_id),
            )
        except (
            sqlite3.IntegrityError,
            sqlite3.DataError,
            sqlite3.InterfaceError,
            OverflowError,  # an integer wider than SQLite's 64 bits
        ) as e:
            raise RecordRefusedError(_first_line(str(e))) from e
        if cur.rowcount == 0:
            raise RecordRefusedError(f"the database has no run {run_id}")

    def reconcile_lost(self, host: str) -> int:
        """Mark this host's `running` rows whose runner process is gone as `lost`."""
        rows = self._sql(
            "SELECT id, pid FROM runs WHERE status = 'running' AND host = ?", (host,)
        ).fetchall()
        gone = [run_id for run_id, pid in rows if pid is None or not _pid_alive(int(pid))]
        for run_id in gone:
            self._sql(
                "UPDATE runs SET status = 'lost', finished_at = ? WHERE id = ? AND status = 'running'",
                (_sqlite_ts(self.now()), run_id),
            )
        return len(gone)

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


def open_rundb(url: DatabaseURL, clock: Clock, application_name: str = "schedctl run") -> RunDB:
    """Connect to `url` with the run-path driver for its backend."""
    if url.backend == "postgresql":
        return PgRunDB(url, application_name)
    return SqliteRunDB(url, clock)


def _pid_alive(pid: int) -> bool:
    """Return whether `pid` is still a schedctl process (a reused pid is not our runner)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in (b"Z", b"X") and b"schedctl" in cmdline
