"""Per-job locks: a PostgreSQL session advisory lock, or flock on a file for SQLite.

A lock is held by a session (PostgreSQL) or an open file (flock) and vanishes with it, so a
runner that dies cannot leave a job locked. Kept free of heavy imports: `schedctl run` uses it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from pathlib import Path
from typing import Any, Protocol

from schedctl.datadir import private_dir
from schedctl.errors import ConfigError, TransactionPoolerError

# First key of pg_try_advisory_lock(int4, int4); the second is the job id. Applications that
# share the database must not use this first key for their own advisory locks.
LOCK_NAMESPACE = 0x5C4ED01
_QUEUE_POLL_SECONDS = 0.5


class _Rows(Protocol):
    def one(self) -> Any: ...


class Statements(Protocol):
    """An autocommit PostgreSQL session that runs the named statements of db/queries.sql."""

    def run(self, name: str, params: dict[str, Any], /) -> _Rows:
        """Execute the named statement."""
        ...


class JobLock(Protocol):
    """A lock on one job, held until released or its holder dies."""

    def prepare(self) -> None:
        """Get ready to lock, refusing (ConfigError) what is unsafe; done before the claim."""
        ...

    def try_acquire(self) -> bool:
        """Take the lock if it is free; return whether we hold it."""
        ...

    def release(self) -> None:
        """Let the lock go (idempotent)."""
        ...


def acquire_within(lock: JobLock, seconds: float, sleep: float = _QUEUE_POLL_SECONDS) -> bool:
    """Try to take `lock` until `seconds` have passed (the `queue` concurrency policy)."""
    deadline = time.monotonic() + seconds
    while True:
        if lock.try_acquire():
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(sleep, left))


class PgAdvisoryLock:
    """pg_try_advisory_lock(LOCK_NAMESPACE, job_id) on the run's own session.

    Through a pooler (`pooled_pid`: the server backend the session was pinned to), the
    statement also proves it ran on that backend, and that the backend did not hold the lock
    already: a backend a transaction pool shares would hand another client's lock to us.
    """

    def __init__(self, conn: Statements, job_id: int, pooled_pid: int | None = None) -> None:
        self.conn = conn
        self.job_id = job_id
        self.pooled_pid = pooled_pid
        self.held = False

    def prepare(self) -> None:
        """Nothing to do: the lock lives on the run's session."""

    def try_acquire(self) -> bool:
        """Take the lock without waiting."""
        key = {"namespace": LOCK_NAMESPACE, "job_id": self.job_id}
        if self.pooled_pid is None:
            row = self.conn.run("try_lock", key).one()
            self.held = bool(row and row[0])
            return self.held
        row = self.conn.run("try_lock_pinned", {**key, "pinned_pid": self.pooled_pid}).one()
        if row is None or row[0] != self.pooled_pid:
            raise TransactionPoolerError()
        self.held = bool(row[1])
        return self.held

    def release(self) -> None:
        """Unlock; a dead session has already dropped it, so errors are ignored."""
        if not self.held:
            return
        self.held = False
        with contextlib.suppress(Exception):
            self.conn.run("unlock", {"namespace": LOCK_NAMESPACE, "job_id": self.job_id})


class FileLock:
    """flock(LOCK_EX | LOCK_NB) on `DIR/KEY.lock`; the holder's pid is written inside.

    `record` replaces the pid as what is written (in-app locks add the host and name).
    """

    def __init__(self, lock_dir: Path, key: int | str, record: str | None = None) -> None:
        self.path = lock_dir / f"{key}.lock"
        self.record = record
        self._fd: int | None = None
        self._held = False

    def prepare(self) -> None:
        """Open (creating) the lock file; ConfigError if it or its directory is not safe."""
        if self._fd is not None:
            return
        private_dir(self.path.parent, "lock directory", create=True, link_ok=False)
        try:
            # Never through a symlink: it would make us truncate and write whatever it names.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
            raise ConfigError(
                f"unsafe lock file {self.path}: it is a symlink; remove it (`rm {self.path}`)"
            ) from None
        st = os.fstat(fd)
        # Another owner or a second name (a hard link) means it is someone else's file.
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_nlink != 1:
            os.close(fd)
            raise ConfigError(
                f"unsafe lock file {self.path}: not a plain file of this user's; check what it "
                f"is, then remove it (`rm {self.path}`)"
            )
        self._fd = fd

    def try_acquire(self) -> bool:
        """Take the lock without waiting; ConfigError if the lock file is not safe."""
        if self._held:
            return True
        self.prepare()
        assert self._fd is not None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        os.ftruncate(self._fd, 0)
        os.write(self._fd, (self.record or f"{os.getpid()}\n").encode())
        self._held = True
        return True

    def release(self) -> None:
        """Unlock by closing the file (the file itself stays, so its inode is reused)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._held = False

    def holder_pid(self) -> int | None:
        """Return the pid of the process holding the lock, or None if it is free."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None  # no lock file, or not one schedctl made
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.read(fd, 32).decode(errors="replace").strip()
                return int(text) if text.isdigit() else -1
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)
