"""Injected time source: nothing below the CLI calls `datetime.now()` itself."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """A source of the current instant."""

    def now(self) -> datetime:
        """Return the current time, timezone-aware."""
        ...


class SystemClock:
    """The host's real-time clock, in UTC."""

    def now(self) -> datetime:
        """Return the current UTC time."""
        return datetime.now(UTC)


class FixedClock:
    """A clock stuck at one instant (tests, `--after`)."""

    def __init__(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("FixedClock needs a timezone-aware datetime")
        self._at = at

    def now(self) -> datetime:
        """Return the fixed instant."""
        return self._at


class DatabaseClock:
    """The database's clock, read on every call: what stored timestamps are judged by.

    PostgreSQL stamps claims, starts and heartbeats with its own clock, so whether a slot is
    due, a run stuck or a host gone is asked of that clock too, never of the host's (a
    monitoring host minutes ahead would see slots missed that are not yet due). `source` is
    the repository: its `now()` reads the server's clock, or on SQLite, whose one host's
    clock is the database's, the clock it was given.
    """

    def __init__(self, source: Clock) -> None:
        self._source = source

    def now(self) -> datetime:
        """Return the database's current time."""
        return self._source.now()
