"""The hosts of a fleet as they registered: which jobs each carries, which are live (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from schedctl.durations import format_age
from schedctl.models import Job, iso
from schedctl.placement import format_labels, selector_of

if TYPE_CHECKING:
    from schedctl.db.repository import HostRow

# A host seen (by `sync`, `daemon` or `run`) this recently counts as live: it carries its jobs.
# The shipped sync timer, a per-minute `sync crontab` line and the daemon come back every minute
# or more often, so a host that misses this many in a row has stopped.
LIVE_WINDOW = timedelta(minutes=5)


class HostView(NamedTuple):
    """One row of `schedctl hosts`."""

    name: str
    labels: dict[str, str]
    version: str
    scheduler: str | None
    last_seen: datetime
    last_sync: datetime | None
    seen_seconds: float
    live: bool
    jobs: tuple[str, ...]

    @property
    def stale(self) -> bool:
        """Return whether the host synced once and has not been seen for LIVE_WINDOW."""
        return self.last_sync is not None and not self.live

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form used by `hosts --json`."""
        return {
            "name": self.name,
            "labels": self.labels,
            "version": self.version,
            "scheduler": self.scheduler,
            "last_seen": iso(self.last_seen),
            "last_sync": iso(self.last_sync),
            "seen_seconds_ago": round(self.seen_seconds, 1),
            "live": self.live,
            "jobs": list(self.jobs),
        }


def carried(jobs: Sequence[Job], labels: dict[str, str]) -> tuple[str, ...]:
    """Return the names of the enabled jobs a host with `labels` carries."""
    return tuple(
        j.name for j in jobs if j.spec.enabled and selector_of(j.spec.placement).matches(labels)
    )


def views(hosts: Sequence[HostRow], jobs: Sequence[Job], now: datetime) -> list[HostView]:
    """Return each host with its jobs and how long ago it was seen, by the database's `now`."""
    out = []
    for h in hosts:
        ago = now - h.last_seen
        out.append(
            HostView(
                h.name, h.labels, h.version, h.scheduler, h.last_seen, h.last_sync,
                max(0.0, ago.total_seconds()), ago <= LIVE_WINDOW, carried(jobs, h.labels),
            )
        )  # fmt: skip
    return out


def live_carriers(job: Job, hosts: Sequence[HostView]) -> tuple[str, ...] | None:
    """Return the live hosts that carry `job`; None for a job placed on every host.

    A job without `--on` is not judged by hosts: every host that syncs carries it, and a
    slot none of them ran shows as missed.
    """
    if not job.spec.placement:
        return None
    return tuple(h.name for h in hosts if h.live and job.name in h.jobs)


def uses_placement(jobs: Sequence[Job]) -> bool:
    """Return whether some enabled job is placed (has `--on`): then hosts must keep syncing."""
    return any(j.spec.enabled and j.spec.placement for j in jobs)


def no_carrier_reason(job: Job, hosts: Sequence[HostView]) -> str:
    """Say why no live host carries `job`, naming the hosts that would."""
    selector = selector_of(job.spec.placement)
    matching = [h for h in hosts if selector.matches(h.labels)]
    if matching:
        seen = ", ".join(
            f"{h.name} seen {format_age(h.seen_seconds, days=False)} ago" for h in matching[:3]
        )
        why = f"hosts that match are not live ({seen})"
    else:
        why = "no registered host has matching labels"
    return f"no live host carries {job.name} (--on {job.spec.placement}): {why}"


def stale_reason(host: HostView) -> str:
    """Say that a host stopped syncing."""
    return (
        f"not seen for {format_age(host.seen_seconds, days=False)} (over {int(LIVE_WINDOW.total_seconds() // 60)}m;"
        f" labels {format_labels(host.labels)}): check its sync timer, or remove it with "
        f"`schedctl hosts --forget {host.name}`"
    )
