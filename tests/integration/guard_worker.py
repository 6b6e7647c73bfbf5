"""Processes that contend for one in-app lock (tests/integration/test_guard.py).

Usage: python guard_worker.py hold|hold-fork DIR NAME — take the lock, write DIR/held-PID
(hold-fork: after forking a child that lives on, its pid in DIR/child), and keep it until
DIR/release exists. The database comes from the environment, as for any application.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from schedctl import advisory_lock, single_instance
from schedctl.guard import AdvisoryLock


def _until(path: Path, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def contend(folder: str, name: str, others: int, url: str | None = None) -> None:
    """Wait for DIR/go, then call a `single_instance` body; mark ran-PID or skipped-PID.

    The one that runs holds the lock until every other process has been skipped.
    """
    here = Path(folder)

    @single_instance(name, url=url)
    def body() -> str:
        (here / f"ran-{os.getpid()}").touch()
        deadline = time.monotonic() + 120
        while len(list(here.glob("skipped-*"))) < others and time.monotonic() < deadline:
            time.sleep(0.02)
        return "ran"

    _until(here / "go")
    if body() is None:
        (here / f"skipped-{os.getpid()}").touch()


def use_parents_lock(lock: AdvisoryLock, folder: str) -> None:
    """In a forked child: enter a lock object the parent made; report its own session's pid."""
    with lock as locked:
        session = lock._session  # which session the child used
        backend = None if session is None else session.backend_pid()
        report = {"pid": os.getpid(), "locked": locked, "backend_pid": backend}
        Path(folder, f"child-{os.getpid()}.json").write_text(json.dumps(report))


def hold(folder: str, name: str, fork_child: bool) -> None:
    """Take the lock and keep it until DIR/release exists (or the process is killed)."""
    here = Path(folder)
    with advisory_lock(name) as locked:
        assert locked, "the lock was not free"
        if fork_child:
            child = os.fork()
            if child == 0:
                # A child that outlives its parent (a worker, a daemonized helper).
                time.sleep(120)
                os._exit(0)
            (here / "child").write_text(str(child))
        (here / f"held-{os.getpid()}").touch()
        _until(here / "release", 600)


if __name__ == "__main__":
    mode, folder, lock_name = sys.argv[1:4]
    hold(folder, lock_name, fork_child=mode == "hold-fork")
