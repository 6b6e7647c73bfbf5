"""Cron parsing and fire times: Debian cron's meaning, checked case by case and against cronsim."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from cron_oracle import (
    BASES,
    COUNTS,
    ZONES,
    cron_exprs,
    debian_next,
    oracle_settings,
    schedule_or_reject,
)
from hypothesis import given
from hypothesis import strategies as st

from schedctl.schedule import (
    CronError,
    Schedule,
    claim_window,
    parse_cron,
    pick_slot,
    tolerance,
)

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
        # Debian cron takes ASCII digits only; `str.isdigit()` took these too.
        ("\uff13 \uff14 * * *", "schedules are ASCII"),  # fullwidth 3 4
        ("\u0663 * * * *", "schedules are ASCII"),  # Arabic-Indic 3
        ("\u00b9 * * * *", "schedules are ASCII"),  # superscript 1: was a ValueError
        ("* * * * \u00b9", "schedules are ASCII"),
        ("*/\u00b9 * * * *", "schedules are ASCII"),
        ("0 0\u2028* * * *", "schedules are ASCII"),
        (
            "*/99999999999999999999 * * * *",
            "minute step '99999999999999999999' must be a whole number from 1 to 59",
        ),
        ("*/60 * * * *", "minute step '60' must be a whole number from 1 to 59"),
        ("0 */24 * * *", "hour step '24' must be a whole number from 1 to 23"),
        ("0 0 * * */8", "day-of-week step '8' must be a whole number from 1 to 7"),
        ("99999999999999999999 * * * *", "minute value 99999999999999999999 is out of range"),
        ("0000000000005 * * * *", "without leading zeros"),
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


@oracle_settings(400)
@given(
    expr=cron_exprs,
    zone=st.sampled_from(ZONES),
    base=st.sampled_from(BASES),
    shift=st.integers(-180, 180),
)
def test_next_matches_debian_cron_oracle(expr: str, zone: str, base: datetime, shift: int) -> None:
    schedule = schedule_or_reject(expr, zone)
    start = base + timedelta(minutes=shift)
    theirs = debian_next(schedule, zone, start, 12)
    ours = schedule.next_after(start, len(theirs))
    assert [x.astimezone(UTC) for x in ours] == [x.astimezone(UTC) for x in theirs]
    # And the reverse direction agrees with the forward one.
    for x in ours:
        assert schedule.latest_at_or_before(x) == x
    COUNTS["cron expressions"] += 1
    COUNTS["cron instants"] += len(ours)


def test_one_value_range_with_step_is_that_value() -> None:
    # Debian cron: `mon-mon/1` is Monday only (cronsim differs here; see _item above).
    assert parse_cron("* * * * mon-mon/1").weekdays == {1}


def utc(x: datetime | None) -> datetime | None:
    return None if x is None else x.astimezone(UTC)


@pytest.mark.parametrize(
    ("expr", "seconds"),
    [
        ("* * * * *", 30),
        ("*/2 * * * *", 60),
        ("*/5 * * * *", 150),
        ("0 * * * *", 300),
        ("@daily", 300),
        ("0,1 * * * *", 30),
        ("0,55 0,23 * * *", 150),  # 23:55 to 00:00 the next day is the shortest gap
    ],
)
def test_tolerance_is_half_the_shortest_gap_at_most_five_minutes(expr: str, seconds: int) -> None:
    assert tolerance(parse_cron(expr)) == timedelta(seconds=seconds)


@pytest.mark.parametrize("expr", ["* * * * *", "*/5 * * * *"])
@pytest.mark.parametrize("skew", [-30, -2, 2, 30])
def test_a_skewed_host_serves_the_slot_its_timer_fired_for(expr: str, skew: int) -> None:
    s = Schedule.of(expr, "UTC")
    slot = at("UTC", 2026, 11, 22, 12, 5)
    fired = slot + timedelta(seconds=0.3)  # the timer fired at its slot by the host's clock
    db_now = fired - timedelta(seconds=skew)
    pick = pick_slot(s, fired, db_now)
    assert (pick.slot, pick.in_window) == (slot, True)
    assert pick.lateness == timedelta(seconds=0.3)  # skew is not lateness


@oracle_settings(300)
@given(
    expr=cron_exprs,
    zone=st.sampled_from(ZONES),
    base=st.sampled_from(BASES),
    shift=st.integers(-180, 180),
    share=st.floats(-1, 1),
    delay=st.floats(0, 2),
)
def test_within_the_tolerance_every_host_names_the_slot_nearest_the_database_clock(
    expr: str, zone: str, base: datetime, shift: int, share: float, delay: float
) -> None:
    schedule = schedule_or_reject(expr, zone)
    # In UTC: arithmetic on a zone's wall time loses which pass of a repeated hour it is.
    slot = schedule.next_after(base + timedelta(minutes=shift))[0].astimezone(UTC)
    skew = tolerance(schedule.expr) * share
    fired = slot + timedelta(seconds=delay)
    db_now = fired - skew
    pick = pick_slot(schedule, fired, db_now)
    assert (utc(pick.slot), pick.in_window) == (utc(slot), True)
    # Where no DST change shortens the gaps around it, that is the slot nearest the database
    # clock when the host fired (a tie goes to the host's).
    previous = schedule.latest_at_or_before(slot - timedelta(microseconds=1))
    following = schedule.next_after(slot)[0]
    gaps = [slot - previous if previous else None, following - slot]
    if all(g is None or g >= 2 * tolerance(schedule.expr) for g in gaps):
        at_firing = slot - skew
        nearest = [schedule.latest_at_or_before(at_firing), schedule.next_after(at_firing)[0]]
        distance = min(abs(at_firing - x) for x in nearest if x is not None)
        assert abs(at_firing - slot) == distance
        COUNTS["slot picks nearest the database clock"] += 1
    # The claim window holds the slot, and only moves forward.
    window = claim_window(schedule, db_now)
    assert window.holds(slot)
    later = claim_window(schedule, db_now + timedelta(minutes=3))
    assert later.oldest is None or window.oldest is None or later.oldest >= window.oldest


def test_a_late_firing_serves_its_own_slot_and_says_how_late() -> None:
    every5 = Schedule.of("*/5 * * * *", "UTC")
    noon = at("UTC", 2026, 11, 22, 12)
    # Jitter: fired 4 minutes after its slot; a host 30 s ahead.
    fired = noon + timedelta(minutes=4)
    pick = pick_slot(every5, fired, fired - timedelta(seconds=30))
    assert (pick.slot, pick.lateness) == (noon, timedelta(minutes=4))
    # Downtime: a monthly job's timer catching up 20 days late takes that slot, however old.
    monthly = Schedule.of("0 3 1 * *", "UTC")
    first = at("UTC", 2026, 11, 1, 3)
    late = first + timedelta(days=20)
    pick = pick_slot(monthly, late, late)
    assert (pick.slot, pick.lateness) == (first, timedelta(days=20))
    assert claim_window(monthly, late).oldest == first


@pytest.mark.parametrize("skew", [-6, 6])
def test_a_daily_job_on_a_host_six_minutes_off_keeps_its_slot(skew: int) -> None:
    daily = Schedule.of("30 4 * * *", "UTC")
    slot = at("UTC", 2026, 11, 22, 4, 30)
    fired = slot + timedelta(seconds=0.5)
    pick = pick_slot(daily, fired, fired - timedelta(minutes=skew))
    # Beyond the 5-minute tolerance, the host's timer still fired for today's slot: not
    # yesterday's (host ahead), and not late (host behind).
    assert (pick.slot, pick.in_window, pick.lateness) == (slot, True, timedelta(seconds=0.5))
    assert pick.tolerance == timedelta(minutes=5)


@pytest.mark.parametrize(
    ("expr", "skew"), [("*/5 * * * *", -12), ("*/5 * * * *", 12), ("0 12 * * *", 11)]
)
def test_a_clock_too_far_off_gets_the_database_clocks_slot(expr: str, skew: int) -> None:
    s = Schedule.of(expr, "UTC")
    slot = at("UTC", 2026, 11, 22, 12)
    fired = slot + timedelta(seconds=0.5)
    db_now = fired - timedelta(minutes=skew)
    pick = pick_slot(s, fired, db_now)
    # Its own slot is outside the claim window: older than the slot a tolerance ago (prune
    # may have deleted its row), or more than 10 minutes ahead of the database. The
    # database clock's latest slot is taken instead.
    assert (pick.fired_for, pick.in_window) == (slot, False)
    assert pick.slot == s.latest_at_or_before(db_now)


def test_both_passes_of_a_repeated_hour_are_told_apart_under_skew() -> None:
    # Berlin 2026-10-25: 02:00-03:00 runs twice (00:00-01:00 and 01:00-02:00 UTC).
    every5 = Schedule.of("*/5 * * * *", "Europe/Berlin")
    second_pass = datetime(2026, 10, 25, 1, 5, tzinfo=UTC)  # 02:05 CET
    for skew in (-30, -2, 2, 30):
        fired = second_pass + timedelta(seconds=0.3)
        pick = pick_slot(every5, fired, fired - timedelta(seconds=skew))
        assert utc(pick.slot) == second_pass, skew
    # A fixed-time slot moved out of the spring gap (02:30 -> 03:00 CEST = 01:00 UTC).
    fixed = Schedule.of("30 2 * * *", "Europe/Berlin")
    moved = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    for skew in (-30, -2, 2, 30):
        fired = moved + timedelta(seconds=0.3)
        assert utc(pick_slot(fixed, fired, fired - timedelta(seconds=skew)).slot) == moved


def test_a_timer_started_in_the_second_pass_fires_for_the_first_passs_slot() -> None:
    # systemd started at 01:17 UTC, in Berlin's second 02:xx, elapses `*-*-* 02:30:00
    # Europe/Berlin` at 01:30 UTC (tests/render checks that with systemd-analyze). That is no
    # slot: Debian cron runs a fixed-time job once in a repeated hour, at 00:30 UTC.
    fixed = Schedule.of("30 2 * * *", "Europe/Berlin")
    stray = datetime(2026, 10, 25, 1, 30, tzinfo=UTC)
    first_pass = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert not fixed.fires_at(stray)
    for skew in (-30, 0, 30):
        pick = pick_slot(fixed, stray, stray - timedelta(seconds=skew))
        # The slot the first pass already claimed: its row makes this firing a duplicate.
        assert (utc(pick.slot), pick.in_window) == (first_pass, True)


def test_latest_in_the_first_pass_of_a_repeated_hour_is_not_the_second() -> None:
    # New York 2026-11-01: 01:00 EDT (05:00 UTC) and 01:00 EST (06:00 UTC). Same-zone datetime
    # comparison ignores fold, so the second pass once looked "at or before" the first.
    s = Schedule.of("*/6 * * * *", "America/New_York")
    first_pass = datetime(2026, 11, 1, 5, 0, tzinfo=UTC)
    latest = s.latest_at_or_before(first_pass)
    assert latest is not None and latest.astimezone(UTC) == first_pass
    after = s.next_after(first_pass, 1)[0]
    assert after.astimezone(UTC) == datetime(2026, 11, 1, 5, 6, tzinfo=UTC)


# Pieces of cron syntax, other scripts' digits, separators and huge numbers.
_TOKENS = ["*", "*/", "-", ",", " ", "/", "0", "1", "5", "7", "9", "59", "60", "mon", "JAN",
           "\uff13", "\u0663", "\u00b9", "\u00b2", "\u2028", "\x85", "\t", "@", "hourly",
           "99999999999999999999", "0000000000001"]  # fmt: skip
_SOUP = st.lists(st.sampled_from(_TOKENS), max_size=20).map("".join)
_MUTANTS = st.builds(
    lambda expr, at, junk: expr[:at] + junk + expr[at:],
    cron_exprs, st.integers(0, 40), st.sampled_from(_TOKENS) | st.text(max_size=3),
)  # fmt: skip


@oracle_settings(3000)
@given(text=st.one_of(cron_exprs, _MUTANTS, _SOUP, st.text(max_size=40)))
def test_any_text_is_parsed_or_refused_with_a_cron_error(text: str) -> None:
    # Never another exception (it was a ValueError, exit 1, for superscript digits), and what
    # is accepted renders crontab lines that Debian cron's parser takes (render/cronsyntax.py,
    # itself checked against `crontab -n` in tests/integration/test_cron_syntax.py).
    from schedctl.render.cronsyntax import entry_problem

    with contextlib.suppress(CronError):  # how stored schedules are read: no other error either
        Schedule.of(text, "UTC")
    try:
        expr = parse_cron(text)
    except CronError:
        COUNTS["schedules refused"] += 1
        return
    assert expr.text.isascii()
    assert entry_problem(f"{expr.expanded} root /bin/true", system=True) is None, text
    COUNTS["schedules accepted"] += 1


def test_stored_schedules_an_older_schedctl_accepted_still_run() -> None:
    # Validation refuses them now (and sync will not render them), but a job an older schedctl
    # stored keeps its instants: `run`, `list` and `check` read them as they were accepted.
    after = datetime(2026, 11, 22, tzinfo=UTC)
    legacy = Schedule.of("\uff13 \uff14 * * *", "UTC").next_after(after, 2)
    assert legacy == Schedule.of("3 4 * * *", "UTC").next_after(after, 2)
    assert Schedule.of("*/99999999999999999999 * * * *", "UTC").expr.minutes == frozenset({0})
    with pytest.raises(CronError):  # never a ValueError (exit 1), as superscripts were
        Schedule.of("\u00b9 * * * *", "UTC")
    with pytest.raises(CronError, match="schedules are ASCII"):
        parse_cron("\uff13 \uff14 * * *")


def test_a_rare_schedule_yields_as_many_instants_as_asked() -> None:
    # The search horizon bounded the whole walk: Feb 29 gave 8 of 30 asked for.
    after = datetime(2026, 11, 30, tzinfo=UTC)
    leap = Schedule.of("0 2 29 2 *", "UTC").next_after(after, 30)
    assert len(leap) == 30
    assert [x.year for x in leap] == [y for y in range(2028, 2300) if is_leap(y)][:30]
    assert all((x.month, x.day, x.hour) == (2, 29, 2) for x in leap)


def is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
