"""Run history as read back: runs, lock holders, job changes and window statistics.

Apart from models.py because `schedctl run` writes history but never reads these back, and
every record defined costs each run's start-up. The small ones are NamedTuples: `check`
defines them at every start, and a frozen dataclass costs ~1 ms to define.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from schedctl.models import iso, mask_target


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


# Stored as SQLite's 0/1 or PostgreSQL's booleans: shown as booleans either way.
_BOOLEAN_FIELDS = ("shell", "enabled")
_ACTIONS = {"insert": "create", "update": "update", "delete": "delete"}


def _boolean(value: Any) -> Any:
    return bool(value) if isinstance(value, int) else value


def _shown(field: str, value: Any) -> Any:
    """Return a logged value as it may be shown: booleans as such, webhook tokens masked."""
    if field in _BOOLEAN_FIELDS:
        return _boolean(value)
    if field == "notify" and isinstance(value, list):
        return [mask_target(t) if isinstance(t, str) else t for t in value]
    return value


class ChangeRecord(NamedTuple):
    """One change to a job, as the triggers on jobs recorded it (migration 0007).

    `changes` is the definition for an insert or a delete, and `{field: [old, new]}` for an
    update. Environment values are never recorded: `env` holds the keys (insert, delete) or
    `{"added": [...], "removed": [...], "changed": [...]}` (update). Webhook targets are
    recorded masked (0010) and masked again here. An update may hold `signature`: before and
    after, each None (unsigned) or the `signer` and `key` the row claimed, unverified.
    """

    id: int
    job_id: int | None
    job_name: str
    action: str
    at: datetime
    revision: int | None
    db_role: str | None
    session_role: str | None
    application_name: str | None
    client_addr: str | None
    os_user: str | None
    signer: str | None
    changes: dict[str, Any]

    @property
    def kind(self) -> str:
        """Return create, update or delete."""
        return _ACTIONS.get(self.action, self.action)

    @property
    def who(self) -> str:
        """Return the database role, else the OS user schedctl ran as, else `?` (other SQL)."""
        return self.db_role or self.os_user or "?"

    def definition(self) -> dict[str, Any]:
        """Return the created or removed definition (empty for an update)."""
        if self.kind == "update":
            return {}
        return {k: _shown(k, v) for k, v in self.changes.items()}

    def diff(self) -> dict[str, Any]:
        """Return `{field: {"old": o, "new": n}}` for an update (env: keys added/removed/changed)."""
        if self.kind != "update":
            return {}
        out: dict[str, Any] = {}
        for field, change in sorted(self.changes.items()):
            if field == "env":
                out[field] = change
                continue
            old, new = change
            out[field] = {"old": _shown(field, old), "new": _shown(field, new)}
        return out

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form used by `history --changes --json`."""
        out: dict[str, Any] = {
            "id": self.id,
            "at": iso(self.at),
            "job": self.job_name,
            "job_id": self.job_id,
            "action": self.kind,
            "revision": self.revision,
            "who": self.who,
            "db_role": self.db_role,
            "session_role": self.session_role,
            "application_name": self.application_name,
            "client_addr": self.client_addr,
            "os_user": self.os_user,
            # Whatever the row said when its signature was written: nothing here checked it
            # (`schedctl verify` does).
            "signer_claimed": self.signer,
        }
        if self.kind == "update":
            out["changes"] = self.diff()
        else:
            out["definition"] = self.definition()
        return out
