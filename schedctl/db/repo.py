"""The Store: a database handle plus the repository functions for jobs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.engine import Connection, Engine

from schedctl.config import DatabaseURL
from schedctl.db import schema
from schedctl.db.engine import make_engine, translated
from schedctl.db.rundb import JSON_COLUMNS, job_from_json_text
from schedctl.db.tables import job_changes, jobs, runs
from schedctl.errors import ConflictError, NotFoundError
from schedctl.history import Run
from schedctl.models import Job, JobSpec

# Jobs are read with their JSON columns as text and decoded like the run path's: the driver's
# per-value JSON loader took ~10 ms for the 3,000 small values of 1,000 jobs, json.loads ~5 ms.
_JOB_SELECT = sa.select(
    *(sa.cast(c, sa.Text).label(c.name) if c.name in JSON_COLUMNS else c for c in jobs.c)
)


class Store:
    """Job definitions and run history in one database."""

    def __init__(self, url: DatabaseURL, engine: Engine) -> None:
        self.url = url
        self.engine = engine

    @classmethod
    def connect(cls, url: DatabaseURL) -> Store:
        """Create a store for `url` without touching the schema."""
        return cls(url, make_engine(url))

    @classmethod
    def open(cls, url: DatabaseURL) -> Store:
        """Connect and make sure the schema is usable.

        The embedded SQLite default creates and upgrades its own schema; a shared PostgreSQL
        schema is only changed by an explicit `schedctl db upgrade`.
        """
        store = cls.connect(url)
        st = store.schema_status()
        if url.backend == "sqlite" and st.state in ("missing", "behind"):
            store.upgrade()
        else:
            schema.require_current(st)
        return store

    def close(self) -> None:
        """Release pooled connections."""
        self.engine.dispose()

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        """Run statements in one transaction, database errors turned into schedctl's."""
        with translated(self.url), self.engine.begin() as conn:
            yield conn

    def schema_status(self) -> schema.SchemaStatus:
        """Return where the schema stands."""
        with self.tx() as conn:
            return schema.status(conn)

    def upgrade(self) -> tuple[str | None, str]:
        """Migrate to the newest schema."""
        with translated(self.url):
            return schema.upgrade(self.engine)

    def db_now(self) -> datetime:
        """Return the database's clock (SQLite: this host's), timezone-aware."""
        with self.tx() as conn:
            if conn.dialect.name == "sqlite":
                return datetime.now(UTC)
            value = conn.execute(sa.text("SELECT now()")).scalar_one()
        assert isinstance(value, datetime)
        return value

    def server_version(self) -> str:
        """Return the database server's version string."""
        with self.tx() as conn:
            if conn.dialect.name == "sqlite":
                return "SQLite " + str(conn.execute(sa.text("SELECT sqlite_version()")).scalar())
            return str(conn.execute(sa.text("SHOW server_version")).scalar())

    # -- jobs -------------------------------------------------------------------------------

    def add_job(self, spec: JobSpec, now: datetime) -> Job:
        """Insert a new job; raise ConflictError if the name is taken."""
        values = {**_spec_values(spec), "created_at": now, "updated_at": now, "revision": 1}
        try:
            with self.tx() as conn:
                if _name_taken(conn, spec.name):
                    raise _exists(spec.name)
                new_id = conn.execute(
                    jobs.insert().values(values).returning(jobs.c.id)
                ).scalar_one()
                _record_change(conn, new_id, spec, now)
        except exc.IntegrityError:
            # Lost a race with a concurrent add of the same name.
            raise _exists(spec.name) from None
        return Job(id=new_id, spec=spec, revision=1, created_at=now, updated_at=now)

    def get_job(self, name: str) -> Job:
        """Return the job called `name`, or raise NotFoundError."""
        with self.tx() as conn:
            row = conn.execute(_JOB_SELECT.where(jobs.c.name == name)).mappings().first()
        if row is None:
            raise NotFoundError(
                f"no job named {name!r}: see `schedctl list` for the jobs there are"
            )
        return job_from_json_text(dict(row))

    def list_jobs(self) -> list[Job]:
        """Return every job, ordered by name."""
        with self.tx() as conn:
            rows = conn.execute(_JOB_SELECT.order_by(jobs.c.name)).mappings().all()
        return [job_from_json_text(dict(r)) for r in rows]

    def update_job(self, job: Job, spec: JobSpec, now: datetime) -> Job:
        """Store `spec` for `job` if nobody changed it meanwhile; bump its revision."""
        values = {**_spec_values(spec), "updated_at": now, "revision": job.revision + 1}
        with self.tx() as conn:
            done = conn.execute(
                jobs.update()
                .where(jobs.c.id == job.id, jobs.c.revision == job.revision)
                .values(values)
            ).rowcount
            if done == 1 and _timing(spec) != _timing(job.spec):
                _record_change(conn, job.id, spec, now)
        if done != 1:
            raise ConflictError(
                f"job {job.name!r} was changed or removed by someone else meanwhile: "
                f"look at `schedctl show {job.name}` and try again"
            )
        return Job(job.id, spec, job.revision + 1, job.created_at, now)

    def remove_job(self, job: Job, purge: bool) -> int:
        """Delete `job`; with `purge` also its run history. Return the runs deleted."""
        with self.tx() as conn:
            purged = 0
            if purge:
                purged = conn.execute(runs.delete().where(runs.c.job_id == job.id)).rowcount
            done = conn.execute(jobs.delete().where(jobs.c.id == job.id)).rowcount
            if done != 1:
                raise NotFoundError(f"no job named {job.name!r}: it was removed meanwhile")
        return purged

    def count_runs(self, job_id: int) -> int:
        """Return how many run rows reference the job."""
        with self.tx() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).select_from(runs).where(runs.c.job_id == job_id)
                ).scalar_one()
            )

    # -- runs ---------------------------------------------------------------------------------

    def list_runs(
        self,
        job: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        host: str | None = None,
        limit: int = 50,
    ) -> list[Run]:
        """Return runs newest first, filtered; the output tail is left out."""
        query = sa.select(*RUN_COLUMNS).order_by(runs.c.id.desc()).limit(limit)
        if job is not None:
            query = query.where(runs.c.job_name == job)
        if status is not None:
            query = query.where(runs.c.status == status)
        if since is not None:
            query = query.where(runs.c.claimed_at >= since)
        if host is not None:
            query = query.where(runs.c.host == host)
        with self.tx() as conn:
            return [Run(**row) for row in conn.execute(query).mappings()]

    def get_run(self, run_id: int) -> Run:
        """Return one run with its output tail, or raise NotFoundError."""
        with self.tx() as conn:
            row = (
                conn.execute(sa.select(*RUN_COLUMNS, runs.c.output_tail).where(runs.c.id == run_id))
                .mappings()
                .first()
            )
        if row is None:
            raise NotFoundError(f"no run with id {run_id}: see `schedctl history` for run ids")
        return Run(**row)

    def running_by_job(self) -> dict[int, Run]:
        """Return the running attempt of each job that has one."""
        query = sa.select(*RUN_COLUMNS).where(runs.c.status == "running").order_by(runs.c.id)
        with self.tx() as conn:
            return {r["job_id"]: Run(**r) for r in conn.execute(query).mappings() if r["job_id"]}

    def job_names(self) -> dict[int, str]:
        """Return job names by id."""
        with self.tx() as conn:
            return {r.id: r.name for r in conn.execute(sa.select(jobs.c.id, jobs.c.name))}

    def pg_lock_holders(self, namespace: int) -> list[tuple[int, int]]:
        """Return (job id, backend pid) for every granted schedctl job lock (PostgreSQL)."""
        with self.tx() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT objid::int AS job_id, pid FROM pg_locks WHERE locktype = 'advisory' "
                    "AND granted AND objsubid = 2 AND classid = :ns ORDER BY objid"
                ),
                {"ns": namespace},
            )
            return [(int(r.job_id), int(r.pid)) for r in rows]


RUN_COLUMNS = [
    c for c in runs.c if c.name not in ("output_tail", "db_backend_pid", "heartbeat_at",
                                         "job_revision", "schedctl_version", "fence_seconds")
]  # fmt: skip


def _exists(name: str) -> ConflictError:
    return ConflictError(
        f"a job named {name!r} already exists: pick another name or change it with "
        f"`schedctl edit {name}`"
    )


def _name_taken(conn: Connection, name: str) -> bool:
    return conn.execute(sa.select(jobs.c.id).where(jobs.c.name == name)).first() is not None


def _timing(spec: JobSpec) -> tuple[bool, str, str]:
    return spec.enabled, spec.schedule, spec.timezone


def _record_change(conn: Connection, job_id: int, spec: JobSpec, now: datetime) -> None:
    """Remember when the job's schedule or enabled flag took its new value."""
    conn.execute(
        job_changes.insert().values(
            job_id=job_id, at=now, enabled=spec.enabled, schedule=spec.schedule,
            timezone=spec.timezone,
        )
    )  # fmt: skip


def _spec_values(spec: JobSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "command": list(spec.command),
        "shell": spec.shell,
        "schedule": spec.schedule,
        "timezone": spec.timezone,
        "timeout_seconds": spec.timeout_seconds,
        "concurrency": spec.concurrency.value,
        "catch_up": spec.catch_up.value,
        "jitter_seconds": spec.jitter_seconds,
        "retries": spec.retries,
        "retry_delay_seconds": spec.retry_delay_seconds,
        "env": dict(spec.env),
        "workdir": spec.workdir,
        "run_as_user": spec.run_as_user,
        "description": spec.description,
        "tags": list(spec.tags),
        "enabled": spec.enabled,
        "output_limit_bytes": spec.output_limit_bytes,
        "retention_seconds": spec.retention_seconds,
    }
