"""The run path's plain-driver data access, on SQLite and a real PostgreSQL server."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from dbtools import engine_of
from pgserver import PgServer, free_port

from schedctl import services
from schedctl.clock import FixedClock, SystemClock
from schedctl.config import parse_database_url
from schedctl.db import schema
from schedctl.db.connector import PgConnector
from schedctl.db.repository import (
    Claim,
    Repository,
    RunResult,
    open_current,
    open_repository,
)
from schedctl.db.tables import runs
from schedctl.errors import DatabaseAuthError, DatabaseUnavailableError, NotFoundError, SchemaError
from schedctl.models import JobSpec, RunStatus, Trigger

SLOT = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
SPEC = JobSpec(
    name="report",
    schedule="0 * * * *",
    timezone="Europe/Berlin",
    command=("/bin/echo", "a b"),
    env=(("K", "v"),),
    tags=("t",),
)


def run_db(store: Repository) -> Repository:
    """Open a session of its own on the store's database, as `schedctl run` does."""
    return open_repository(store.url, SystemClock(), "schedctl run")


def claim_for(
    store: Repository, host: str, slot: datetime | None = SLOT, attempt: int = 1
) -> Claim:
    job = store.load_job("report")
    return Claim(
        job=job, slot=slot, trigger=Trigger.TIMER, attempt=attempt, host=host, pid=4242,
        claimed_at=datetime.now(UTC), clock_skew_seconds=0.5, version="test",
    )  # fmt: skip


@pytest.fixture
def job_store(store: Repository) -> Repository:
    services.add_job(store, SPEC, FixedClock(datetime(2026, 11, 1, 9, 30, 15, 123456, tzinfo=UTC)))
    return store


def test_load_job_matches_the_store(job_store: Repository) -> None:
    db = run_db(job_store)
    try:
        db.check_schema()
        assert db.load_job("report") == job_store.load_job("report")
        with pytest.raises(NotFoundError, match="no job named 'ghost'"):
            db.load_job("ghost")
    finally:
        db.close()


def test_claim_once_per_slot_then_retries_and_manual_runs(job_store: Repository) -> None:
    db = run_db(job_store)
    try:
        first = db.claim(claim_for(job_store, "h1"))
        assert first is not None
        assert db.claim(claim_for(job_store, "h2")) is None  # same slot, another host
        assert db.claim(claim_for(job_store, "h1", attempt=2)) is not None  # a retry
        assert db.claim(claim_for(job_store, "h1", slot=SLOT + timedelta(hours=1))) is not None
        assert db.claim(claim_for(job_store, "h1", slot=None)) is not None  # manual
        assert db.claim(claim_for(job_store, "h2", slot=None)) is not None  # manual, again
    finally:
        db.close()
    with engine_of(job_store).connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(runs)).scalar_one() == 5


def test_thirty_concurrent_claims_of_one_slot_yield_one_row(job_store: Repository) -> None:
    results: list[int | None] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(30)
    lock = threading.Lock()
    claims = [claim_for(job_store, f"host-{i}") for i in range(30)]

    def racer(i: int) -> None:
        try:
            db = run_db(job_store)  # each racer has its own session, like a host
            try:
                barrier.wait()
                got = db.claim(claims[i])
            finally:
                db.close()
            with lock:
                results.append(got)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(results) == 30
    assert len([r for r in results if r is not None]) == 1
    with engine_of(job_store).connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(runs)).scalar_one() == 1


def test_results_read_back_through_the_store(job_store: Repository) -> None:
    db = run_db(job_store)
    try:
        run_id = db.claim(claim_for(job_store, "h1"))
        assert run_id is not None
        started = db.mark_started(run_id)
        db.heartbeat(run_id)
        db.finish(
            run_id,
            RunResult(
                status=RunStatus.FAILED, exit_code=3, signal=None, started_at=started,
                finished_at=started + timedelta(seconds=2), duration_seconds=2.0,
                output_tail="caf\ufffd\n", output_bytes=5, output_truncated=False,
            ),
        )  # fmt: skip
    finally:
        db.close()
    with engine_of(job_store).connect() as conn:
        row = conn.execute(sa.select(runs)).mappings().one()
    assert row["slot"] == SLOT
    assert row["started_at"] == started
    assert row["finished_at"] == started + timedelta(seconds=2)
    assert row["heartbeat_at"] is not None and row["heartbeat_at"].tzinfo is not None
    assert (row["status"], row["exit_code"], row["output_tail"]) == ("failed", 3, "caf\ufffd\n")
    assert row["job_name"] == "report" and row["host"] == "h1"


def test_postgres_clock_and_lost_runner_reconciliation(pg_url: str) -> None:
    url = parse_database_url(pg_url)
    schema.upgrade(url)
    store = open_current(url, SystemClock())
    services.add_job(store, SPEC, SystemClock())
    runner, other = (
        open_repository(url, SystemClock(), "schedctl run"),
        open_repository(url, SystemClock(), "schedctl run"),
    )
    try:
        assert abs((runner.now() - datetime.now(UTC)).total_seconds()) < 5
        run_id = runner.claim(claim_for(store, "h1"))
        assert run_id is not None
        assert other.reconcile_lost("h2") == 0  # its session is alive
        runner.close()  # the runner's session ends, as when its host dies
        deadline = datetime.now(UTC) + timedelta(seconds=5)
        while other.reconcile_lost("h2") == 0:
            assert datetime.now(UTC) < deadline, "dead session never reconciled"
        with engine_of(store).connect() as conn:
            assert conn.execute(sa.select(runs.c.status)).scalar_one() == "lost"
    finally:
        other.close()
        store.close()


def test_sqlite_lost_runner_reconciliation(sqlite_url: str) -> None:
    url = parse_database_url(sqlite_url)
    store = open_current(url, SystemClock())
    services.add_job(store, SPEC, SystemClock())
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    db = open_repository(url, SystemClock())
    try:
        claim = claim_for(store, "h1")
        gone = claim._replace(pid=int(dead.stdout))
        assert db.claim(gone) is not None
        assert db.reconcile_lost("other-host") == 0  # only this host's runners are judged
        assert db.reconcile_lost("h1") == 1
        # A pid that is alive but not a schedctl process (pid reuse) is not the runner either.
        stranger = subprocess.Popen(["sleep", "30"])
        try:
            reused = claim._replace(slot=None, pid=stranger.pid)
            assert db.claim(reused) is not None
            assert db.reconcile_lost("h1") == 1
        finally:
            stranger.kill()
            stranger.wait()
    finally:
        db.close()
    with engine_of(store).connect() as conn:
        assert conn.execute(sa.select(runs.c.status)).scalars().all() == ["lost", "lost"]


def test_schema_missing_and_connection_errors(pg: PgServer, pg_url: str) -> None:
    db = open_repository(parse_database_url(pg_url), SystemClock(), "schedctl run")
    try:
        with pytest.raises(SchemaError, match="schedctl db upgrade"):
            db.check_schema()
    finally:
        db.close()
    with pytest.raises(DatabaseUnavailableError, match="cannot reach the database"):
        open_repository(
            parse_database_url(f"postgresql://u:pw@127.0.0.1:{free_port()}/x"), SystemClock()
        )
    wrong = pg.url(pg_url.rsplit("/", 1)[1], password="wrong-password-7")
    with pytest.raises(DatabaseAuthError) as info:
        open_repository(parse_database_url(wrong), SystemClock(), "schedctl run")
    assert "wrong-password-7" not in str(info.value)


def test_job_columns_follow_the_table() -> None:
    from schedctl.db import queries
    from schedctl.db.tables import jobs

    with open(queries.PATH, encoding="utf-8") as f:
        fragment = queries.parse(f.read())[("{job_columns}", None)]
    assert [c.strip() for c in fragment.split(",")] == [c.name for c in jobs.columns]


def test_run_path_modules_load_no_heavy_framework() -> None:
    code = (
        "import sys\n"
        "import schedctl.db.repository, schedctl.runner, schedctl.locking, schedctl.services\n"
        "import schedctl.trust, schedctl.signing\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('sqlalchemy', 'typer', 'rich', 'click', 'alembic'))\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_run_sessions_ask_the_server_for_keepalives(pg_url: str) -> None:
    db = open_repository(parse_database_url(pg_url), SystemClock(), "schedctl run")
    assert isinstance(db.conn, PgConnector)
    session = db.conn.session
    try:
        settings = {
            name: session.execute(f"SHOW {name}", ()).fetchone()[0]  # type: ignore[index]
            for name in ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count")
        }
    finally:
        db.close()
    assert settings == {
        "tcp_keepalives_idle": "20",
        "tcp_keepalives_interval": "5",
        "tcp_keepalives_count": "3",
    }


def test_locks_reports_a_claimed_run_holding_its_lock_before_it_starts(
    job_store: Repository, tmp_path: Path
) -> None:
    # The runner takes its lock between the claim and the recorded start; `locks` shown in that
    # window gave `since: null` (seen once in CI). The claim time bounds when the lock was taken.
    from schedctl import operate
    from schedctl.locking import FileLock, JobLock, PgAdvisoryLock

    db = run_db(job_store)
    try:
        run_id = db.claim(claim_for(db, "h-lock"))
        assert run_id is not None
        job = db.load_job("report")
        lock: JobLock = (
            PgAdvisoryLock(db.session, job.id, db.pooled_pid)
            if job_store.url.backend == "postgresql"
            else FileLock(tmp_path / "locks", job.id)
        )
        assert lock.try_acquire()
        try:
            (held,) = operate.lock_holders(job_store, tmp_path / "locks")
            claimed = job_store.get_run(run_id).claimed_at
            assert (held.run_id, held.host, held.since) == (run_id, "h-lock", claimed)
            started = db.mark_started(run_id)
            (held,) = operate.lock_holders(job_store, tmp_path / "locks")
            assert held.since == started
        finally:
            lock.release()
        assert operate.lock_holders(job_store, tmp_path / "locks") == []
    finally:
        db.close()
