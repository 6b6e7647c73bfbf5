"""Cron expressions with Debian cron's meaning, evaluated in a job's own time zone.

Semantics (Debian cron 3.0pl1, entry.c / cron.c):
- Five fields; names (`jan`, `mon`) in month and day-of-week; `*`, `N`, `N-M`, with `/step`
  only after `*` or a range (Debian rejects `N/step`); day-of-week 7 is Sunday.
- Day-of-month and day-of-week are OR-ed when both are restricted; when either field *starts
  with* `*` (so `*/2` counts as unrestricted) both must match.
- DST: a job whose minute and hour fields both start with a digit is "fixed-time": a slot in a
  skipped hour runs once at the first minute after the gap, a slot in a repeated hour runs once
  (first occurrence). Other jobs follow the wall clock: no run in a gap, both passes of a
  repeated hour.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import cache
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from schedctl.errors import ValidationError

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DOW_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_FIELDS = (
    # name, low, high, names (index + offset = value)
    ("minute", 0, 59, None, 0),
    ("hour", 0, 23, None, 0),
    ("day-of-month", 1, 31, None, 0),
    ("month", 1, 12, _MONTH_NAMES, 1),
    ("day-of-week", 0, 7, _DOW_NAMES, 0),
)
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_ONE_DAY = timedelta(days=1)
# What a schedule may hold: printable ASCII and blanks. Debian cron reads bytes and takes no
# other digits (fullwidth, Arabic-Indic, superscripts), and one line it rejects makes it ignore the whole file.
_ASCII = re.compile(r"[\x20-\x7e\t]*")
# Leading zeros aside, no field value or step needs more digits.
_MAX_DIGITS = 9
MAX_TEXT_DIGITS = 4096  # int() refuses more than 4300 digits
# How far to look for the next/previous fire time before concluding there is none. Validation
# refuses expressions that never fire, so this only bounds pathological zones.
_SEARCH_DAYS = 366 * 30


class CronError(ValidationError):
    """A cron expression that schedctl refuses."""


class CronExpr(NamedTuple):
    """A parsed 5-field cron expression."""

    text: str
    expanded: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday .. 6 = Saturday
    dom_star: bool
    dow_star: bool
    fixed_time: bool
    minutes_of_day: tuple[int, ...]  # sorted h*60+m for every (hour, minute) pair

    def matches_day(self, d: date) -> bool:
        """Return whether cron would fire on local date `d` (month and day rules)."""
        if d.month not in self.months:
            return False
        dow = d.isoweekday() % 7
        if self.dom_star or self.dow_star:
            return d.day in self.days and dow in self.weekdays
        return d.day in self.days or dow in self.weekdays


def _digits(token: str, strict: bool) -> bool:
    if strict:
        return token.isascii() and token.isdigit()
    # What an older schedctl stored: any script's decimal digits (int() reads them all; it
    # fails on other str.isdigit() characters such as superscripts), never 4300 of them.
    return token.isdecimal() and len(token) <= MAX_TEXT_DIGITS


def _number(token: str, field: int, expr: str, strict: bool) -> int:
    name, low, high, names, offset = _FIELDS[field]
    if _digits(token, strict):
        value = int(token)
        if strict and low <= value <= high and len(token) > _MAX_DIGITS:
            raise CronError(
                f"bad cron expression {expr!r}: {name} field has {token!r}; "
                f"write the number without leading zeros"
            )
    elif names is not None and token.lower() in names:
        value = names.index(token.lower()) + offset
    else:
        hint = f" or a name like {names[0]}" if names else ""
        raise CronError(
            f"bad cron expression {expr!r}: {name} field has {token!r}; "
            f"use a number {low}-{high}{hint}"
        )
    if not low <= value <= high:
        raise CronError(
            f"bad cron expression {expr!r}: {name} value {value} is out of range {low}-{high}"
        )
    return value


def _parse_field(text: str, field: int, expr: str, strict: bool) -> frozenset[int]:
    name, low, high, _, _ = _FIELDS[field]
    values: set[int] = set()
    for item in text.split(","):
        if item == "":
            raise CronError(f"bad cron expression {expr!r}: {name} field has an empty list item")
        base, slash, step_text = item.partition("/")
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = _number(first, field, expr, strict), _number(last, field, expr, strict)
            if start > end:
                raise CronError(
                    f"bad cron expression {expr!r}: {name} range {base} runs backwards; "
                    f"cron has no wrap-around ranges, write it as two ranges"
                )
        else:
            if slash:
                raise CronError(
                    f"bad cron expression {expr!r}: {name} step {item!r} needs a range; "
                    f"Debian cron rejects N/step, write {base}-{high}/{step_text}"
                )
            values.add(_number(base, field, expr, strict))
            continue
        step = 1
        if slash:
            step = int(step_text) if _digits(step_text, strict) else 0
            # An older schedctl stored any step of at least 1; now it must fit the field.
            if step < 1 or (strict and step > high):
                raise CronError(
                    f"bad cron expression {expr!r}: {name} step {step_text!r} "
                    f"must be a whole number from 1 to {high}"
                )
            if strict and len(step_text) > _MAX_DIGITS:
                raise CronError(
                    f"bad cron expression {expr!r}: {name} step {step_text!r}; "
                    f"write the number without leading zeros"
                )
        values.update(range(start, end + 1, step))
    return frozenset(values)


def parse_cron(text: str, *, strict: bool = True) -> CronExpr:
    """Parse `text` with Debian cron's rules, refusing what cron would reject or never fire.

    `strict=False` reads a schedule already stored as an older schedctl did (other scripts'
    decimal digits, any step): a job that ran keeps running. Validation, and so `add`, `edit`
    and `sync` before it writes anything, is strict.
    """
    if strict and not _ASCII.fullmatch(text):
        bad = next(c for c in text if not _ASCII.fullmatch(c))
        raise CronError(
            f"bad cron expression {text!r}: {bad!r} is not allowed; schedules are ASCII: "
            f"digits 0-9, names like mon or jan, and * , - /"
        )
    expr = " ".join(text.split())
    if not expr:
        raise CronError("empty cron expression: give 5 fields, e.g. '*/5 * * * *', or @daily")
    if expr.startswith("@"):
        if expr.lower() == "@reboot":
            raise CronError(
                "@reboot is not supported: schedctl runs schedules, not boot hooks; "
                "use a systemd unit with WantedBy=multi-user.target instead"
            )
        expanded = MACROS.get(expr.lower())
        if expanded is None:
            raise CronError(f"unknown cron macro {expr!r}: use one of {', '.join(sorted(MACROS))}")
    else:
        expanded = expr
    parts = expanded.split(" ")
    if len(parts) != 5:
        hint = ""
        if len(parts) == 6:
            # Pasted from /etc/crontab or cron.d, where a user name follows the fifth field.
            hint = (
                f"; a sixth field like {parts[5]!r} is the user field of /etc/crontab and "
                "cron.d: give the first 5 fields here, the user with --user and the command "
                "after `--`"
            )
        raise CronError(
            f"bad cron expression {expr!r}: has {len(parts)} fields, needs 5 "
            f"(minute hour day-of-month month day-of-week){hint}"
        )
    minutes, hours, days, months, weekdays = (
        _parse_field(part, i, expr, strict) for i, part in enumerate(parts)
    )
    if 7 in weekdays:
        weekdays = (weekdays - {7}) | {0}
    parsed = CronExpr(
        text=expr,
        expanded=expanded,
        minutes=minutes,
        hours=hours,
        days=days,
        months=months,
        weekdays=weekdays,
        dom_star=parts[2].startswith("*"),
        dow_star=parts[4].startswith("*"),
        fixed_time=not (parts[0].startswith("*") or parts[1].startswith("*")),
        minutes_of_day=tuple(sorted(h * 60 + m for h in hours for m in minutes)),
    )
    _refuse_never(parsed)
    return parsed


def _refuse_never(expr: CronExpr) -> None:
    """Raise if no date can ever match (e.g. `0 0 30 2 *`)."""
    if not (expr.dom_star or expr.dow_star):
        return  # OR-ed: every month has every weekday.
    # 2001-2028: 28 years hold every weekday/date combination, Feb 29 included.
    for year in range(2001, 2029):
        for month in sorted(expr.months):
            for day in sorted(expr.days):
                if day <= _DAYS_IN_MONTH[month - 1]:
                    try:
                        d = date(year, month, day)
                    except ValueError:
                        continue
                    if expr.matches_day(d):
                        return
    raise CronError(
        f"cron expression {expr.text!r} can never fire: no month has that day"
        + ("" if expr.dow_star else " on that weekday")
        + "; check the day-of-month, month and day-of-week fields"
    )


def load_zone(name: str) -> ZoneInfo:
    """Return the IANA zone `name`, or raise a ValidationError naming the fix."""
    try:
        return _zone(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValidationError(
            f"unknown time zone {name!r}: use an IANA name such as UTC, Europe/Berlin "
            f"or America/New_York (see `timedatectl list-timezones`)"
        ) from None


@cache
def _zone(name: str) -> ZoneInfo:
    if not name or name.startswith("/") or ".." in name:
        raise ValueError(name)
    return ZoneInfo(name)


def _is_imaginary(local: datetime) -> bool:
    # Same tzinfo: comparison ignores fold and compares wall time, so a round trip through UTC
    # changes the wall time exactly when it does not exist.
    return local != local.astimezone(UTC).astimezone(local.tzinfo)


@functools.lru_cache(maxsize=8192)
def _has_transition(d: date, zone: tzinfo) -> bool:
    # Memoised: every job in a zone asks about the same few dates.
    start = datetime.combine(d, time(0), zone)
    end = datetime.combine(d + _ONE_DAY, time(0), zone)
    return start.utcoffset() != end.utcoffset()


def _transition_day_instants(expr: CronExpr, d: date, zone: tzinfo) -> list[datetime]:
    """All fire instants cron attributes to local date `d` when `d` has a DST change."""
    found: dict[datetime, datetime] = {}
    for mod in expr.minutes_of_day:
        wall = datetime.combine(d, time(mod // 60, mod % 60), zone)
        if _is_imaginary(wall):
            if not expr.fixed_time:
                continue
            while _is_imaginary(wall):
                wall = (wall.replace(tzinfo=None) + timedelta(minutes=1)).replace(tzinfo=zone)
            candidates = [wall]
        else:
            later = wall.replace(fold=1)
            repeated = later.utcoffset() != wall.utcoffset()
            candidates = [wall, later] if repeated and not expr.fixed_time else [wall]
        for local in candidates:
            found.setdefault(local.astimezone(UTC), local)
    return [found[k] for k in sorted(found)]


class Schedule(NamedTuple):
    """A cron expression bound to a time zone."""

    expr: CronExpr
    zone: ZoneInfo

    @classmethod
    def of(cls, cron: str, zone: str) -> Schedule:
        """Parse `cron` and load `zone` (memoised: a fleet repeats the same few schedules)."""
        return _schedule_of(cron, zone)

    def _day_after(self, d: date, after: datetime) -> Iterator[datetime]:
        """Yield the instants cron attributes to local date `d` that lie after `after`."""
        if not self.expr.matches_day(d):
            return
        if _has_transition(d, self.zone):
            # Compare in UTC: same-zone comparison ignores fold, so both passes of a repeated
            # hour would look equal.
            limit = after.astimezone(UTC)
            yield from (
                x
                for x in _transition_day_instants(self.expr, d, self.zone)
                if x.astimezone(UTC) > limit
            )
            return
        mods = self.expr.minutes_of_day
        local = after.astimezone(self.zone)
        if local.date() > d:
            return
        # First minute-of-day strictly after `local`; a slot exactly at `after` is not after it.
        i = bisect.bisect_right(mods, _sec_of_day(local) / 60) if local.date() == d else 0
        for mod in mods[i:]:
            yield datetime.combine(d, time(mod // 60, mod % 60), self.zone)

    def _day_until(self, d: date, at: datetime) -> datetime | None:
        """Return the last instant attributed to local date `d` that is at or before `at`."""
        if not self.expr.matches_day(d):
            return None
        if _has_transition(d, self.zone):
            limit = at.astimezone(UTC)
            return max(
                (
                    x
                    for x in _transition_day_instants(self.expr, d, self.zone)
                    if x.astimezone(UTC) <= limit
                ),
                key=lambda x: x.astimezone(UTC),
                default=None,
            )
        mods = self.expr.minutes_of_day
        local = at.astimezone(self.zone)
        if local.date() < d:
            return None
        i = bisect.bisect_right(mods, _sec_of_day(local) / 60) if local.date() == d else len(mods)
        if i == 0:
            return None
        mod = mods[i - 1]
        return datetime.combine(d, time(mod // 60, mod % 60), self.zone)

    def iter_after(self, after: datetime) -> Iterator[datetime]:
        """Yield fire instants strictly after `after`, ascending, in the job's zone."""
        _require_aware(after)
        # Start a day early: a slot shifted out of a DST gap can belong to the previous date.
        d = after.astimezone(self.zone).date() - _ONE_DAY
        limit = d + timedelta(days=_SEARCH_DAYS)
        last = after
        while d < limit:
            if d.month not in self.expr.months:
                d = (d.replace(day=1) + timedelta(days=32)).replace(day=1)
                continue
            for x in self._day_after(d, last):
                last = x
                # The horizon bounds the gap to the next instant, not the whole walk: a
                # schedule firing every four years (Feb 29) still yields as many as asked.
                limit = d + timedelta(days=_SEARCH_DAYS)
                yield x
            d += _ONE_DAY

    def next_after(self, after: datetime, count: int = 1) -> list[datetime]:
        """Return the next `count` fire instants strictly after `after`."""
        out: list[datetime] = []
        if count <= 0:
            return out
        for x in self.iter_after(after):
            out.append(x)
            if len(out) >= count:
                break
        return out

    def fires_at(self, at: datetime) -> bool:
        """Return whether `at` is one of the fire instants."""
        # As UTC: Python never calls instants in a repeated hour equal across zones.
        found = self.latest_at_or_before(at)
        return found is not None and found.astimezone(UTC) == at.astimezone(UTC)

    def latest_at_or_before(self, at: datetime) -> datetime | None:
        """Return the last fire instant at or before `at`, or None within the search horizon."""
        _require_aware(at)
        d = at.astimezone(self.zone).date() + _ONE_DAY
        for _ in range(_SEARCH_DAYS):
            found = self._day_until(d, at)
            if found is not None:
                # The day before can still hold a later slot, shifted forward out of a DST gap.
                earlier = self._day_until(d - _ONE_DAY, at)
                return (
                    found
                    if earlier is None or found.astimezone(UTC) > earlier.astimezone(UTC)
                    else earlier
                )
            d -= _ONE_DAY
        return None


@functools.lru_cache(maxsize=4096)
def _schedule_of(cron: str, zone: str) -> Schedule:
    return Schedule(parse_cron(cron, strict=False), load_zone(zone))


# A scheduler fires at or after its slot by its own clock; this absorbs a clock read a moment
# before the slot (cron and systemd start jobs within a second of it).
FIRING_EARLY = timedelta(seconds=5)
# The most two clocks may differ and still name the same slot for every schedule.
MAX_TOLERANCE = timedelta(minutes=5)
# The earliest, by the database clock, a host ahead of it may claim a slot beyond the tolerance.
MAX_EARLY = 2 * MAX_TOLERANCE


def tolerance(expr: CronExpr) -> timedelta:
    """Return how far apart two clocks may be and still agree on every slot of `expr`.

    Half the shortest gap between two slots on a day without a DST change, at most
    MAX_TOLERANCE. The gap into the next day assumes the next day fires too, so the
    tolerance is never more than half a real gap.
    """
    mods = expr.minutes_of_day
    gaps = [b - a for a, b in itertools.pairwise(mods)]
    gaps.append(24 * 60 - mods[-1] + mods[0])
    return min(MAX_TOLERANCE, timedelta(minutes=min(gaps)) / 2)


class ClaimWindow(NamedTuple):
    """The slots a firing may claim at one database instant, oldest and newest (UTC)."""

    oldest: datetime | None
    newest: datetime | None

    def holds(self, slot: datetime) -> bool:
        """Return whether `slot` lies in the window."""
        at = slot.astimezone(UTC)
        return (self.oldest is None or at >= self.oldest) and (
            self.newest is None or at <= self.newest
        )


def claim_window(schedule: Schedule, db_now: datetime) -> ClaimWindow:
    """Return the window of slots a firing at database time `db_now` may claim.

    From the slot that was the latest one tolerance ago (a host behind the database by up to
    the tolerance still serves its own slot; a late firing serves the latest slot, however
    old) to the latest one a tolerance ahead, or the first slot after `db_now` if that is
    later but at most MAX_EARLY away (a host ahead fires before the database reaches its
    slot).
    """
    tol = tolerance(schedule.expr)
    db_now = db_now.astimezone(UTC)  # arithmetic in a zone's repeated hour loses the pass
    oldest = schedule.latest_at_or_before(db_now - tol)
    ahead = [x.astimezone(UTC) for x in schedule.next_after(db_now)]
    soon = schedule.latest_at_or_before(db_now + tol)
    newest = max(
        [x for x in ahead if x - db_now <= MAX_EARLY] + ([soon.astimezone(UTC)] if soon else []),
        default=None,
    )
    return ClaimWindow(None if oldest is None else oldest.astimezone(UTC), newest)


class SlotPick(NamedTuple):
    """The slot a firing serves, and how it was found."""

    slot: datetime | None
    fired_for: datetime | None  # the slot by the clock that fired, claimed or not
    lateness: timedelta  # how long after `slot` the firing came, by the clock that chose it
    tolerance: timedelta
    in_window: bool  # False: the firing clock's slot was outside the window, the database chose


def pick_slot(schedule: Schedule, fired: datetime, db_now: datetime) -> SlotPick:
    """Return the slot a firing serves; `fired` is the clock that fired it, read now.

    The firing serves the latest slot at or before `fired` (plus FIRING_EARLY): a scheduler
    fires at or after its slot by its own clock, so every host names the same slot for the
    same firing, whatever its skew, and lateness measured on that clock is real delay, not
    skew. Within the tolerance this is the slot nearest the database clock at the instant
    the scheduler fired. A slot outside the claim window at `db_now` is never claimed (a
    clock that far off could take a slot whose row prune already deleted, or one several
    slots ahead); the database clock's own slot is taken instead.
    """
    tol = tolerance(schedule.expr)
    fired, db_now = fired.astimezone(UTC), db_now.astimezone(UTC)
    own = schedule.latest_at_or_before(fired + FIRING_EARLY)
    if own is not None and claim_window(schedule, db_now).holds(own):
        return SlotPick(own, own, fired - own, tol, True)
    slot = schedule.latest_at_or_before(db_now + FIRING_EARLY)
    late = timedelta(0) if slot is None else db_now - slot
    return SlotPick(slot, own, late, tol, False)


def _sec_of_day(local: datetime) -> float:
    return local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6


def _require_aware(dt: datetime) -> None:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError("schedule computations need timezone-aware datetimes")
