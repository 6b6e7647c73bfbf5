"""Run history as read back: runs, lock holders, job changes and window statistics.

Apart from models.py because `schedctl run` writes history but never reads these back, and
every record defined costs each run's start-up. The small ones are NamedTuples: `check`
defines them at every start, and a frozen dataclass costs ~1 ms to define.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from schedctl.models import iso


@dataclass(frozen=True)
class Run:
    """One attempt of a job, as recorded."""

    id: int
    job_id: int | None
    job_name: str
    slot: datetime | None
    trigger: str
    attempt: int
    status: str
    host: str
    pid: int | None
    claimed_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    exit_code: int | None
    signal: int | None
    duration_seconds: float | None
    output_bytes: int
    output_truncated: bool
    clock_skew_seconds: float | None
    output_tail: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form used by `history --json`."""
        return {
            "id": self.id,
            "job": self.job_name,
            "slot": iso(self.slot),
            "trigger": self.trigger,
            "attempt": self.attempt,
            "status": self.status,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "host": self.host,
            "pid": self.pid,
            "claimed_at": iso(self.claimed_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "duration_seconds": self.duration_seconds,
            "output_bytes": self.output_bytes,
            "output_truncated": self.output_truncated,
            "clock_skew_seconds": self.clock_skew_seconds,
        }


class LockHolder(NamedTuple):
    """Who holds a job's lock right now."""

    job_id: int
    job_name: str | None
    run_id: int | None
    host: str | None
    pid: int | None
    since: datetime | None

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form used by `locks --json`."""
        return {
            "kind": "job",
            "job": self.job_name,
            "job_id": self.job_id,
            "run_id": self.run_id,
            "host": self.host,
            "pid": self.pid,
            "since": None if self.since is None else self.since.isoformat(),
        }


class AppLockHolder(NamedTuple):
    """Who holds an in-app lock (`schedctl.advisory_lock`) right now."""

    name: str | None  # cut short with '…' when PostgreSQL's application_name could not hold it
    key: str  # the PostgreSQL key (a number) or the lock file's name
    host: str | None
    pid: int | None
    backend_pid: int | None
    since: datetime | None

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form used by `locks --json`."""
        return {
            "kind": "app",
            "name": self.name,
            "key": self.key,
            "host": self.host,
            "pid": self.pid,
            "backend_pid": self.backend_pid,
            "since": None if self.since is None else self.since.isoformat(),
        }


class JobChange(NamedTuple):
    """The schedule-relevant state a job took at `at` (added, edited, enabled, disabled)."""

    at: datetime
    enabled: bool
    schedule: str
    timezone: str


class WindowStats(NamedTuple):
    """Counts and durations of one job's runs claimed inside a report window."""

    runs: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    p50: float | None = None
    p95: float | None = None
    max: float | None = None
    slots_present: int = 0  # first attempts whose slot lies in the window's judged range
