"""Shaping of reports, checks and metrics from history rows: pure, `now` always given."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import Any, NamedTuple

from schedctl.history import JobChange, Run, WindowStats
from schedctl.models import FAILURE_STATUSES, Job, iso
from schedctl.schedule import Schedule, tolerance

# A slot counts as missed once its jitter plus this much has passed without a run row.
MISS_GRACE = timedelta(minutes=1)
# A running row whose heartbeat is older than this has a runner that stopped making progress.
STUCK_HEARTBEAT = timedelta(minutes=2)


class Period(NamedTuple):
    """A stretch of a job's life under one schedule: [start, end), end None = still going."""

    start: datetime
    end: datetime | None
    enabled: bool
    schedule: str
    timezone: str


def periods(changes: Sequence[JobChange]) -> list[Period]:
    """Turn a job's changes (any order) into consecutive periods."""
    ordered = sorted(changes, key=lambda c: c.at)
    out = []
    for i, c in enumerate(ordered):
        end = ordered[i + 1].at if i + 1 < len(ordered) else None
        out.append(Period(c.at, end, c.enabled, c.schedule, c.timezone))
    return out


def miss_deadline(job: Job, now: datetime) -> datetime:
    """Return the latest slot that can already count as missed at `now`."""
    return now - timedelta(seconds=job.spec.jitter_seconds) - MISS_GRACE


def expected_slots(spans: Sequence[Period], start: datetime, end: datetime) -> list[datetime]:
    """Return the slots in [start, end] of the enabled periods, ascending, in UTC."""
    out: list[datetime] = []
    for p in spans:
        lo = max(start, p.start)
        hi = end if p.end is None else min(end, p.end - timedelta(microseconds=1))
        if not p.enabled or lo > hi:
            continue
        schedule = Schedule.of(p.schedule, p.timezone)
        for slot in schedule.iter_after(lo - timedelta(microseconds=1)):
            if slot > hi:
                break
            out.append(slot.astimezone(UTC))
    return out


def judged_from(
    since: datetime, spans: Sequence[Period], pruned_before: datetime | None
) -> datetime:
    """Return where slots start being judged: not before the job existed or its history was pruned."""
    start = since
    if spans:
        start = max(start, spans[0].start)
    if pruned_before is not None:
        start = max(start, pruned_before)
    return start


def single_schedule(spans: Sequence[Period], start: datetime, end: datetime) -> bool:
    """Return whether one enabled period covers [start, end] (then counting rows is exact)."""
    inside = [p for p in spans if p.start <= end and (p.end is None or p.end > start)]
    return len(inside) == 1 and inside[0].enabled


def missing(expected: Iterable[datetime], present: Iterable[datetime]) -> list[datetime]:
    """Return the expected slots that have no run row."""
    have = {p.timestamp() for p in present}
    return [s for s in expected if s.timestamp() not in have]


class JobFacts(NamedTuple):
    """What the store knows about one job beyond its definition."""

    job: Job
    spans: list[Period]
    pruned_before: datetime | None = None
    stats: WindowStats = WindowStats()  # immutable: one shared empty instance is safe
    last_success: datetime | None = None
    last_failure: datetime | None = None
    running: Run | None = None
    running_heartbeat: datetime | None = None
    last_run: Run | None = None
    last_duration: float | None = None
    due_slot: datetime | None = None  # the newest slot that can already count as missed
    due_slot_ran: bool = False
    # The live hosts that carry the job; None for a job on every host (fleet.live_carriers).
    live_hosts: tuple[str, ...] | None = None
    no_host_reason: str = ""  # why none does, when none does
    # Hosts' standing refusals of the job's current definition (trust.py), one line each.
    refusals: tuple[str, ...] = ()


class JobReport(NamedTuple):
    """One row of `schedctl report`."""

    name: str
    enabled: bool
    timezone: str
    runs: int
    succeeded: int
    failed: int
    skipped: int
    missed: int
    success_rate: float | None
    p50: float | None
    p95: float | None
    max: float | None
    last_success: datetime | None
    last_failure: datetime | None
    running_host: str | None
    running_for: float | None
    next_fire: datetime | None
    tags: tuple[str, ...] = ()
    placement: str = ""
    live_hosts: tuple[str, ...] | None = None  # None: on every host, not judged by hosts

    @property
    def state(self) -> str:
        """Return the word the table colours by."""
        if self.running_host is not None:
            return "running"
        if not self.enabled:
            return "disabled"
        if self.live_hosts == ():
            return "no host"
        if self.last_failure and (not self.last_success or self.last_failure > self.last_success):
            return "failing"
        if self.missed:
            return "missed"
        return "ok"

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form used by `report --json`."""
        return {
            "job": self.name,
            "enabled": self.enabled,
            "state": self.state,
            "runs": self.runs,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "skipped": self.skipped,
            "missed": self.missed,
            "success_rate": self.success_rate,
            "duration_p50_seconds": self.p50,
            "duration_p95_seconds": self.p95,
            "duration_max_seconds": self.max,
            "last_success": iso(self.last_success),
            "last_failure": iso(self.last_failure),
            "running_host": self.running_host,
            "running_seconds": self.running_for,
            "next_fire": iso(self.next_fire),
            "tags": list(self.tags),
            "on": self.placement or None,
            "live_hosts": None if self.live_hosts is None else list(self.live_hosts),
        }


def next_fire(job: Job, now: datetime) -> datetime | None:
    """Return the job's next slot after `now`, None when disabled."""
    if not job.spec.enabled:
        return None
    found = Schedule.of(job.spec.schedule, job.spec.timezone).next_after(now)
    return found[0] if found else None


def job_report(facts: JobFacts, missed: int, now: datetime) -> JobReport:
    """Combine a job's facts and its missed-slot count into its report row."""
    s = facts.stats
    decided = s.succeeded + s.failed
    running = facts.running
    started = None if running is None else (running.started_at or running.claimed_at)
    return JobReport(
        name=facts.job.name,
        enabled=facts.job.spec.enabled,
        timezone=facts.job.spec.timezone,
        runs=s.runs,
        succeeded=s.succeeded,
        failed=s.failed,
        skipped=s.skipped,
        missed=missed,
        success_rate=None if decided == 0 else s.succeeded / decided,
        p50=s.p50,
        p95=s.p95,
        max=s.max,
        last_success=facts.last_success,
        last_failure=facts.last_failure,
        running_host=None if running is None else running.host,
        running_for=None if started is None else max(0.0, (now - started).total_seconds()),
        next_fire=next_fire(facts.job, now),
        tags=facts.job.spec.tags,
        placement=facts.job.spec.placement,
        live_hosts=facts.live_hosts,
    )


# -- check -------------------------------------------------------------------------------------


class Severity(IntEnum):
    """Monitoring-plugin states; the value is the exit code."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


class JobCheck(NamedTuple):
    """The verdict on one job, with the reasons behind it."""

    name: str
    severity: Severity
    reasons: tuple[str, ...] = ()
    kind: str = "job"  # or "host": a host that stopped syncing
    # What is only worth a WARNING on a job that is CRITICAL for other reasons.
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form used by `check --json`."""
        return {
            self.kind: self.name,
            "state": self.severity.name,
            "reasons": list(self.reasons),
            "warnings": list(self.warnings),
        }


def _ago(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def check_job(facts: JobFacts, now: datetime) -> JobCheck:
    """Judge one job by monitoring rules (see docs/monitoring.md, `check`)."""
    job = facts.job
    if facts.refusals:
        # Whatever the stored flag says: a host refused what the row holds now.
        return JobCheck(job.name, Severity.CRITICAL, facts.refusals)
    if not job.spec.enabled:
        return JobCheck(job.name, Severity.OK, ("disabled",))
    crit: list[str] = []
    warn: list[str] = []
    if facts.live_hosts == ():
        crit.append(facts.no_host_reason or f"no live host carries {job.name}")
    due = facts.due_slot
    if due is not None and not facts.due_slot_ran:
        floor = judged_from(due, facts.spans, facts.pruned_before)
        if due >= floor:
            crit.append(f"missed slot {due.isoformat()}: no host ran it")
    last = facts.last_run
    if last is not None and last.status in FAILURE_STATUSES:
        code = "" if last.exit_code is None else f", exit {last.exit_code}"
        crit.append(f"last run {last.id} {last.status}{code}")
    if last is not None and last.attempt > 1:
        warn.append(f"run {last.id} is attempt {last.attempt}: a retry happened")
    if last is not None and last.slot is not None and last.started_at is not None:
        warn += _timing(job, last)
    if last is not None and last.status == "skipped_overlap":
        warn.append(f"slot {iso(last.slot) or '-'} skipped: the previous run still held the lock")
    running = facts.running
    if running is not None:
        started = running.started_at or running.claimed_at
        elapsed = now - started
        beat = facts.running_heartbeat or started
        limit = job.spec.timeout_seconds
        if now - beat > STUCK_HEARTBEAT:
            crit.append(f"run {running.id} stuck: no heartbeat for {_ago(now - beat)}")
        elif limit is not None and elapsed.total_seconds() > limit + 120:
            crit.append(f"run {running.id} stuck: running {_ago(elapsed)}, timeout is {limit}s")
        elif facts.stats.p95 is not None and elapsed.total_seconds() > 2 * facts.stats.p95:
            warn.append(
                f"run {running.id} running {_ago(elapsed)} on {running.host}, "
                f"over twice p95 ({facts.stats.p95:.1f}s)"
            )
    if crit:
        return JobCheck(job.name, Severity.CRITICAL, tuple(crit), warnings=tuple(warn))
    if warn:
        return JobCheck(job.name, Severity.WARNING, tuple(warn))
    return JobCheck(job.name, Severity.OK, ())


def _timing(job: Job, run: Run) -> list[str]:
    """Judge when `run` started, by the clock that chose its slot, and its host's clock skew."""
    assert run.slot is not None and run.started_at is not None
    tol = tolerance(Schedule.of(job.spec.schedule, job.spec.timezone).expr)
    skew = timedelta(seconds=run.clock_skew_seconds or 0.0)
    if abs(skew) > tol:
        # `run` chose the slot by the host's clock (or, that far off, by the database's):
        # a delay measured on either clock would be the skew, not lateness.
        way = "ahead of" if skew > timedelta(0) else "behind"
        return [
            f"run {run.id} on {run.host}: its clock was {_ago(abs(skew))} {way} the "
            f"database's, beyond the job's {int(tol.total_seconds())}s tolerance (fix its time sync)"
        ]
    # A timer or cron fires by the host's clock: time spent behind the database is not delay.
    fired = run.started_at + (skew if run.trigger != "daemon" else timedelta(0))
    delay = fired - run.slot
    if delay > timedelta(seconds=job.spec.jitter_seconds) + MISS_GRACE:
        return [f"run {run.id} started {_ago(delay)} after its slot (late)"]
    return []


def latest_due(spans: Sequence[Period], deadline: datetime) -> datetime | None:
    """Return the newest slot at or before `deadline` that an enabled period was due for.

    The slots `expected_slots` judges: an edit or a disabled period since then does not
    hide the latest due slot, so `check` names the slot `report` and `history --missed` do.
    """
    starts = [p.start for p in spans]
    for p in reversed(spans[: bisect.bisect_right(starts, deadline)]):
        if not p.enabled:
            continue
        hi = deadline if p.end is None or p.end > deadline else p.end - timedelta(microseconds=1)
        slot = Schedule.of(p.schedule, p.timezone).latest_at_or_before(hi)
        if slot is not None and slot >= p.start:
            return slot.astimezone(UTC)
    return None


def summary(checks: Sequence[JobCheck]) -> tuple[Severity, str]:
    """Return the overall state and the one-line summary monitoring shows."""
    worst = max((c.severity for c in checks), default=Severity.OK)
    counts = {s: sum(1 for c in checks if c.severity is s) for s in Severity}
    jobs = sum(1 for c in checks if c.kind == "job")
    hosts = len(checks) - jobs
    judged = f"{jobs} jobs" + (f", {hosts} hosts" if hosts else "")
    if worst is Severity.OK:
        return worst, f"SCHEDCTL OK - {judged} OK"
    bad = [c.name if c.kind == "job" else f"host {c.name}" for c in checks if c.severity is worst]
    shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
    parts = [f"{counts[s]} {s.name.lower()}" for s in (Severity.CRITICAL, Severity.WARNING)]
    return worst, f"SCHEDCTL {worst.name} - {shown} ({', '.join(parts)}, {judged})"


# -- metrics -----------------------------------------------------------------------------------


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(value: float) -> str:
    return repr(float(value)) if value != int(value) else str(int(value))


def metrics_text(
    rows: Sequence[JobReport],
    totals: dict[tuple[str, str], int],
    last_durations: dict[str, float],
    checks: Sequence[JobCheck],
) -> str:
    """Return Prometheus text exposition format (version 0.0.4) for the jobs."""
    out: list[str] = []

    def family(name: str, kind: str, text: str, samples: Iterable[tuple[str, float]]) -> None:
        out.append(f"# HELP {name} {text}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(f"{name}{{{labels}}} {_num(v)}" for labels, v in samples)

    def per_job(get: Any) -> Iterable[tuple[str, float]]:
        for r in rows:
            value = get(r)
            if value is not None:
                yield f'job="{_label(r.name)}"', value

    family("schedctl_runs_total", "counter", "Runs finished, by job and final status; prune does not lower it.",
           ((f'job="{_label(j)}",status="{_label(s)}"', n) for (j, s), n in sorted(totals.items())))  # fmt: skip
    family("schedctl_job_enabled", "gauge", "1 if the job is enabled.",
           per_job(lambda r: 1 if r.enabled else 0))  # fmt: skip
    family("schedctl_last_success_timestamp_seconds", "gauge",
           "When the job last finished successfully (Unix time).",
           per_job(lambda r: r.last_success.timestamp() if r.last_success else None))  # fmt: skip
    family("schedctl_last_failure_timestamp_seconds", "gauge",
           "When the job last failed, timed out, was killed or lost (Unix time).",
           per_job(lambda r: r.last_failure.timestamp() if r.last_failure else None))  # fmt: skip
    family("schedctl_last_duration_seconds", "gauge", "Duration of the job's newest finished run.",
           per_job(lambda r: last_durations.get(r.name)))  # fmt: skip
    family("schedctl_running", "gauge", "1 while a run of the job is in progress.",
           per_job(lambda r: 1 if r.running_host else 0))  # fmt: skip
    family("schedctl_missed_slots", "gauge", "Slots in the report window no host ran.",
           per_job(lambda r: r.missed))  # fmt: skip
    family("schedctl_next_fire_timestamp_seconds", "gauge", "The job's next slot (Unix time).",
           per_job(lambda r: r.next_fire.timestamp() if r.next_fire else None))  # fmt: skip
    family("schedctl_check_state", "gauge", "`schedctl check` state: 0 OK, 1 WARNING, 2 CRITICAL.",
           ((f'job="{_label(c.name)}"', int(c.severity)) for c in checks))  # fmt: skip
    return "\n".join(out) + "\n"
