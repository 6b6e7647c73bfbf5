"""Pure text renderers: jobs as systemd units, crontab lines and Kubernetes CronJobs.

Nothing here touches the file system or the database; `now` is always given.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache

from schedctl.models import KILL_GRACE_SECONDS
from schedctl.schedule import Schedule, load_zone

MANAGED_MARK = "# Managed by `schedctl sync`: edits here are overwritten; change the job instead."
DEFAULT_ENV_FILE = "/etc/schedctl/schedctl.env"
# Exact slots are listed this far either side of a UTC-offset change (the largest DST shift
# in tzdata is two hours; a slot moved out of a gap lands right after it).
DST_MARGIN = timedelta(hours=3)
# DST changes this far ahead are rendered; sync runs every minute, so the window slides on.
HORIZON = timedelta(days=400)
STOP_GRACE = 30  # seconds on top of the job's timeout and schedctl's own kill grace
KILL_GRACE = KILL_GRACE_SECONDS


@dataclass(frozen=True)
class Target:
    """Where and how the rendered units call schedctl."""

    schedctl: str  # absolute path of the schedctl executable on the host
    env_file: str | None = DEFAULT_ENV_FILE


def compress(values: Iterable[int], width: int = 2) -> str:
    """Write sorted ints as a systemd list, runs of three or more as `a..b`."""
    vals = sorted(values)
    parts: list[str] = []
    i = 0
    while i < len(vals):
        j = i
        while j + 1 < len(vals) and vals[j + 1] == vals[j] + 1:
            j += 1
        if j - i >= 2:
            parts.append(f"{vals[i]:0{width}d}..{vals[j]:0{width}d}")
        else:
            parts.extend(f"{v:0{width}d}" for v in vals[i : j + 1])
        i = j + 1
    return ",".join(parts)


@cache
def offset_changes(zone_name: str, start: date, end: date) -> tuple[datetime, ...]:
    """Return the instants (UTC, to the minute) where `zone_name`'s UTC offset changes."""
    zone = load_zone(zone_name)
    out: list[datetime] = []
    t = datetime(start.year, start.month, start.day, tzinfo=UTC)
    stop = datetime(end.year, end.month, end.day, tzinfo=UTC)
    step = timedelta(hours=6)
    while t < stop:
        a, b = t.astimezone(zone).utcoffset(), (t + step).astimezone(zone).utcoffset()
        if a != b:
            lo, hi = t, t + step  # offset(lo) = a, offset(hi) = b
            while hi - lo > timedelta(minutes=1):
                mid = lo + (hi - lo) / 2
                mid = mid.replace(second=0, microsecond=0)
                if mid <= lo:
                    break
                if mid.astimezone(zone).utcoffset() == a:
                    lo = mid
                else:
                    hi = mid
            out.append(hi)
        t += step
    return tuple(out)


def one_line(text: str) -> str:
    """Make free text one line, so it cannot start a new unit setting or crontab entry."""
    return " ".join(text.split())


def slots_near_offset_changes(
    schedule: Schedule, zone: str, now: datetime
) -> Iterator[list[datetime]]:
    """Yield, per UTC-offset change of `zone` still ahead, the slots within DST_MARGIN of it."""
    for change in offset_changes(zone, (now - DST_MARGIN).date(), (now + HORIZON).date()):
        if change + DST_MARGIN < now:
            continue
        near: list[datetime] = []
        for x in schedule.iter_after(change - DST_MARGIN):
            if x > change + DST_MARGIN:
                break
            near.append(x)
        yield near


def zone_offsets(zone_name: str, now: datetime) -> set[int]:
    """Return every UTC offset (minutes) `zone_name` uses between now and the horizon."""
    zone = load_zone(zone_name)
    offs = {int((now.astimezone(zone).utcoffset() or timedelta()).total_seconds() // 60)}
    for change in offset_changes(zone_name, now.date(), (now + HORIZON).date()):
        offs.add(int((change.astimezone(zone).utcoffset() or timedelta()).total_seconds() // 60))
    return offs
