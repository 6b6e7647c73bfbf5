"""Independent Debian-cron evaluators and cron-expression strategies shared by oracle tests."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim
from hypothesis import HealthCheck, Phase, assume, settings
from hypothesis import strategies as st

from schedctl.schedule import CronError, Schedule

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]
# Base instants just before DST changes in the zones above (and ordinary days).
BASES = [
    datetime(2026, 3, 8, 5, 0, tzinfo=UTC),  # New York spring
    datetime(2026, 3, 28, 23, 0, tzinfo=UTC),  # Berlin spring
    datetime(2026, 4, 4, 13, 0, tzinfo=UTC),  # Lord Howe autumn
    datetime(2026, 10, 3, 14, 0, tzinfo=UTC),  # Lord Howe spring
    datetime(2026, 10, 24, 23, 0, tzinfo=UTC),  # Berlin autumn
    datetime(2026, 11, 1, 4, 0, tzinfo=UTC),  # New York autumn
    datetime(2027, 6, 15, 12, 0, tzinfo=UTC),  # an ordinary day
    datetime(2028, 2, 28, 0, 0, tzinfo=UTC),  # leap day
]


def _item(low: int, high: int, names: list[str] | None) -> st.SearchStrategy[str]:
    def value(v: int) -> str:
        return names[v - low] if names and v - low < len(names) else str(v)

    nums = st.integers(low, high)
    # Ranges of two or more values: cronsim widens a one-value range with a step (`mon-mon/1`)
    # to "start through max", where Debian cron (entry.c get_range) keeps the single value.
    ranges = st.tuples(nums, nums).filter(lambda t: t[0] != t[1]).map(lambda t: (min(t), max(t)))
    steps = st.integers(1, max(2, (high - low) // 2))
    return st.one_of(
        st.just("*"),
        st.builds(lambda s: f"*/{s}", steps),
        nums.map(value),
        ranges.map(lambda r: f"{value(r[0])}-{value(r[1])}"),
        st.builds(lambda r, s: f"{value(r[0])}-{value(r[1])}/{s}", ranges, steps),
    )


def _field(low: int, high: int, names: list[str] | None = None) -> st.SearchStrategy[str]:
    return st.lists(_item(low, high, names), min_size=1, max_size=3).map(",".join)


MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
cron_exprs = st.builds(
    lambda *f: " ".join(f),
    _field(0, 59),
    _field(0, 23),
    _field(1, 31),
    _field(1, 12, MONTHS),
    _field(0, 7, DAYS),
)


def _cronsim_next(expanded: str, zone: str, base: datetime, n: int) -> list[datetime]:
    # cronsim walks fixed-time jobs in naive wall time, so from a base in the second pass of a
    # repeated hour it first returns that hour's remaining first-pass instants, which lie
    # *before* the base; Debian cron never re-runs them. Keep only instants after the base.
    it = CronSim(expanded, base.astimezone(ZoneInfo(zone)))
    out: list[datetime] = []
    while len(out) < n:
        x = next(it)
        if x > base:
            out.append(x)
    return out


def _wall_clock_next(expanded: str, zone: str, base: datetime, n: int) -> list[datetime]:
    """Debian cron for wildcard jobs: every real minute, fire if the wall clock matches.

    cronsim cannot be the oracle here: it steps hours in UTC and so skips half an hour of
    slots after Lord Howe's 30-minute DST change. Parsing and the day rule are cronsim's.
    """
    z = ZoneInfo(zone)
    cs = CronSim(expanded, base.astimezone(z))
    t = base.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    end = t + timedelta(days=400)
    out: list[datetime] = []
    while t < end and len(out) < n:
        local = t.astimezone(z)
        if local.month not in cs.months or not cs.match_day(local.date()):
            t += timedelta(minutes=60 - local.minute)  # nothing fires until the next hour
            continue
        if local.hour in cs.hours and local.minute in cs.minutes:
            out.append(t)
        t += timedelta(minutes=1)
    return out


# What the oracle tests compared, reported at the end of the run (conftest.py).
COUNTS: Counter[str] = Counter()


def debian_next(schedule: Schedule, zone: str, start: datetime, n: int) -> list[datetime]:
    """Return the next `n` instants after `start` by an evaluator independent of schedctl."""
    if schedule.expr.fixed_time:
        return _cronsim_next(schedule.expr.expanded, zone, start, n)
    return _wall_clock_next(schedule.expr.expanded, zone, start, n)


def oracle_settings(examples: int) -> settings:
    """Hypothesis settings for the oracle tests."""
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        # No shrinking: a failure prints its (unshrunk) example at once instead of minutes later.
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
    )


def schedule_or_reject(expr: str, zone: str) -> Schedule:
    """Return the schedule, or reject the example when schedctl refuses the expression."""
    try:
        return Schedule.of(expr, zone)
    except CronError:
        assume(False)
        raise
