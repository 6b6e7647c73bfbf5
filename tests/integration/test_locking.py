"""Job locks on a real PostgreSQL server and with real flock, across processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from schedctl.clock import SystemClock
from schedctl.config import parse_database_url
from schedctl.db import libpq
from schedctl.db.connector import PgConnector
from schedctl.db.repository import open_repository
from schedctl.locking import LOCK_NAMESPACE, FileLock, PgAdvisoryLock, acquire_within


class Session(PgConnector):
    """A session like the one `schedctl run` holds its lock on."""

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def backend_pid(self) -> int:  # type: ignore[override]
        return self.session.backend_pid

    def execute(self, sql: str, params: tuple[object, ...] = ()) -> libpq.Result:
        return self.session.execute(sql, params)


def connect(url: str) -> Session:
    return Session(parse_database_url(url))


def test_pg_lock_is_exclusive_per_job_and_released(pg_url: str) -> None:
    with connect(pg_url) as a, connect(pg_url) as b:
        first, second = PgAdvisoryLock(a, 7), PgAdvisoryLock(b, 7)
        assert first.try_acquire()
        assert not second.try_acquire()
        assert PgAdvisoryLock(b, 8).try_acquire()  # another job is independent
        store = open_repository(parse_database_url(pg_url), SystemClock())
        try:
            holders = dict(store.lock_holders(LOCK_NAMESPACE))
        finally:
            store.close()
        assert holders[7] == a.backend_pid
        assert holders[8] == b.backend_pid
        first.release()
        first.release()  # idempotent
        assert second.try_acquire()


def test_pg_lock_vanishes_with_its_session(pg_url: str) -> None:
    with connect(pg_url) as admin, connect(pg_url) as other:
        holder = connect(pg_url)
        assert PgAdvisoryLock(holder, 9).try_acquire()
        assert not PgAdvisoryLock(other, 9).try_acquire()
        # What a crashed host or a restarted server does to the session:
        admin.execute("SELECT pg_terminate_backend(%s)", (holder.backend_pid,))
        deadline = time.monotonic() + 5
        while not PgAdvisoryLock(other, 9).try_acquire():
            assert time.monotonic() < deadline, "lock not freed after its session ended"
            time.sleep(0.05)
        with pytest.raises(libpq.PgOperationalError):
            holder.execute("SELECT 1")  # the runner notices on its next heartbeat
        holder.close()


def test_queue_waits_for_the_lock_up_to_a_bound(pg_url: str) -> None:
    with connect(pg_url) as a, connect(pg_url) as b:
        held = PgAdvisoryLock(a, 11)
        assert held.try_acquire()
        started = time.monotonic()
        assert not acquire_within(PgAdvisoryLock(b, 11), 0.6, sleep=0.1)
        assert 0.55 < time.monotonic() - started < 2
        held.release()
        assert acquire_within(PgAdvisoryLock(b, 11), 0.6, sleep=0.1)


HOLD = """
import sys, time
from pathlib import Path
from schedctl.locking import FileLock
lock = FileLock(Path(sys.argv[1]), 5)
print("held" if lock.try_acquire() else "busy", flush=True)
time.sleep(60)
"""


def test_file_lock_across_processes_and_after_kill_9(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        mine = FileLock(tmp_path, 5)
        assert not mine.try_acquire()
        assert mine.holder_pid() == holder.pid
        assert FileLock(tmp_path, 6).try_acquire()  # another job is independent
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        assert mine.holder_pid() is None
        assert mine.try_acquire()
        assert (tmp_path / "5.lock").stat().st_mode & 0o777 == 0o600
        mine.release()
    finally:
        holder.kill()
        holder.wait()
