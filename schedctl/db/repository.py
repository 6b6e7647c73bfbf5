"""The repository: everything any command reads from or writes to the database.

One class over a Connector (connector.py), its statements named in queries.sql. `run` uses it
as much as `report`: no command has a data layer of its own.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from schedctl import redact
from schedctl.clock import Clock
from schedctl.config import DatabaseURL
from schedctl.db import queries
from schedctl.db.connector import (
    SQLITE_BUSY,
    PgConnector,
    RefusedError,
    Rows,
    SqliteConnector,
    connect,
    from_sqlite_ts,
)
from schedctl.db.version import SchemaStatus, require_current
from schedctl.errors import (
    ConflictError,
    DatabaseUnavailableError,
    MalformedJobError,
    NotFoundError,
    TransactionPoolerError,
)
from schedctl.models import (
    DEFAULT_FENCE_SECONDS,
    MAX_FENCE_SECONDS,
    Job,
    JobSpec,
    RunStatus,
    Seal,
    Trigger,
    job_from_row,
    sane_fence,
    webhook_secret,
)

if TYPE_CHECKING:
    from schedctl.history import ChangeRecord, JobChange, Run, WindowStats
    from schedctl.locking import Statements
    from schedctl.trust import Refusal

JSON_COLUMNS = ("command", "env", "tags", "notify", "notify_on", "secrets", "secret_env")
# Signs a definition about to be stored at a revision (signing.py); None stores it unsigned.
Sealer = Callable[[JobSpec, int], Seal | None]
# Fewer finished runs say little about how long a job usually takes.
MIN_SAMPLES = 5


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


class Runner(NamedTuple):
    """Who claimed a run: the host and the `schedctl run` process, as its row records them."""

    host: str
    pid: int


class RecordRefusedError(Exception):
    """The database will never take this result as it is: no such run, or a value it rejects."""


class RunGoneError(RecordRefusedError):
    """The run's row is gone: its job was removed with `--purge` meanwhile."""


class RunDB(Protocol):
    """What `schedctl run` needs from the database (the Repository, or a test's stand-in)."""

    backend: str

    def now(self) -> datetime:
        """Return the database's clock (PostgreSQL) or the host's (SQLite)."""
        ...

    def require_own_session(self) -> None:
        """Raise TransactionPoolerError unless this session keeps one server backend."""
        ...

    def register_host(
        self, name: str, labels: Mapping[str, str], version: str, scheduler: str | None
    ) -> datetime:
        """Upsert this host's row; return the database clock it was stamped with."""
        ...

    def load_job(self, name: str) -> Job:
        """Return the job called `name`, or raise NotFoundError."""
        ...

    def claim(self, claim: Claim) -> int | None:
        """Insert the run row; return its id, or None when the slot is already claimed."""
        ...

    def record_refusal(self, job: Job, host: str, refusal: Refusal, slot: datetime | None) -> None:
        """Record that `host` refused to run `job` (its current revision), and why."""
        ...

    def ran_before_readded(self, name: str, slot: datetime) -> bool:
        """Return whether a removed job of the same name already ran `slot`."""
        ...

    def mark_started(self, run_id: int) -> datetime:
        """Record that the job process starts now (also its first heartbeat); return when."""
        ...

    def heartbeat(self, run_id: int, timeout: float | None = None) -> bool:
        """Prove the session is alive; raises when it is not, or no reply comes in `timeout`.

        Return whether the run's row is still there (`remove --purge` deletes it).
        """
        ...

    def fence_left(self, job_id: int, run_id: int) -> float | None:
        """Return the seconds until other runners' started runs of the job have surely stopped."""
        ...

    def finish(self, run_id: int, result: RunResult, runner: Runner | None = None) -> None:
        """Record the outcome; RecordRefusedError when no retry could ever store it."""
        ...

    def finish_spooled(self, run_id: int, result: RunResult, runner: Runner | None = None) -> None:
        """Record a spooled outcome unless the run is final already (RecordRefusedError)."""
        ...

    def reconcile_lost(self, host: str) -> int:
        """Mark `running` rows whose runner is gone as `lost`; return how many."""
        ...

    def backend_pid(self) -> int | None:
        """Return this session's server backend pid (PostgreSQL), else None."""
        ...

    def reown(self, run_id: int, old_pid: int | None) -> bool:
        """Take an unstarted run row back on this session; False when it is no longer ours."""
        ...

    def abandon(self, run_id: int, old_pid: int | None) -> bool:
        """Record an unstarted run as `lost` with no start; False when it was not ours any more."""
        ...

    def close(self) -> None:
        """Close the session."""
        ...


class HostRow(NamedTuple):
    """A host as it last registered."""

    name: str
    labels: dict[str, str]
    version: str
    scheduler: str | None
    first_seen: datetime
    last_seen: datetime
    last_sync: datetime | None


class Outcome(NamedTuple):
    """A job's newest run with a given result."""

    id: int
    status: str
    at: datetime  # finished (or, for a run lost without an end, claimed)
    duration: float | None


class Cutoffs(NamedTuple):
    """One job's runs claimed before these instants may go (job_id None: removed jobs').

    First attempts of slots from `claimable_from` on stay whatever their age: a firing may
    still pick those slots, and only that row stops it from running one twice.
    """

    job_id: int | None
    others_before: datetime
    failures_before: datetime
    claimable_from: datetime | None = None

    def params(self) -> dict[str, Any]:
        """Return the statement parameters of these cutoffs."""
        return {
            "job_id": self.job_id,
            "older_cutoff": max(self.others_before, self.failures_before),
            "others_before": self.others_before,
            "failures_before": self.failures_before,
            # None: no slot is claimable any more.
            "claimable_from": self.claimable_from or _NEVER,
        }


class RefusalRow(NamedTuple):
    """A host's standing refusal to run a job (trust.py)."""

    job_id: int
    job_name: str
    host: str
    job_revision: int
    kind: str
    reason: str
    slot: datetime | None
    first_at: datetime
    last_at: datetime
    times: int

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "job": self.job_name, "host": self.host, "revision": self.job_revision,
            "kind": self.kind, "reason": self.reason,
            "slot": None if self.slot is None else self.slot.isoformat(),
            "first_at": self.first_at.isoformat(), "last_at": self.last_at.isoformat(),
            "count": self.times,
        }  # fmt: skip


class CheckData(NamedTuple):
    """Everything `check` judges, read in a handful of statements."""

    jobs: list[Job]
    changes: dict[int, list[JobChange]]
    pruned_before: dict[int, datetime]
    last: dict[int, Run]
    running: dict[int, Run]
    heartbeats: dict[int, datetime | None]
    p95: dict[int, float]
    refusals: dict[int, list[RefusalRow]]
    malformed: list[MalformedJobError]  # jobs that cannot be read: CRITICAL


_NEVER = datetime(9999, 12, 31, tzinfo=UTC)
_FENCES = {"default_fence": DEFAULT_FENCE_SECONDS, "max_fence": MAX_FENCE_SECONDS}


def as_time(value: datetime | str | None) -> datetime | None:
    """Return a timestamp column's value as an aware UTC datetime, from either driver."""
    if value is None:
        return None
    if isinstance(value, str):
        return from_sqlite_ts(value)
    return value if value.tzinfo is UTC else value.astimezone(UTC)


def _os_user() -> str:
    import os
    import pwd

    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _time(value: datetime | str) -> datetime:
    found = as_time(value)
    assert found is not None
    return found


def _json(value: Any) -> Any:
    # PostgreSQL's jsonb arrives decoded; SQLite's JSON columns are text.
    return json.loads(value) if isinstance(value, str) else value


def _decoded(values: dict[str, Any], repair: bool) -> tuple[Job, tuple[MalformedJobError, ...]]:
    """Decode a `jobs` row; a value of the wrong type is MalformedJobError (models.py)."""
    for col in JSON_COLUMNS:
        try:
            values[col] = _json(values[col])
        except ValueError:  # SQLite text that is not JSON: as wrong as a wrong type
            values[col] = _NOT_JSON
    values["created_at"] = _time(values["created_at"])
    values["updated_at"] = _time(values["updated_at"])
    job, dropped = job_from_row(values, repair)
    for target in job.spec.notify:
        # A webhook URL is a credential: never in a message, a log line or a traceback.
        if target.startswith("webhook:"):
            redact.remember(webhook_secret(target))
    # So are the env values marked secret.
    env = dict(job.spec.env)
    redact.remember(*(env.get(k) for k in job.spec.secret_env))
    return job, dropped


def _job(values: dict[str, Any]) -> Job:
    return _decoded(values, repair=False)[0]


class _NotJson:
    """Stands for stored text that is not JSON at all."""

    def __repr__(self) -> str:
        return "text that is not JSON"


_NOT_JSON = _NotJson()


_RUN_TIMES = ("slot", "claimed_at", "started_at", "finished_at")


def _run(values: dict[str, Any]) -> Run:
    from schedctl.history import Run

    for col in _RUN_TIMES:
        values[col] = as_time(values[col])
    values["output_truncated"] = bool(values["output_truncated"])
    return Run(**values)


def _judged_job(row: tuple[Any, ...]) -> Job:
    """Build a job from the fields `check` judges by; the rest are left at their defaults."""
    job_id, name, schedule, zone, timeout, jitter, enabled, created, updated, revision, on = row
    spec = JobSpec(name=name, schedule=schedule, timezone=zone, command=(),
                   timeout_seconds=timeout, jitter_seconds=jitter, enabled=bool(enabled),
                   placement=on or "")  # fmt: skip
    return Job(job_id, spec, revision, _time(created), _time(updated))


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Return the q-quantile with linear interpolation, as PostgreSQL's percentile_cont."""
    if not sorted_values:
        return None
    pos = q * (len(sorted_values) - 1)
    i = int(pos)
    if i + 1 >= len(sorted_values):
        return sorted_values[-1]
    return sorted_values[i] + (sorted_values[i + 1] - sorted_values[i]) * (pos - i)


def _not_found(name: str) -> NotFoundError:
    return NotFoundError(f"no job named {name!r}: see `schedctl list` for the jobs there are")


def _exists(name: str) -> ConflictError:
    return ConflictError(
        f"a job named {name!r} already exists: pick another name or change it with "
        f"`schedctl edit {name}`"
    )


def _changed_meanwhile(name: str) -> ConflictError:
    return ConflictError(
        f"job {name!r} was changed or removed by someone else meanwhile: nothing was applied; "
        f"look at `schedctl show {name}` and apply again"
    )


def _spec_params(spec: JobSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "command": json.dumps(list(spec.command)),
        "shell": spec.shell,
        "schedule": spec.schedule,
        "timezone": spec.timezone,
        "timeout_seconds": spec.timeout_seconds,
        "concurrency": spec.concurrency.value,
        "catch_up": spec.catch_up.value,
        "jitter_seconds": spec.jitter_seconds,
        "retries": spec.retries,
        "retry_delay_seconds": spec.retry_delay_seconds,
        "env": json.dumps(dict(spec.env)),
        "workdir": spec.workdir,
        "run_as_user": spec.run_as_user,
        "description": spec.description,
        "tags": json.dumps(list(spec.tags)),
        "enabled": spec.enabled,
        "output_limit_bytes": spec.output_limit_bytes,
        "retention_seconds": spec.retention_seconds,
        "notify": json.dumps(list(spec.notify)),
        "notify_on": json.dumps(list(spec.notify_on)),
        "placement": spec.placement or None,
        "secrets": json.dumps(dict(spec.secrets)),
        "secret_env": json.dumps(list(spec.secret_env)),
    }


def _seal_params(seal: Seal | None) -> dict[str, Any]:
    if seal is None:
        return {"signature": None, "signer": None, "signing_key": None, "signed_definition": None}
    return {"signature": seal.signature, "signer": seal.signer, "signing_key": seal.key,
            "signed_definition": seal.signed or None}  # fmt: skip


def _timing(spec: JobSpec) -> tuple[bool, str, str]:
    return spec.enabled, spec.schedule, spec.timezone


class Repository:
    """Job definitions and run history in one database, for every command."""

    def __init__(
        self,
        conn: PgConnector | SqliteConnector,
        clock: Clock,
        reopen: Callable[[], PgConnector | SqliteConnector] | None = None,
    ) -> None:
        self.conn = conn
        self.url: DatabaseURL = conn.url
        # Jobs list_jobs left out, by name: the command says so once it is done.
        self.malformed: dict[str, MalformedJobError] = {}
        self.backend = conn.backend
        self.clock = clock
        # Set where a lost session is harmless to replace (the daemon, the operator commands):
        # the statement that lost it fails, and the next one, outside a transaction, opens a
        # new session first. Not retried at once: the server may have ended the session for
        # what that statement did. Never on the run path, whose advisory lock lives on it.
        self.reopen = reopen
        # Set by the operator commands: signs every definition they store (signing.py).
        self.sealer: Sealer | None = None
        # Set by the operator commands: raises ChangedAfterSigningError for a job whose stored
        # definition no longer matches its signature, before any edit stores it again.
        self.guard: Callable[[Job], None] | None = None
        self._lost = False
        self._in_transaction = False

    def _q(self, name: str, params: Mapping[str, Any] | None = None) -> Rows:
        if self._lost and self.reopen is not None and not self._in_transaction:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = self.reopen()
            self._lost = False
        try:
            return self.conn.run(name, params)
        except DatabaseUnavailableError:
            self._lost = True
            if self.reopen is None or self._in_transaction or not queries.reads_only(name):
                raise
        # A read has no effect to repeat: a session the server ended while the command waited
        # (a prompt, idle_session_timeout) costs the read one retry on a new session.
        self.conn = self.reopen()
        self._lost = False
        return self.conn.run(name, params)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """Run the block's statements as one transaction, on one session."""
        self._in_transaction = True
        try:
            with self.conn.transaction():
                yield
        finally:
            self._in_transaction = False

    @contextlib.contextmanager
    def _job_writes(self) -> Iterator[None]:
        """Run the block's job writes as one transaction whose change records name the OS user.

        The triggers on jobs write the records (migration 0007); this only adds who ran
        schedctl, which no trigger can know.
        """
        user = _os_user()
        with self._transaction():
            if self.backend == "postgresql":
                self._q("change_author", {"os_user": user})
                yield
                return
            row = self._q("changes_mark").one()
            assert row is not None
            yield
            self._q("change_author", {"os_user": user, "mark": int(row[0])})

    def close(self) -> None:
        """Close the session (which also drops any advisory lock it holds)."""
        self.conn.close()

    # -- schema, clock, session ---------------------------------------------------------------

    def schema_status(self) -> SchemaStatus:
        """Return where the schema stands, in one round trip in the usual case."""
        if isinstance(self.conn, SqliteConnector):
            if not self._q("has_schema").rows:
                return SchemaStatus(None)
            row = self._q("schema_version").one()
            return SchemaStatus(str(row[0]) if row else None)
        from schedctl.db import libpq

        try:
            row = self._q("schema_version").one()
        except libpq.PgError as e:
            if e.sqlstate != libpq.UNDEFINED_TABLE:
                raise
            return SchemaStatus(None)
        if row is not None:
            self.conn.server_pid = int(row[1])
        return SchemaStatus(str(row[0]) if row else None)

    def check_schema(self) -> None:
        """Raise SchemaError unless the schema is at this schedctl's version."""
        require_current(self.schema_status())

    def upgrade(self) -> tuple[str | None, str]:
        """Migrate to the newest schema (Alembic, on its own connection)."""
        from schedctl.db import schema

        return schema.upgrade(self.url)

    def server_version(self) -> str:
        """Return the database server's version string."""
        row = self._q("server_version").one()
        assert row is not None
        return str(row[0])

    def now(self) -> datetime:
        """Return the server's clock (the same for every host); SQLite: this host's."""
        if self.backend == "sqlite":
            return self.clock.now().astimezone(UTC)
        row = self._q("now").one()
        assert row is not None
        return _time(row[0])

    def backend_pid(self) -> int | None:
        """Return this session's server backend pid (PostgreSQL), else None."""
        return self.conn.backend_pid() if isinstance(self.conn, PgConnector) else None

    @property
    def pooled_pid(self) -> int | None:
        """Return the server backend pid when a pooler stands between, else None."""
        return self.conn.pooled_pid if isinstance(self.conn, PgConnector) else None

    @property
    def session(self) -> Statements:
        """Return the session that advisory locks are taken on (PostgreSQL only)."""
        assert isinstance(self.conn, PgConnector)
        return self.conn

    def require_own_session(self) -> None:
        """Refuse a transaction pooler (PostgreSQL); SQLite's lock is this process's own."""
        if isinstance(self.conn, PgConnector):
            self.conn.require_own_session()

    # -- hosts --------------------------------------------------------------------------------

    def register_host(
        self,
        name: str,
        labels: Mapping[str, str],
        version: str,
        scheduler: str | None,
        synced: bool = False,
    ) -> datetime:
        """Upsert this host's row in one statement; return the database clock it was stamped with.

        `synced` marks a `sync` or daemon refresh: from then on the host is expected to keep
        coming back.
        """
        params = {
            "name": name, "labels": json.dumps(dict(sorted(labels.items()))), "version": version,
            "scheduler": scheduler, "synced": synced,
            "now": self.now() if self.backend == "sqlite" else None,
        }  # fmt: skip
        if self.backend == "postgresql":
            del params["now"]
        row = self._q("register_host", params).one()
        assert row is not None
        return _time(row[0])

    def list_hosts(self) -> list[HostRow]:
        """Return every registered host, by name."""
        out = []
        for name, labels, version, scheduler, first, last, synced in self._q("list_hosts").rows:
            out.append(HostRow(str(name), dict(_json(labels)), str(version), scheduler,
                               _time(first), _time(last), as_time(synced)))  # fmt: skip
        return out

    def forget_host(self, name: str) -> bool:
        """Delete a host's row; return whether there was one."""
        return bool(self._q("forget_host", {"name": name}).rowcount)

    # -- refusals -----------------------------------------------------------------------------

    def record_refusal(self, job: Job, host: str, refusal: Refusal, slot: datetime | None) -> None:
        """Record that `host` refused to run `job` (its current revision), and why."""
        params = {
            "job_id": job.id, "host": host, "job_name": job.name, "job_revision": job.revision,
            "kind": refusal.kind, "reason": refusal.reason, "slot": slot,
        }  # fmt: skip
        if self.backend == "sqlite":
            params["now"] = self.now()
        self._q("record_refusal", params)

    def clear_refusals(self, host: str, job_ids: Iterable[int]) -> None:
        """Forget `host`'s refusals of these jobs: it would run them now."""
        refused = {int(r[0]) for r in self._q("refused_by_host", {"host": host}).rows}
        for job_id in sorted(refused.intersection(job_ids)):
            self._q("clear_refusal", {"job_id": job_id, "host": host})

    def refusals(self) -> list[RefusalRow]:
        """Return every standing refusal of a job's current revision, by job and host."""
        out = []
        for row in self._q("list_refusals").rows:
            job_id, name, host, revision, kind, reason, slot, first, last, count = row
            out.append(RefusalRow(int(job_id), str(name), str(host), int(revision), str(kind),
                                  str(reason), as_time(slot), _time(first), _time(last),
                                  int(count)))  # fmt: skip
        return out

    # -- jobs ---------------------------------------------------------------------------------

    def load_job(self, name: str) -> Job:
        """Return the job called `name`, or raise NotFoundError."""
        found = self._q("load_job", {"name": name}).dicts()
        if not found:
            raise _not_found(name)
        return _job(found[0])

    def job_by_id(self, job_id: int) -> Job | None:
        """Return the job with id `job_id` as it is now, or None if it is gone."""
        found = self._q("load_job_by_id", {"id": job_id}).dicts()
        return _job(found[0]) if found else None

    def load_job_for_repair(self, name: str) -> tuple[Job, tuple[MalformedJobError, ...]]:
        """Return the job called `name` with each field of the wrong type at its default, and
        the error of each such field: what `edit` and `remove` work on."""
        found = self._q("load_job", {"name": name}).dicts()
        if not found:
            raise _not_found(name)
        return _decoded(found[0], repair=True)

    def list_jobs(self, skip_malformed: bool = True) -> list[Job]:
        """Return every job, ordered by name.

        A malformed row (a value of the wrong type, written into the database by hand) is left
        out and kept in `self.malformed` by name, so one bad row does not stop every command
        that lists jobs; without `skip_malformed` it raises MalformedJobError instead.
        """
        out = []
        self.malformed = {}  # as of this reading: a job repaired meanwhile is no longer left out
        for d in self._q("list_jobs").dicts():
            try:
                out.append(_job(d))
            except MalformedJobError as e:
                if not skip_malformed:
                    raise
                self.malformed[e.job] = e
        return out

    def job_names(self) -> dict[int, str]:
        """Return job names by id."""
        return {int(i): str(n) for i, n in self._q("job_names").rows}

    def add_job(self, spec: JobSpec, now: datetime) -> Job:
        """Insert a new job; raise ConflictError if the name is taken."""
        return self.add_jobs([spec], now)[0]

    def add_jobs(self, specs: Iterable[JobSpec], now: datetime) -> list[Job]:
        """Insert new jobs in one transaction: all of them, or none if any name is taken."""
        added: list[Job] = []
        spec: JobSpec | None = None
        try:
            with self._job_writes():
                for spec in specs:
                    if self._q("job_id_by_name", {"name": spec.name}).rows:
                        raise _exists(spec.name)
                    seal = self._seal(spec, 1)
                    params = {**_spec_params(spec), **_seal_params(seal), "now": now}
                    row = self._q("insert_job", params).one()
                    assert row is not None
                    new_id = int(row[0])
                    self._record_change(new_id, spec, now)
                    added.append(Job(id=new_id, spec=spec, revision=1, created_at=now,
                                     updated_at=now, seal=seal))  # fmt: skip
        except RefusedError as e:
            if e.unique and spec is not None:  # lost a race with a concurrent add of the name
                raise _exists(spec.name) from None
            raise
        return added

    def update_job(
        self,
        job: Job,
        spec: JobSpec,
        now: datetime,
        accept_changes: bool = False,
        keep_seal: bool = False,
    ) -> Job:
        """Store `spec` for `job` if nobody changed it meanwhile; bump its revision.

        A job changed after it was signed is refused (the guard) unless `accept_changes`;
        `keep_seal` stores its old signature as it is instead of signing again.
        """
        if keep_seal:
            seal = job.seal
        else:
            self._check_signed(job, accept_changes)
            seal = self._seal(spec, job.revision + 1)
        params = {**_spec_params(spec), **_seal_params(seal), "now": now, "id": job.id,
                  "revision": job.revision}  # fmt: skip
        with self._job_writes():
            done = self._q("update_job", params).rowcount
            if done == 1 and _timing(spec) != _timing(job.spec):
                self._record_change(job.id, spec, now)
        if done != 1:
            raise ConflictError(
                f"job {job.name!r} was changed or removed by someone else meanwhile: "
                f"look at `schedctl show {job.name}` and try again"
            )
        return Job(job.id, spec, job.revision + 1, job.created_at, now, seal)

    def _check_signed(self, job: Job, accept_changes: bool = False) -> None:
        if job.seal is not None and self.guard is not None and not accept_changes:
            self.guard(job)

    def _seal(self, spec: JobSpec, revision: int) -> Seal | None:
        return None if self.sealer is None else self.sealer(spec, revision)

    def remove_job(self, job: Job, purge: bool) -> int:
        """Delete `job`; with `purge` also its run history. Return the runs deleted."""
        with self._job_writes():
            purged = self._q("delete_job_runs", {"job_id": job.id}).rowcount if purge else 0
            if self._q("delete_job", {"id": job.id}).rowcount != 1:
                raise NotFoundError(f"no job named {job.name!r}: it was removed meanwhile")
        return int(purged)

    def apply_jobs(
        self,
        creates: list[JobSpec],
        updates: list[tuple[Job, JobSpec]],
        removes: list[Job],
        now: datetime,
    ) -> None:
        """Create, update and remove jobs in one transaction: all of it, or none of it.

        A job changed or removed since it was read, or a name taken meanwhile, raises
        ConflictError and nothing is stored.
        """
        name = ""
        try:
            with self._job_writes():
                for spec in creates:
                    name = spec.name
                    if self._q("job_id_by_name", {"name": spec.name}).rows:
                        raise _exists(spec.name)
                    params = {**_spec_params(spec), **_seal_params(self._seal(spec, 1)),
                              "now": now}  # fmt: skip
                    row = self._q("insert_job", params).one()
                    assert row is not None
                    self._record_change(int(row[0]), spec, now)
                for job, spec in updates:
                    self._check_signed(job)
                    seal = self._seal(spec, job.revision + 1)
                    params = {**_spec_params(spec), **_seal_params(seal), "now": now,
                              "id": job.id, "revision": job.revision}  # fmt: skip
                    if self._q("update_job", params).rowcount != 1:
                        raise _changed_meanwhile(job.name)
                    if _timing(spec) != _timing(job.spec):
                        self._record_change(job.id, spec, now)
                for job in removes:
                    params = {"id": job.id, "revision": job.revision}
                    if self._q("delete_job_at_revision", params).rowcount != 1:
                        raise _changed_meanwhile(job.name)
        except RefusedError as e:
            if e.unique:  # lost a race with a concurrent add of the same name
                raise _exists(name) from None
            raise

    def count_runs(self, job_id: int) -> int:
        """Return how many run rows reference the job."""
        row = self._q("count_job_runs", {"job_id": job_id}).one()
        assert row is not None
        return int(row[0])

    def _record_change(self, job_id: int, spec: JobSpec, now: datetime) -> None:
        """Remember when the job's schedule or enabled flag took its new value."""
        self._q(
            "insert_job_change",
            {"job_id": job_id, "at": now, "enabled": spec.enabled, "schedule": spec.schedule,
             "timezone": spec.timezone},
        )  # fmt: skip

    def changes_by_job(self) -> dict[int, list[JobChange]]:
        """Return every job's changes, oldest first."""
        from schedctl.history import JobChange

        out: dict[int, list[JobChange]] = defaultdict(list)
        for job_id, at, enabled, schedule, zone in self._q("job_changes").rows:
            out[job_id].append(JobChange(_time(at), bool(enabled), schedule, zone))
        return out

    def change_records(
        self, job: str | None, since: datetime | None, limit: int
    ) -> list[ChangeRecord]:
        """Return the recorded changes to jobs, newest first."""
        from schedctl.history import ChangeRecord

        params = {"job": job, "since": since, "any_since": since is None, "limit": limit}
        if job is None:
            rows = self._q("job_audit", params).dicts()
        else:
            rows = self._q("job_audit_of_job", params).dicts()
        out = []
        for d in rows:
            d["at"] = _time(d["at"])
            d["changes"] = _json(d["changes"])
            out.append(ChangeRecord(**d))
        return out

    def pruned_before(self) -> dict[int, datetime]:
        """Return, per job, the instant before which its history may have been pruned."""
        return {job_id: _time(at) for job_id, at in self._q("prune_marks").rows}

    # -- schedctl run -------------------------------------------------------------------------

    def claim(self, claim: Claim) -> int | None:
        """Insert-or-nothing on (job_id, slot): the fleet-wide claim of a slot."""
        c = claim
        try:
            row = self._q(
                "claim_slot",
                {"job_id": c.job.id, "job_name": c.job.name, "job_revision": c.job.revision,
                 "slot": c.slot, "trigger": c.trigger.value, "attempt": c.attempt,
                 "host": c.host, "pid": c.pid, "backend_pid": self.backend_pid(),
                 "claimed_at": c.claimed_at, "clock_skew_seconds": c.clock_skew_seconds,
                 "version": c.version, "fence_seconds": sane_fence(c.fence_seconds)},
            ).one()  # fmt: skip
        except RefusedError as e:
            if e.missing_parent:  # removed since it was loaded
                raise NotFoundError(f"no job named {c.job.name!r}: it was removed meanwhile") from e
            raise
        return None if row is None else int(row[0])

    def ran_before_readded(self, name: str, slot: datetime) -> bool:
        """Return whether a removed job of the same name already ran `slot`."""
        return bool(self._q("ran_before_readded", {"name": name, "slot": slot}).rows)

    def mark_started(self, run_id: int) -> datetime:
        """Record the start (by the server's clock on PostgreSQL): also the first heartbeat."""
        at = self.now() if self.backend == "sqlite" else None
        row = self._q("mark_started", {"run_id": run_id, "now": at}).one()
        assert row is not None
        return at or _time(row[0])

    def heartbeat(self, run_id: int, timeout: float | None = None) -> bool:
        """Touch heartbeat_at on this session; raise if the session is gone or answers late.

        Return False when the run's row is gone: its job was removed with `--purge` while it
        ran. The session, and so the lock, is fine then.
        """
        if isinstance(self.conn, SqliteConnector):
            # A local file: the busy timeout bounds the wait.
            return self._q("heartbeat", {"run_id": run_id, "now": self.now()}).rowcount == 1
        if self.conn.run("heartbeat", {"run_id": run_id}, timeout=timeout).rowcount == 1:
            return True
        if not self.conn.run("run_exists", {"run_id": run_id}, timeout=timeout).rows:
            return False
        # The row is there but names another backend: a transaction pooler moved us.
        raise TransactionPoolerError()

    def reown(self, run_id: int, old_pid: int | None) -> bool:
        """Take an unstarted run row back on this session, if it still names `old_pid`.

        False when another host marked it lost meanwhile, or its job started.
        """
        params = {"run_id": run_id, "old_pid": old_pid, "now": self._sqlite_now()}
        if self.backend == "postgresql":
            del params["now"]
        else:
            del params["old_pid"]
        return self._q("reown_run", params).one() is not None

    def abandon(self, run_id: int, old_pid: int | None) -> bool:
        """Record an unstarted run as `lost` with no start, if it still names `old_pid`."""
        params = {"run_id": run_id, "old_pid": old_pid, "now": self._sqlite_now()}
        if self.backend == "postgresql":
            del params["now"]
        else:
            del params["old_pid"]
        return self._q("abandon_run", params).rowcount == 1

    def fence_left(self, job_id: int, run_id: int) -> float | None:
        """Return the seconds until other runners' started runs of the job have surely stopped.

        SQLite has no fence: the flock is held by a live runner process only.
        """
        if self.backend == "sqlite":
            return None
        row = self._q(
            "fence_left",
            {**_FENCES, "job_id": job_id, "run_id": run_id},
        ).one()
        return None if row is None or row[0] is None else float(row[0])

    def finish(self, run_id: int, result: RunResult, runner: Runner | None = None) -> None:
        """Record the outcome; RecordRefusedError when no retry could ever store it.

        With `runner`, only on a row that `runner` claimed (see `same_runner` in queries.sql).
        """
        self._finish(run_id, result, spooled=False, runner=runner)

    def finish_spooled(self, run_id: int, result: RunResult, runner: Runner | None = None) -> None:
        """Record a spooled outcome of a run still `running` or `lost`.

        RecordRefusedError when the run has a final result already: the file is then a
        stale copy (a replay, a second runner's), not the run's outcome; or when the row is
        another runner's than `runner`.
        """
        self._finish(run_id, result, spooled=True, runner=runner)

    def _finish(self, run_id: int, result: RunResult, spooled: bool, runner: Runner | None) -> None:
        r = result
        # PostgreSQL text cannot hold NUL, and a job may well print one: store U+FFFD instead,
        # as for invalid UTF-8, rather than fail to record the run (spooled results too).
        tail = r.output_tail.replace("\x00", "\ufffd")
        try:
            values = {
                "status": r.status.value, "exit_code": r.exit_code, "signal": r.signal,
                "started_at": r.started_at, "finished_at": r.finished_at,
                "duration_seconds": r.duration_seconds, "output_tail": tail,
                "output_bytes": r.output_bytes, "output_truncated": r.output_truncated,
                "run_id": run_id,
                "host": runner.host if runner else None, "pid": runner.pid if runner else None,
            }  # fmt: skip
            if spooled:
                done = self._q("finish_spooled_run", values).rowcount
            else:
                done = self._q("finish_run", values).rowcount
        except RefusedError as e:
            raise RecordRefusedError(str(e)) from e
        if done == 0:
            row = self._q("run_status", {"run_id": run_id}).one()
            if row is None:
                raise RunGoneError(f"the database has no run {run_id}")
            if runner is not None and (row[1], row[2]) != (runner.host, runner.pid):
                raise RecordRefusedError(
                    f"run {run_id} in the database is another run (claimed by host {row[1]}, "
                    f"pid {row[2]}), not the one of host {runner.host}, pid {runner.pid}: this "
                    f"run's row is gone, as after a failover that lost the claim"
                )
            raise RecordRefusedError(
                f"run {run_id} is final already ({row[0]}); a spooled result does not replace it"
            )

    def reconcile_lost(self, host: str = "") -> int:
        """Mark `running` rows whose runner is gone as `lost`; return how many.

        PostgreSQL: any host's, once its session has ended and its fence passed. SQLite: this
        host's, whose runner process is gone.
        """
        if self.backend == "postgresql":
            return int(self._q("reconcile_lost", _FENCES).rowcount)
        rows = self._q("running_on_host", {"host": host}).rows
        gone = [run_id for run_id, pid in rows if pid is None or not _pid_alive(int(pid))]
        for run_id in gone:
            self._q("mark_lost", {"run_id": run_id, "now": self.now()})
        return len(gone)

    # -- history ------------------------------------------------------------------------------

    def list_runs(
        self,
        job: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        host: str | None = None,
        limit: int = 50,
    ) -> list[Run]:
        """Return runs newest first, filtered; the output tail is left out."""
        params = {
            "job": job, "status": status, "since": since, "host": host, "limit": limit,
            "any_status": status is None, "any_since": since is None, "any_host": host is None,
        }  # fmt: skip
        rows = self._q("history" if job is None else "history_of_job", params).dicts()
        return [_run(d) for d in rows]

    def get_run(self, run_id: int) -> Run:
        """Return one run with its output tail, or raise NotFoundError."""
        found = self._q("get_run", {"run_id": run_id}).dicts()
        if not found:
            raise NotFoundError(f"no run with id {run_id}: see `schedctl history` for run ids")
        return _run(found[0])

    def latest_run(self, job: str, failed_only: bool) -> Run | None:
        """Return `job`'s newest ended run (or failure) with its output tail, or None."""
        found = self._q("latest_run_of_job", {"job": job, "failed_only": failed_only}).dicts()
        return _run(found[0]) if found else None

    def running(self) -> tuple[dict[int, Run], dict[int, datetime | None]]:
        """Return the running attempt of each job that has one, and heartbeats by run id."""
        running: dict[int, Run] = {}
        beats: dict[int, datetime | None] = {}
        for d in self._q("running_runs").dicts():
            beat = as_time(d.pop("heartbeat_at"))
            run = _run(d)
            if run.job_id is not None:
                running[run.job_id] = run
            beats[run.id] = beat
        return running, beats

    def running_by_job(self) -> dict[int, Run]:
        """Return the running attempt of each job that has one."""
        return self.running()[0]

    def runs_since(self, since: datetime, job_ids: list[int], limit: int) -> list[Run]:
        """Return the newest `limit` runs of `job_ids` claimed since `since`, oldest first."""
        params = {"since": since, "job_ids": job_ids, "limit": limit}
        return [_run(d) for d in self._q("runs_since", params).dicts()][::-1]

    def lock_holders(self, namespace: int) -> list[tuple[int, int]]:
        """Return (job id, backend pid) for every granted schedctl job lock (PostgreSQL)."""
        return [(int(j), int(p)) for j, p in self._q("lock_holders", {"namespace": namespace}).rows]

    def app_lock_holders(
        self, namespace: int
    ) -> list[tuple[int, int, str | None, datetime | None]]:
        """Return (key, backend pid, application_name, since) per held in-app lock (PostgreSQL)."""
        rows = self._q("app_lock_holders", {"namespace": namespace}).rows
        return [(int(k), int(p), a, t) for k, p, a, t in rows]

    # -- report, check, metrics ---------------------------------------------------------------

    def window_stats(self, since: datetime, slots_to: datetime) -> dict[int, WindowStats]:
        """Return per-job counts and durations of runs claimed since `since`.

        `slots_present` counts first attempts whose slot lies in [since, slots_to]; a first
        attempt claimed a little before `since` (a host ahead of the database) counts too.
        """
        from schedctl.history import WindowStats
        from schedctl.schedule import MAX_EARLY

        params = {"since": since, "slots_to": slots_to, "scan_from": since - MAX_EARLY}
        durations: dict[int, list[float]] = defaultdict(list)
        if self.backend == "sqlite":
            # No percentile aggregate in SQLite; its histories are one host's, so this is small.
            for job_id, d in self._q("window_durations", params).rows:
                durations[job_id].append(float(d))
        out = {}
        for r in self._q("window_stats", params).dicts():
            if not (r["runs"] or r["early"]):
                continue
            if self.backend == "postgresql":
                p50, p95 = r["p50"], r["p95"]
            else:
                mine = durations[r["job_id"]]
                p50, p95 = percentile(mine, 0.5), percentile(mine, 0.95)
            # Every status that is not success, skip or running is a failure.
            failed = r["runs"] - r["succeeded"] - r["skipped"] - r["running"]
            out[r["job_id"]] = WindowStats(
                r["runs"], r["succeeded"], failed, r["skipped"], p50, p95, r["max"],
                r["present"] + r["early"],
            )  # fmt: skip
        return out

    def last_outcomes(self) -> dict[int, tuple[Outcome | None, Outcome | None]]:
        """Return per job its newest success and newest failure, of any age."""
        out: dict[int, tuple[Outcome | None, Outcome | None]] = {}
        for j, sid, sat, sdur, fid, fst, fat, fclaim, fdur in self._q("last_outcomes").rows:
            ok = None if sid is None else Outcome(sid, "succeeded", _time(sat), sdur)
            bad = None if fid is None else Outcome(fid, fst, _time(fat or fclaim), fdur)
            out[j] = (ok, bad)
        return out

    def slots_that_ran(self, pairs: Iterable[tuple[int, datetime]]) -> set[tuple[int, float]]:
        """Return which (job id, slot) pairs have a first attempt, as (job id, POSIX time)."""
        wanted = list(pairs)
        if not wanted:
            return set()
        params = {
            "job_ids": [j for j, _ in wanted],
            "epochs": [s.timestamp() for _, s in wanted],
            "pairs": [[j, s] for j, s in wanted],
        }
        return {(j, _time(s).timestamp()) for j, s in self._q("slots_that_ran", params).rows}

    def slots_between(self, job_id: int, start: datetime, end: datetime) -> list[datetime]:
        """Return the slots of a job's first attempts in [start, end]."""
        rows = self._q("slots_between", {"job_id": job_id, "start": start, "end": end}).rows
        return [_time(s) for (s,) in rows]

    def status_totals(self) -> dict[tuple[str, str], int]:
        """Return how many runs reached each final status, per job name; never counted down."""
        return {(j, s): int(n) for j, s, n in self._q("status_totals").rows}

    def check_data(self, names: list[str] | None, p95_since: datetime) -> CheckData:
        """Read the jobs (all, or `names`) and the history facts `check` needs."""
        jobs = [_judged_job(row) for row in self._q("check_jobs").rows]
        self.list_jobs()  # finds the malformed ones, the same way every command does
        malformed = [e for e in self.malformed.values() if names is None or e.job in names]
        jobs = [j for j in jobs if j.name not in self.malformed]
        if names is not None:
            jobs = [j for j in jobs if j.name in names]
        last = {}
        for d in self._q("newest_runs").dicts():
            run = _run(d)
            if run.job_id is not None:
                last[run.job_id] = run
        running, beats = self.running()
        refused: dict[int, list[RefusalRow]] = defaultdict(list)
        for r in self.refusals():
            refused[r.job_id].append(r)
        return CheckData(
            jobs, self.changes_by_job(), self.pruned_before(), last, running, beats,
            self._p95(sorted(running), p95_since), refused, malformed,
        )  # fmt: skip

    def _p95(self, job_ids: list[int], since: datetime) -> dict[int, float]:
        """Return the p95 duration of successful runs since `since` of each of `job_ids`."""
        if not job_ids:
            return {}
        params = {"job_ids": job_ids, "since": since}
        if self.backend == "postgresql":
            rows = self._q("p95_of_jobs", params).rows
            return {j: float(p) for j, p, n in rows if n >= MIN_SAMPLES}
        durations: dict[int, list[float]] = defaultdict(list)
        for j, d in self._q("durations_of_jobs", params).rows:
            durations[j].append(float(d))
        out = {}
        for j, mine in durations.items():
            p95 = percentile(mine, 0.95)
            if len(mine) >= MIN_SAMPLES and p95 is not None:
                out[j] = p95
        return out

    # -- prune --------------------------------------------------------------------------------

    def _prune_counts(self, plan: list[Cutoffs], claimable: bool) -> Counter[str]:
        out: Counter[str] = Counter()
        for c in plan:
            if c.job_id is None:
                name = None if claimable else "prune_count_removed"
            else:
                name = "prune_count_claimable" if claimable else "prune_count"
            if name is not None:
                out.update({n: int(k) for n, k in self._q(name, c.params()).rows})
        return out

    def prune_count(self, plan: list[Cutoffs]) -> Counter[str]:
        """Return how many runs each job would lose, by job name."""
        return self._prune_counts(plan, claimable=False)

    def prune_kept(self, plan: list[Cutoffs]) -> Counter[str]:
        """Return how many runs past their retention stay because a firing may claim their slot."""
        return self._prune_counts(plan, claimable=True)

    def prune_delete(
        self, plan: list[Cutoffs], batch: int, progress: Callable[[int], None]
    ) -> Counter[str]:
        """Delete what `prune_count` reports, `batch` rows per transaction; return by job."""
        out: Counter[str] = Counter()
        for c in plan:
            name = "prune_delete_removed" if c.job_id is None else "prune_delete"
            while True:
                # One short transaction per batch: runners claiming and finishing meanwhile
                # never wait long behind a large deletion.
                done = Counter(n for (n,) in self._q(name, {**c.params(), "batch": batch}).rows)
                out.update(done)
                progress(sum(done.values()))
                if sum(done.values()) < batch:
                    break
        return out

    def prune_mark(self, marks: dict[int, datetime]) -> None:
        """Record, per job, that runs claimed before the instant may be gone.

        A job removed since `prune` read the jobs has nothing to mark (its marks go with it),
        so it is passed over rather than failing the whole prune.
        """
        for job_id, at in marks.items():
            try:
                self._q("prune_mark", {"job_id": job_id, "pruned_before": at})
            except RefusedError:
                if job_id in self.job_names():
                    raise

    # -- notifications ------------------------------------------------------------------------

    def claim_notifications(
        self, owner: str, lease: float, limit: int, run_ids: list[int] | None = None
    ) -> list[dict[str, Any]]:
        """Claim up to `limit` due notifications (of `run_ids` only, if given) for `lease` s.

        Return each with its run's fields; a row another deliverer holds is never returned.
        """
        params: dict[str, Any] = {
            "owner": owner, "lease": lease, "limit": limit, "any_run": run_ids is None,
            "run_ids": run_ids or [],
        }  # fmt: skip
        if self.backend == "postgresql":
            rows = self._q("claim_notifications", params).dicts()
        else:
            now = self.now()
            params.update(now=now, lease_end=now + timedelta(seconds=lease))
            params["run_ids"] = json.dumps(params["run_ids"])
            with self._transaction():
                ids = [int(i) for (i,) in self._q("claim_notifications", params).rows]
                rows = self._q("claimed_notifications", {"ids": json.dumps(ids)}).dicts()
        for row in rows:
            for col in ("slot", "started_at", "finished_at", "claimed_at"):
                row[col] = as_time(row[col])
        return rows

    def notification_sent(self, notification_id: int, owner: str) -> bool:
        """Mark a claimed notification sent; False when the claim was no longer ours."""
        params = {"id": notification_id, "owner": owner, "now": self._sqlite_now()}
        return self._q("notification_sent", params).rowcount == 1

    def notification_retry(
        self, notification_id: int, owner: str, delay: float, error: str
    ) -> None:
        """Release a claimed notification to be tried again after `delay` seconds."""
        now = self._sqlite_now()
        params = {"id": notification_id, "owner": owner, "delay": delay, "error": error,
                  "next_at": None if now is None else now + timedelta(seconds=delay)}  # fmt: skip
        self._q("notification_retry", params)

    def notification_release(self, notification_id: int, owner: str) -> None:
        """Release a claimed notification untried, its attempt not counted."""
        self._q("notification_release", {"id": notification_id, "owner": owner})

    def notification_gave_up(self, notification_id: int, owner: str, error: str) -> None:
        """Record that a claimed notification will not be tried again."""
        params = {"id": notification_id, "owner": owner, "error": error, "now": self._sqlite_now()}
        self._q("notification_gave_up", params)

    def insert_missed(self, job: Job, slot: datetime, target: str, now: datetime) -> bool:
        """Add the notification of a missed slot unless a host already did; return if added."""
        params = {"job_id": job.id, "job_name": job.name, "slot": slot, "target": target,
                  "now": now}  # fmt: skip
        return self._q("insert_missed", params).rowcount == 1

    def delete_old_notifications(self, before: datetime) -> int:
        """Delete sent and abandoned notifications created before `before`."""
        return int(self._q("delete_old_notifications", {"before": before}).rowcount)

    def notification_counts(self) -> dict[str, int]:
        """Return how many notifications are in each state."""
        return {str(s): int(n) for s, n in self._q("notification_counts").rows}

    def _sqlite_now(self) -> datetime | None:
        # PostgreSQL's statements read the server's clock themselves.
        return self.now() if self.backend == "sqlite" else None


def open_repository(
    url: DatabaseURL,
    clock: Clock,
    application_name: str = "schedctl",
    busy_seconds: float | None = None,
    retry_seconds: float | None = None,
) -> Repository:
    """Connect to `url` without looking at the schema."""
    return Repository(
        connect(url, application_name, busy_seconds or SQLITE_BUSY, retry_seconds), clock
    )


def open_current(url: DatabaseURL, clock: Clock, application_name: str = "schedctl") -> Repository:
    """Connect and make sure the schema is usable.

    The embedded SQLite default creates and upgrades its own schema; a shared PostgreSQL
    schema is only changed by an explicit `schedctl db upgrade`.
    """
    repo = open_repository(url, clock, application_name)
    try:
        st = repo.schema_status()
        if url.backend == "sqlite" and st.state in ("missing", "behind"):
            repo.upgrade()
        else:
            require_current(st)
    except BaseException:
        repo.close()
        raise
    return repo


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
