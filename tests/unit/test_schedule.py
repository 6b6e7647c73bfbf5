"""Cron parsing and fire times: Debian cron's meaning, checked case by case and against cronsim."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from schedctl.schedule import CronError, Schedule, parse_cron

BERLIN = ZoneInfo("Europe/Berlin")


def at(zone: str, year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(zone))


def iso_list(schedule: str, zone: str, after: datetime, n: int) -> list[str]:
    return [x.isoformat() for x in Schedule.of(schedule, zone).next_after(after, n)]


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("61 * * * *", "minute value 61 is out of range 0-59"),
        ("* 24 * * *", "hour value 24 is out of range 0-23"),
        ("* * 0 * *", "day-of-month value 0 is out of range 1-31"),
        ("* * * 13 *", "month value 13 is out of range 1-12"),
        ("* * * * 8", "day-of-week value 8 is out of range 0-7"),
        ("* * * foo *", "month field has 'foo'"),
        ("* * * * 5/2", "day-of-week step '5/2' needs a range"),
        ("5-1 * * * *", "minute range 5-1 runs backwards"),
        ("*/0 * * * *", "minute step '0' must be"),
        ("1,,2 * * * *", "minute field has an empty list item"),
        ("* * * *", "has 4 fields, needs 5"),
        ("* * * * * *", "has 6 fields, needs 5"),
        ("0 0 30 2 *", "can never fire"),
        ("0 0 31 4,6,9,11 *", "can never fire"),
        ("0 0 30 2 */2", "can never fire"),
        ("@reboot", "@reboot is not supported"),
        ("@fortnightly", "unknown cron macro"),
        ("", "empty cron expression"),
    ],
)
def test_refused_expressions_name_the_field(expr: str, message: str) -> None:
    with pytest.raises(CronError, match=message.replace("(", r"\(").replace("*", r"\*")):
        parse_cron(expr)


@pytest.mark.parametrize(
    ("expr", "expanded"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
    ],
)
def test_macros_expand_like_debian(expr: str, expanded: str) -> None:
    assert parse_cron(expr).expanded == expanded


def test_names_ranges_steps_and_sunday_as_7() -> None:
    e = parse_cron("0-30/10 9-17/4 * JAN-mar,dec mon-FRI,7")
    assert e.minutes == {0, 10, 20, 30}
    assert e.hours == {9, 13, 17}
    assert e.months == {1, 2, 3, 12}
    assert e.weekdays == {0, 1, 2, 3, 4, 5}
    assert parse_cron("* * * * */2").weekdays == {0, 2, 4, 6}


def test_dom_dow_or_when_both_restricted() -> None:
    # 13th OR Friday, not Friday the 13th.
    got = iso_list("0 12 13 * 5", "UTC", at("UTC", 2026, 2, 1), 4)
    assert got == [
        "2026-02-06T12:00:00+00:00",
        "2026-02-13T12:00:00+00:00",
        "2026-02-20T12:00:00+00:00",
        "2026-02-27T12:00:00+00:00",
    ]


def test_star_step_in_dom_means_and() -> None:
    # Debian: a field starting with '*' makes the pair AND-ed: odd days that are Mondays.
    got = iso_list("0 0 */2 * 1", "UTC", at("UTC", 2026, 1, 1), 3)
    assert got == [
        "2026-01-05T00:00:00+00:00",
        "2026-01-19T00:00:00+00:00",
        "2026-02-09T00:00:00+00:00",
    ]


def test_fixed_time_in_spring_gap_runs_once_right_after() -> None:
    got = iso_list("30 2 * * *", "Europe/Berlin", at("Europe/Berlin", 2026, 3, 28, 12), 3)
    assert got == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]
    # Several slots in the gap still give one run.
    got = iso_list("0,15,45 2 * * *", "Europe/Berlin", at("Europe/Berlin", 2026, 3, 29, 1), 2)
    assert got == ["2026-03-29T03:00:00+02:00", "2026-03-30T02:00:00+02:00"]


def test_fixed_time_in_repeated_hour_runs_once() -> None:
    s = Schedule.of("30 2 * * *", "Europe/Berlin")
    got = s.next_after(at("Europe/Berlin", 2026, 10, 25, 0), 2)
    assert [x.astimezone(UTC).isoformat() for x in got] == [
        "2026-10-25T00:30:00+00:00",  # 02:30 CEST, first pass
        "2026-10-26T01:30:00+00:00",
    ]


def test_wildcard_jobs_follow_the_wall_clock() -> None:
    s = Schedule.of("30 * * * *", "Europe/Berlin")
    autumn = [x.astimezone(UTC).hour for x in s.next_after(at("Europe/Berlin", 2026, 10, 25, 1), 3)]
    assert autumn == [23, 0, 1]  # 01:30 CEST, 02:30 CEST, 02:30 CET: both passes
    spring = [x.isoformat() for x in s.next_after(at("Europe/Berlin", 2026, 3, 29, 1), 2)]
    assert spring == ["2026-03-29T01:30:00+01:00", "2026-03-29T03:30:00+02:00"]  # no 02:30


def test_half_hour_dst_of_lord_howe() -> None:
    got = iso_list(
        "15 2 * * *", "Australia/Lord_Howe", at("Australia/Lord_Howe", 2026, 10, 3, 12), 2
    )
    assert got == ["2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00"]


def test_next_is_strictly_after_and_latest_is_at_or_before() -> None:
    s = Schedule.of("*/5 * * * *", "UTC")
    t = at("UTC", 2026, 11, 22, 10, 5)
    assert s.next_after(t)[0] == at("UTC", 2026, 11, 22, 10, 10)
    assert s.latest_at_or_before(t) == t
    assert s.latest_at_or_before(t - timedelta(microseconds=1)) == at("UTC", 2026, 11, 22, 10, 0)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Schedule.of("* * * * *", "UTC").next_after(datetime(2026, 1, 1))


# --- property: schedctl agrees with cronsim (an independent Debian-cron evaluator) ----------

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


COMPARED = {"expressions": 0, "instants": 0}


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    # No shrinking: a failure prints its (unshrunk) example at once instead of minutes later.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(
    expr=cron_exprs,
    zone=st.sampled_from(ZONES),
    base=st.sampled_from(BASES),
    shift=st.integers(-180, 180),
)
def test_next_matches_debian_cron_oracle(expr: str, zone: str, base: datetime, shift: int) -> None:
    try:
        schedule = Schedule.of(expr, zone)
    except CronError:
        assume(False)
        raise
    start = base + timedelta(minutes=shift)
    if schedule.expr.fixed_time:
        theirs = _cronsim_next(schedule.expr.expanded, zone, start, 12)
    else:
        theirs = _wall_clock_next(schedule.expr.expanded, zone, start, 12)
    ours = schedule.next_after(start, len(theirs))
    assert [x.astimezone(UTC) for x in ours] == [x.astimezone(UTC) for x in theirs]
    # And the reverse direction agrees with the forward one.
    for x in ours:
        assert schedule.latest_at_or_before(x) == x
    COMPARED["expressions"] += 1
    COMPARED["instants"] += len(ours)


def test_one_value_range_with_step_is_that_value() -> None:
    # Debian cron: `mon-mon/1` is Monday only (cronsim differs here; see _item above).
    assert parse_cron("* * * * mon-mon/1").weekdays == {1}


def test_slot_for_agrees_across_skewed_hosts() -> None:
    from schedctl.schedule import slot_for

    s = Schedule.of("0 * * * *", "UTC")
    five = timedelta(minutes=5)
    noon = at("UTC", 2026, 11, 22, 12)
    # Hosts 5 minutes ahead, exact, and 5 minutes behind all fire for their 12:00.
    for db_now in (noon - five + timedelta(seconds=1), noon, noon + five):
        assert slot_for(s, db_now, five, timedelta(0)) == noon
    # A late firing (jitter) still serves its own slot, not the next one.
    every5 = Schedule.of("*/5 * * * *", "UTC")
    four_late = noon + timedelta(minutes=4)
    assert slot_for(every5, four_late, timedelta(seconds=30), timedelta(minutes=4)) == noon
