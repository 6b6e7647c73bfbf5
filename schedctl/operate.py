"""Use cases over run history: report, missed slots, check, metrics and prune."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from schedctl.clock import Clock
from schedctl.errors import NotFoundError, ValidationError
from schedctl.fleet import HostView, live_carriers, no_carrier_reason, stale_reason, uses_placement
from schedctl.fleet import views as host_views
from schedctl.history import (
    AppLockHolder,
    ChangeRecord,
    JobChange,
    LockHolder,
    Run,
    WindowStats,
)
from schedctl.locking import LOCK_NAMESPACE, FileLock
from schedctl.models import Job, RunStatus
from schedctl.report import (
    MISS_GRACE,
    JobCheck,
    JobFacts,
    JobReport,
    Period,
    Severity,
    check_job,
    expected_slots,
    job_report,
    judged_from,
    latest_due,
    metrics_text,
    miss_deadline,
    missing,
    periods,
    single_schedule,
)
from schedctl.schedule import Schedule, claim_window
from schedctl.validate import check_name

if TYPE_CHECKING:
    from schedctl.db.repository import RefusalRow, Repository

DEFAULT_WINDOW = 24 * 3600
DEFAULT_OLDER_THAN = 90 * 86400
DEFAULT_KEEP_FAILED = 180 * 86400
PRUNE_BATCH = 5000
# Fits a 32-bit signed integer on every backend; larger is "all", which nobody can page through.
MAX_HISTORY_LIMIT = 1_000_000_000


class Report(NamedTuple):
    """`schedctl report`: the window and one row per job."""

    since: datetime
    until: datetime
    rows: list[JobReport]
    facts: list[JobFacts]


def _spans(job: Job, changes: dict[int, list[JobChange]]) -> list[Period]:
    found = changes.get(job.id)
    if not found:  # defined by a schedctl that kept no changes: judge from its creation on
        s = job.spec
        found = [JobChange(job.created_at, s.enabled, s.schedule, s.timezone)]
    return periods(found)


def hosts(store: Repository, jobs: list[Job] | None = None) -> list[HostView]:
    """Return the registered hosts with the jobs each carries, aged by the database clock."""
    rows = store.list_hosts()
    if not rows:
        return []
    return host_views(rows, store.list_jobs() if jobs is None else jobs, store.now())


def forget_host(store: Repository, name: str) -> None:
    """Delete a host's row (a host taken out of the fleet); raise if there is none."""
    if not store.forget_host(name):
        raise NotFoundError(f"no host named {name!r}: see `schedctl hosts`")


def _placement_facts(job: Job, fleet: list[HostView]) -> dict[str, Any]:
    live = live_carriers(job, fleet)
    reason = no_carrier_reason(job, fleet) if live == () else ""
    return {"live_hosts": live, "no_host_reason": reason}


def _facts(store: Repository, jobs: list[Job], since: datetime, now: datetime) -> list[JobFacts]:
    fleet = hosts(store, jobs) if uses_placement(jobs) else []
    changes = store.changes_by_job()
    marks = store.pruned_before()
    stats = store.window_stats(since, now - MISS_GRACE)
    last = store.last_outcomes()
    running, beats = store.running()
    out = []
    for job in jobs:
        success, failure = last.get(job.id, (None, None))
        run = running.get(job.id)
        newest = max((o for o in (success, failure) if o), key=lambda o: o.id, default=None)
        out.append(
            JobFacts(
                job=job,
                spans=_spans(job, changes),
                pruned_before=marks.get(job.id),
                stats=stats.get(job.id, WindowStats()),
                last_success=success.at if success else None,
                last_failure=failure.at if failure else None,
                running=run,
                running_heartbeat=beats.get(run.id) if run else None,
                last_duration=newest.duration if newest else None,
                **_placement_facts(job, fleet),
            )
        )
    return out


def _missed_counts(
    store: Repository, facts: list[JobFacts], since: datetime, now: datetime
) -> dict[int, int]:
    """Count missed slots per job: from the window's row counts where those are exact."""
    common_end = now - MISS_GRACE  # the deadline of every job without jitter
    out: dict[int, int] = {}
    for f in facts:
        end = miss_deadline(f.job, now)
        start = judged_from(since, f.spans, f.pruned_before)
        if start > end:
            out[f.job.id] = 0
            continue
        if (start, end) == (since, common_end) and single_schedule(f.spans, start, end):
            # One schedule over the whole window: every first attempt in it serves one of
            # these slots, so counting rows is exact.
            expected = len(expected_slots(f.spans, start, end))
            out[f.job.id] = max(0, expected - f.stats.slots_present)
        else:
            out[f.job.id] = len(_missed_in(store, f, since, now))
    return out


def report(
    store: Repository, clock: Clock, since_seconds: int = DEFAULT_WINDOW, tag: str | None = None
) -> Report:
    """Return the per-job report for the last `since_seconds`."""
    if since_seconds < 60:
        raise ValidationError("--since must be at least 1m")
    now = clock.now()
    since = now - timedelta(seconds=since_seconds)
    jobs = [j for j in store.list_jobs() if tag is None or tag in j.spec.tags]
    facts = _facts(store, jobs, since, now)
    missed = _missed_counts(store, facts, since, now)
    rows = [job_report(f, missed.get(f.job.id, 0), now) for f in facts]
    return Report(since, now, rows, facts)


def _missed_in(store: Repository, f: JobFacts, since: datetime, now: datetime) -> list[datetime]:
    start = judged_from(since, f.spans, f.pruned_before)
    end = miss_deadline(f.job, now)
    if start > end:
        return []
    present = store.slots_between(f.job.id, start, end)
    return missing(expected_slots(f.spans, start, end), present)


def missed_slots(
    store: Repository, clock: Clock, name: str, since_seconds: int = 7 * 86400
) -> list[datetime]:
    """Return the slots of `name` in the window that no host ran, oldest first."""
    job = store.load_job(check_name(name))
    spans = _spans(job, store.changes_by_job())
    pruned = store.pruned_before().get(job.id)
    facts = JobFacts(job, spans, pruned)
    now = clock.now()
    return _missed_in(store, facts, now - timedelta(seconds=since_seconds), now)


def missed_since(
    store: Repository, jobs: list[Job], starts: dict[int, datetime], now: datetime
) -> list[tuple[Job, list[datetime]]]:
    """Return each job's slots from `starts[job.id]` on that no host ran, as `report` counts."""
    changes = store.changes_by_job()
    marks = store.pruned_before()
    out = []
    for job in jobs:
        facts = JobFacts(job, _spans(job, changes), marks.get(job.id))
        out.append((job, _missed_in(store, facts, starts[job.id], now)))
    return out


HTML_MAX_RUNS = 20_000


def html_report(store: Repository, rep: Report) -> str:
    """Return the report as one self-contained HTML page with a run timeline."""
    from schedctl.render.html import render_html

    runs = store.runs_since(rep.since, [f.job.id for f in rep.facts], HTML_MAX_RUNS)
    note = (
        f"the timeline shows the newest {HTML_MAX_RUNS} runs" if len(runs) >= HTML_MAX_RUNS else ""
    )
    missed = {
        f.job.name: _missed_in(store, f, rep.since, rep.until)
        for f, row in zip(rep.facts, rep.rows, strict=True)
        if row.missed
    }
    return render_html(rep.rows, runs, missed, rep.since, rep.until, "schedctl report", note)


def check(db: Repository, clock: Clock, names: list[str] | None = None) -> list[JobCheck]:
    """Judge every job (or the named ones) by monitoring rules."""
    wanted = None if not names else [check_name(n) for n in names]
    now = clock.now()
    # p95 of the last week is what "running unusually long" is measured against.
    data = db.check_data(wanted, now - timedelta(days=7))
    if wanted is not None:
        known = {j.name for j in data.jobs} | {e.job for e in data.malformed}
        for n in wanted:
            if n not in known:
                db.load_job(n)  # raises the usual "no job named" error
    spans = {job.id: _spans(job, data.changes) for job in data.jobs}
    # Fleets repeat a few schedules: judge each (periods, deadline) once.
    memo: dict[tuple[tuple[Period, ...], datetime], datetime | None] = {}
    dues = {}
    for j in data.jobs:
        key = (tuple(spans[j.id]), miss_deadline(j, now))
        if key not in memo:
            memo[key] = latest_due(*key)
        dues[j.id] = memo[key]
    ran = db.slots_that_ran([(j, d) for j, d in dues.items() if d is not None])
    # Hosts matter once jobs are placed; a fleet without `--on` is judged as before.
    fleet = hosts(db, data.jobs) if uses_placement(data.jobs) else []
    out = []
    for job in data.jobs:
        run = data.running.get(job.id)
        due = dues[job.id]
        facts = JobFacts(
            job=job,
            spans=spans[job.id],
            pruned_before=data.pruned_before.get(job.id),
            stats=WindowStats(p95=data.p95.get(job.id)),
            running=run,
            running_heartbeat=data.heartbeats.get(run.id) if run else None,
            last_run=data.last.get(job.id),
            due_slot=due,
            due_slot_ran=due is not None and (job.id, due.timestamp()) in ran,
            refusals=tuple(
                f"refused on host {r.host} ({r.kind}): {r.reason}; {r.times} time(s) since "
                f"{r.first_at.isoformat()}"
                for r in data.refusals.get(job.id, ())
            ),
            **_placement_facts(job, fleet),
        )
        out.append(check_job(facts, now))
    out += [JobCheck(e.job, Severity.CRITICAL, (str(e),)) for e in data.malformed]
    out.sort(key=lambda c: c.name)
    if wanted is None:
        out += [
            JobCheck(h.name, Severity.CRITICAL, (stale_reason(h),), kind="host")
            for h in fleet
            if h.stale
        ]
    return out


def metrics(store: Repository, clock: Clock) -> str:
    """Return Prometheus metrics for every job (missed slots over the last 24 h)."""
    rep = report(store, clock)
    checks = check(store, clock)
    durations = {f.job.name: f.last_duration for f in rep.facts if f.last_duration is not None}
    return metrics_text(rep.rows, store.status_totals(), durations, checks)


# -- prune -------------------------------------------------------------------------------------


class PruneResult(NamedTuple):
    """What `prune` deleted (or would delete), by job name, and what it kept for claims."""

    deleted: Counter[str]
    dry_run: bool
    # Past their retention but kept: a firing may still pick their slot (see _claimable_from).
    kept_claimable: Counter[str]

    @property
    def total(self) -> int:
        """Return the number of runs deleted."""
        return sum(self.deleted.values())


def _claimable_from(job: Job, db_now: datetime) -> datetime:
    """Return the oldest slot of `job` a firing may still claim, now or later.

    Every firing from `db_now` on claims a slot of the claim window at its own time, whose
    oldest slot only moves forward (docs/how-run-works.md, step 2).
    """
    schedule = Schedule.of(job.spec.schedule, job.spec.timezone)
    return claim_window(schedule, db_now).oldest or _EPOCH


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def prune(
    store: Repository,
    clock: Clock,
    older_than: int = DEFAULT_OLDER_THAN,
    keep_failed: int = DEFAULT_KEEP_FAILED,
    dry_run: bool = False,
    on_plan: Callable[[int], None] = lambda total: None,
    progress: Callable[[int], None] = lambda n: None,
    batch: int = PRUNE_BATCH,
) -> PruneResult:
    """Delete runs past their retention; failures kept for `keep_failed` (or longer).

    The first attempt of every slot a firing may still claim stays, whatever the retention:
    without its row that slot could be claimed, and run, a second time.
    """
    from schedctl.db.repository import Cutoffs

    if older_than < 60 or keep_failed < 60:
        raise ValidationError("--older-than and --keep-failed must be at least 1m")
    now = clock.now()
    db_now = store.now()  # claims are judged by the database's clock, so is what they need
    # A malformed job's retention and claimable slots are unknown: delete nothing until it
    # is repaired or removed.
    jobs = store.list_jobs(skip_malformed=False)

    def cut(job: Job | None, keep: int) -> Cutoffs:
        # Failures stay for --keep-failed, or for the job's own retention when that is longer.
        return Cutoffs(
            None if job is None else job.id,
            now - timedelta(seconds=keep),
            now - timedelta(seconds=max(keep, keep_failed)),
            None if job is None else _claimable_from(job, db_now),
        )

    plan = [cut(None, older_than)]  # runs of removed jobs follow the default
    plan += [cut(j, j.spec.retention_seconds or older_than) for j in jobs]
    counts = store.prune_count(plan)
    kept = store.prune_kept(plan)
    if dry_run:
        return PruneResult(counts, True, kept)
    on_plan(sum(counts.values()))
    # Marked before anything goes: each batch commits on its own, so a prune cut off halfway
    # must already have said which slots are no longer judged, or the slots of the runs it
    # did delete would count as missed. A mark with its runs still there only judges less.
    keep_of = {j.id: j.spec.retention_seconds or older_than for j in jobs}
    store.prune_mark({j: now - timedelta(seconds=k) for j, k in keep_of.items()})
    deleted = store.prune_delete(plan, batch, progress)
    return PruneResult(deleted, False, kept)


def ran_slots(store: Repository, pairs: Iterable[tuple[int, datetime]]) -> set[tuple[int, float]]:
    """Return which (job id, slot) pairs already have a run (as job id, POSIX time)."""
    return store.slots_that_ran(pairs)


# -- runs and locks -------------------------------------------------------------------------


def history(
    store: Repository,
    clock: Clock,
    job: str | None = None,
    status: str | None = None,
    since_seconds: int | None = None,
    host: str | None = None,
    limit: int = 50,
) -> list[Run]:
    """Return recorded runs, newest first."""
    if status is not None and status not in {s.value for s in RunStatus}:
        raise ValidationError(
            f"unknown status {status!r}: use one of {', '.join(s.value for s in RunStatus)}"
        )
    if not 1 <= limit <= MAX_HISTORY_LIMIT:
        raise ValidationError(f"--limit must be between 1 and {MAX_HISTORY_LIMIT}")
    since = None if since_seconds is None else clock.now() - timedelta(seconds=since_seconds)
    return store.list_runs(check_name(job) if job else None, status, since, host, limit)


def changes(
    store: Repository,
    clock: Clock,
    job: str | None = None,
    since_seconds: int | None = None,
    limit: int = 50,
) -> list[ChangeRecord]:
    """Return the recorded changes to jobs (a removed job's too), newest first."""
    if not 1 <= limit <= MAX_HISTORY_LIMIT:
        raise ValidationError(f"--limit must be between 1 and {MAX_HISTORY_LIMIT}")
    since = None if since_seconds is None else clock.now() - timedelta(seconds=since_seconds)
    return store.change_records(check_name(job) if job else None, since, limit)


def refusals(store: Repository, job: str | None, host: str | None) -> list[RefusalRow]:
    """Return hosts' standing refusals of jobs' current definitions (of `job`, on `host`)."""
    name = check_name(job) if job else None
    return [r for r in store.refusals() if name in (None, r.job_name) and host in (None, r.host)]


def get_run(store: Repository, run_id: int) -> Run:
    """Return one run with its output tail."""
    if not 1 <= run_id < 2**63:
        raise NotFoundError(f"no run with id {run_id}: see `schedctl history` for run ids")
    return store.get_run(run_id)


def latest_run(store: Repository, job: str, failed_only: bool) -> Run:
    """Return `job`'s newest ended run, or its newest failure, with its output tail."""
    found = store.latest_run(check_name(job), failed_only)
    if found is not None:
        return found
    store.load_job(job)  # no such job: say that, not that it has no runs
    what = "failed run" if failed_only else "run that ended"
    raise NotFoundError(
        f"job {job!r} has no {what} recorded: see `schedctl history {job}`"
        + ("" if failed_only else f", or run it now with `schedctl run {job} --now`")
    )


def lock_holders(store: Repository, lock_dir: Path) -> list[LockHolder]:
    """Return which job locks are held now, with the run holding each where known."""
    names = store.job_names()
    running = store.running_by_job()
    if store.url.backend == "postgresql":
        held = [job_id for job_id, _ in store.lock_holders(LOCK_NAMESPACE)]
    else:
        held = [j for j in sorted(names) if FileLock(lock_dir, j).holder_pid() is not None]
    out = []
    for job_id in held:
        run = running.get(job_id)
        out.append(
            LockHolder(
                job_id=job_id,
                job_name=names.get(job_id),
                run_id=run.id if run else None,
                host=run.host if run else None,
                pid=run.pid if run else None,
                # The lock is taken between the claim and the recorded start: until the start
                # is written, the claim time is the best bound on when it was taken.
                since=(run.started_at or run.claimed_at) if run else None,
            )
        )
    return out


def app_lock_holders(store: Repository, lock_dir: Path) -> list[AppLockHolder]:
    """Return which in-app locks (`schedctl.advisory_lock`) are held now, and by whom."""
    from schedctl import guard

    if store.url.backend == "postgresql":
        out = []
        for key, backend_pid, app_name, since in store.app_lock_holders(guard.APP_LOCK_NAMESPACE):
            name, pid, host = guard.parse_application_name(app_name, key)
            out.append(AppLockHolder(name, str(key), host, pid, backend_pid, since))
        return out
    return [
        AppLockHolder(name, path.stem, host, pid, None, since)
        for path in sorted(lock_dir.glob(f"{guard.APP_LOCK_PREFIX}*.lock"))
        for pid, host, name, since in [guard.file_holder(path)]
        if pid is not None
    ]


class Upcoming(NamedTuple):
    """One fire time of `schedctl upcoming`, with the job's last ended run."""

    at: datetime
    job: Job
    last_at: datetime | None
    last_status: str | None

    def to_dict(self, now: datetime) -> dict[str, Any]:
        """Return the JSON form used by `upcoming --json`."""
        return {
            "next": self.at.isoformat(timespec="seconds"),
            "left_seconds": round((self.at - now).total_seconds()),
            "job": self.job.name,
            "enabled": self.job.spec.enabled,
            "schedule": self.job.spec.schedule,
            "timezone": self.job.spec.timezone,
            "on": self.job.spec.placement,
            "last": None if self.last_at is None else self.last_at.isoformat(timespec="seconds"),
            "last_result": self.last_status,
        }


MAX_UPCOMING_PER_JOB = 1000


def upcoming(
    store: Repository, now: datetime, within_seconds: int, include_disabled: bool
) -> list[Upcoming]:
    """Return each job's fire times after `now` within the window (at least its next one),
    soonest first, with its last ended run; disabled jobs only if `include_disabled`."""
    end = now + timedelta(seconds=within_seconds)
    outcomes = store.last_outcomes()
    found = []
    for job in store.list_jobs():
        if not job.spec.enabled and not include_disabled:
            continue
        ok, bad = outcomes.get(job.id, (None, None))
        last = max((o for o in (ok, bad) if o is not None), key=lambda o: o.at, default=None)
        schedule = Schedule.of(job.spec.schedule, job.spec.timezone)
        within: list[datetime] = []
        try:
            for at in schedule.iter_after(now):
                if within and (at > end or len(within) >= MAX_UPCOMING_PER_JOB):
                    break
                within.append(at)
                if at > end:  # a job due later than the window: its next fire time only
                    break
        except OverflowError:  # no fire time left before the year 9999
            pass
        for at in within:
            found.append(Upcoming(at, job, last and last.at, last and last.status))
    found.sort(key=lambda u: (u.at, u.job.name))
    return found
