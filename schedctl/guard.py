"""In-app locks: `advisory_lock` and `@single_instance` for application code (docs/in-app-locks.md).

PostgreSQL: a session advisory lock `(APP_LOCK_NAMESPACE, key of the name)` on a session of
its own, opened when the lock is taken and closed when it is let go, so a lock never outlives
its process and a forked child never shares its parent's session. SQLite: flock on a file in
the data directory's lock directory. Either way the lock vanishes with the process holding it.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import threading
import time
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, ParamSpec, TypeVar
from urllib.parse import quote, unquote

from schedctl import config, log
from schedctl.locking import FileLock

if TYPE_CHECKING:
    from schedctl.db.connector import PgConnector

# First key of pg_try_advisory_lock(int4, int4) for in-app locks; the second is `lock_key`.
# Job locks use LOCK_NAMESPACE (0x5C4ED01): the two never meet.
APP_LOCK_NAMESPACE = 0x5C4ED02
APP_LOCK_PREFIX = "app-"  # lock files: DATA_DIR/locks/app-<sha256 of the name>.lock
APPLICATION_PREFIX = "schedctl lock "
MAX_NAME = 255
# What pg_stat_activity keeps of application_name (NAMEDATALEN - 1 bytes).
_APPLICATION_NAME_BYTES = 63
_HOST_BYTES = 24
_FIRST_POLL = 0.05
_MAX_POLL = 1.0

P = ParamSpec("P")
R = TypeVar("R")


def check_lock_name(name: str) -> str:
    """Return `name` if it can name a lock; ValueError if empty, too long or with control chars.

    Any other text is fine (spaces, unicode, `../`): it is never used as a path.
    """
    if not isinstance(name, str):
        raise TypeError(f"a lock name is text, not {type(name).__name__}")
    if not name:
        raise ValueError("a lock name must not be empty")
    if len(name) > MAX_NAME:
        raise ValueError(f"a lock name is at most {MAX_NAME} characters, not {len(name)}")
    bad = next((c for c in name if c in log._CONTROL), None)
    if bad is not None:
        raise ValueError(f"a lock name must not contain control characters ({bad!r})")
    return name


def lock_key(name: str) -> int:
    """Return the signed 32-bit key of `name`: the first 4 bytes of its UTF-8 SHA-256.

    Stable across processes, hosts and Python versions. Two names with the same key share one
    lock (one waits for or skips the other; never both run): rare, and never unsafe.
    """
    digest = hashlib.sha256(check_lock_name(name).encode()).digest()
    return int.from_bytes(digest[:4], "big", signed=True)


def lock_file_key(name: str) -> str:
    """Return the lock file's stem for `name` (a hash: any text is a safe file name then)."""
    return APP_LOCK_PREFIX + hashlib.sha256(check_lock_name(name).encode()).hexdigest()[:32]


def _fit(text: str, size: int) -> str:
    """Percent-encode `text` to at most `size` bytes, never cutting an escape in two."""
    out, used = [], 0
    for char in text:
        piece = quote(char, safe="")
        if used + len(piece) > size:
            break
        out.append(piece)
        used += len(piece)
    return "".join(out)


def application_name(name: str, pid: int, host: str) -> str:
    """Return the session's application_name: `schedctl lock PID@HOST NAME`, encoded, cut to fit."""
    head = f"{APPLICATION_PREFIX}{pid}@{_fit(host, _HOST_BYTES)} "
    return head + _fit(name, _APPLICATION_NAME_BYTES - len(head))


def parse_application_name(text: str | None, key: int) -> tuple[str | None, int | None, str | None]:
    """Return (name, pid, host) from an application_name; a cut name ends with '…'."""
    if not text or not text.startswith(APPLICATION_PREFIX):
        return None, None, None
    who, _, encoded = text[len(APPLICATION_PREFIX) :].partition(" ")
    pid_text, _, host = who.partition("@")
    name = unquote(encoded, errors="replace")
    try:
        whole = lock_key(name) == key
    except ValueError:
        whole = False
    return (
        name if whole else name + "…",
        int(pid_text) if pid_text.isdigit() else None,
        unquote(host, errors="replace"),
    )


def file_holder(path: Path) -> tuple[int | None, str | None, str | None, datetime | None]:
    """Return (pid, host, name, since) of the process holding lock file `path`, else Nones."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None, None, None, None  # gone, or not a file schedctl made
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 4 * MAX_NAME + 512).decode(errors="replace")
            since = datetime.fromtimestamp(os.fstat(fd).st_mtime, UTC)
            pid_text, host, name = ([*text.split("\n"), "", ""])[:3]
            pid = int(pid_text) if pid_text.isdigit() else -1
            return pid, host or None, name or None, since
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None, None, None, None
    finally:
        os.close(fd)


def _settings(url: str | None) -> tuple[config.DatabaseURL, Path]:
    if url is None:
        settings = config.resolve(os.environ)
        return settings.database, settings.data_dir
    return config.parse_database_url(url, "url="), config.data_dir(os.environ)


# Locks this process holds or is taking; a forked child closes its copies of their sessions
# and files (see _after_fork_in_child).
_held: weakref.WeakSet[AdvisoryLock] = weakref.WeakSet()
_held_guard = threading.Lock()


class AdvisoryLock(AbstractContextManager[bool]):
    """A named lock shared by every process on the database: `with` yields whether it is ours.

    Made once (even in a parent process before it forks) and entered any number of times,
    one at a time; each entry opens its own session or lock file and closes it on exit.
    """

    def __init__(self, name: str, *, wait: float | None = None, url: str | None = None) -> None:
        """Name the lock; `wait`: seconds to keep trying (None or 0: try once); `url`: database."""
        self.name = check_lock_name(name)
        if wait is not None and not wait >= 0:
            raise ValueError(f"wait is a number of seconds >= 0, not {wait!r}")
        self.wait = wait
        self.url = url
        self.key = lock_key(name)
        self._session: PgConnector | None = None
        self._file: FileLock | None = None
        self._owner_pid: int | None = None

    @property
    def held(self) -> bool:
        """Return whether this process holds the lock through this object."""
        return self._owner_pid == os.getpid() and (self._session or self._file) is not None

    def acquire(self) -> bool:
        """Take the lock, trying for up to `wait` seconds; return whether it is held."""
        if self.held:
            raise RuntimeError(f"lock {self.name!r} is already held by this object")
        url, data_dir = _settings(self.url)
        deadline = time.monotonic() + (self.wait or 0)
        pause = _FIRST_POLL
        # Tracked from before its session or file opens: a fork meanwhile must not keep a copy.
        with _held_guard:
            _held.add(self)
        try:
            pg = url.backend == "postgresql"
            take = self._pg_take(url) if pg else self._file_take(data_dir)
            while not take():
                left = deadline - time.monotonic()
                if left <= 0:
                    self._close()
                    return False
                time.sleep(min(pause, left))
                pause = min(pause * 2, _MAX_POLL)
        except BaseException:
            self._close()
            raise
        self._owner_pid = os.getpid()
        return True

    def _pg_take(self, url: config.DatabaseURL) -> Callable[[], bool]:
        from schedctl.db.connector import PgConnector

        host = config.host_name(os.environ)
        session = PgConnector(url, application_name(self.name, os.getpid(), host))
        self._session = session
        # A transaction pooler would hand the session's backend, and its lock, to others.
        session.require_own_session()
        params = {"namespace": APP_LOCK_NAMESPACE, "key": self.key}

        def take() -> bool:
            row = session.run("app_try_lock", params).one()
            return bool(row and row[0])

        return take

    def _file_take(self, data_dir: Path) -> Callable[[], bool]:
        host = config.host_name(os.environ)
        record = f"{os.getpid()}\n{host}\n{self.name}\n"
        self._file = FileLock(data_dir / "locks", lock_file_key(self.name), record)
        return self._file.try_acquire

    def release(self) -> None:
        """Let the lock go and close its session or file (idempotent)."""
        if self._owner_pid is not None and self._owner_pid != os.getpid():
            return  # a forked child: the parent's lock is not ours to let go
        if self._session is not None and self._owner_pid is not None:
            params = {"namespace": APP_LOCK_NAMESPACE, "key": self.key}
            # Closing the session unlocks it anyway.
            with contextlib.suppress(Exception):
                self._session.run("app_unlock", params)
        self._close()

    def _close(self) -> None:
        with _held_guard:
            _held.discard(self)
        self._owner_pid = None
        session, self._session = self._session, None
        if session is not None:
            session.close()
        file, self._file = self._file, None
        if file is not None:
            file.release()

    def _abandon(self) -> None:
        """In a forked child: close the inherited copies, leaving the parent's lock alone."""
        session, self._session = self._session, None
        if session is not None:
            session.session.abandon()
        file, self._file = self._file, None
        if file is not None:
            file.release()  # closes this process's descriptor only: the flock stays the parent's
        self._owner_pid = None

    def __enter__(self) -> bool:
        """Take the lock (see `acquire`); yield whether it is held."""
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Let the lock go if it was taken."""
        self.release()


def _after_fork_in_child() -> None:
    # A child of a holder must neither keep the parent's session or file open (it would keep
    # the lock alive after the parent dies) nor end them (that would unlock the parent).
    global _held_guard  # noqa: PLW0603 - the parent's mutex may have been held at fork
    _held_guard = threading.Lock()
    for lock in list(_held):
        lock._abandon()
    _held.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def advisory_lock(name: str, *, wait: float | None = None, url: str | None = None) -> AdvisoryLock:
    """Return a context manager that yields whether the lock `name` was obtained.

    `wait`: seconds to keep trying while another process holds it (default: try once).
    `url`: the database; default: as the CLI resolves it ($SCHEDCTL_DATABASE_URL, the config
    file, else the SQLite default). A database that cannot be reached raises a SchedctlError.
    """
    return AdvisoryLock(name, wait=wait, url=url)


def single_instance(
    name: str, *, wait: float | None = None, url: str | None = None
) -> Callable[[Callable[P, R]], Callable[P, R | None]]:
    """Run the decorated function only while holding the lock `name`; else skip it.

    A skipped call logs one `lock.skipped` line (info; warning after a `wait` ran out) and
    returns None. Arguments as for `advisory_lock`.
    """
    lock = AdvisoryLock(name, wait=wait, url=url)

    def decorate(func: Callable[P, R]) -> Callable[P, R | None]:
        @functools.wraps(func)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R | None:
            # A fresh lock object per call: calls from several threads do not share one.
            with AdvisoryLock(lock.name, wait=lock.wait, url=lock.url) as locked:
                if locked:
                    return func(*args, **kwargs)
            log.emit(
                "lock.skipped",
                level="info" if not wait else "warning",
                lock=name,
                function=getattr(func, "__qualname__", repr(func)),
                waited=wait,
                reason="held by another process",
            )
            return None

        return guarded

    return decorate
