"""report, history --missed, check, metrics and prune on real databases (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from dbtools import engine_of
from prometheus_client.parser import text_string_to_metric_families

from schedctl import operate, services
from schedctl.clock import FixedClock
from schedctl.db.repository import Repository, open_repository
from schedctl.db.tables import runs
from schedctl.models import Job, JobChanges, JobSpec
from schedctl.report import JobCheck, Severity
from schedctl.schedule import Schedule, claim_window

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)  # a Monday, away from DST changes
H = timedelta(hours=1)


def add(
    store: Repository, name: str, schedule: str, at: datetime, tz: str = "UTC", **kw: Any
) -> Job:
    spec = JobSpec(name=name, schedule=schedule, timezone=tz, command=("true",), **kw)
    return services.add_job(store, spec, FixedClock(at))


def record(
    store: Repository,
    job: Job,
    slot: datetime | None,
    status: str = "succeeded",
    *,
    attempt: int = 1,
    delay: float = 2.0,
    duration: float | None = 10.0,
    host: str = "h1",
    heartbeat: datetime | None = None,
    exit_code: int | None = None,
    skew: float | None = None,
    trigger: str = "timer",
) -> int:
    """Insert a run row as `schedctl run` would have left it."""
    base = slot or T0
    started = base + timedelta(seconds=delay)
    finished = None if status == "running" else started + timedelta(seconds=duration or 0)
    values = dict(
        job_id=job.id, job_name=job.name, job_revision=job.revision, slot=slot,
        trigger=trigger, attempt=attempt, status=status, host=host, pid=4242,
        claimed_at=started - timedelta(seconds=0.1), started_at=started,
        finished_at=finished, heartbeat_at=heartbeat or finished or started,
        exit_code=(0 if status == "succeeded" else 1) if exit_code is None else exit_code,
        duration_seconds=None if status in ("running", "skipped_overlap") else duration,
        output_bytes=0, output_truncated=False, clock_skew_seconds=skew, schedctl_version="test",
    )  # fmt: skip
    with engine_of(store).begin() as conn:
        return int(conn.execute(runs.insert().values(values).returning(runs.c.id)).scalar_one())


def check(store: Repository, clock: FixedClock, names: list[str] | None = None) -> list[JobCheck]:
    """Run `check` as the CLI does: on the run path's plain driver."""
    db = open_repository(store.url, clock)
    try:
        return operate.check(db, clock, names)
    finally:
        db.close()


def row(rep: operate.Report, name: str) -> Any:
    return next(r for r in rep.rows if r.name == name)


def test_report_counts_every_state_and_the_missed_slots(store: Repository) -> None:
    job = add(store, "hourly", "0 * * * *", T0)
    statuses = {0: "succeeded", 1: "succeeded", 2: "failed", 4: "timed_out", 5: "lost",
                6: "lock_lost", 8: "skipped_overlap", 9: "killed", 10: "succeeded"}  # fmt: skip
    for hour, status in statuses.items():
        record(store, job, T0 + hour * H, status, duration=float(hour + 1))
    busy = add(store, "busy", "*/5 * * * *", T0)
    record(store, busy, T0 + 10 * H + timedelta(minutes=25), "running",
           heartbeat=T0 + 10 * H + timedelta(minutes=29), host="h2")  # fmt: skip
    now = T0 + 10 * H + timedelta(minutes=30)
    rep = operate.report(store, FixedClock(now), 86400)
    r = row(rep, "hourly")
    # Slots 00:00..10:00 = 11; rows for 9 of them: 03:00 and 07:00 never ran.
    assert (r.runs, r.succeeded, r.failed, r.skipped, r.missed) == (9, 3, 5, 1, 2)
    assert r.success_rate == pytest.approx(3 / 8)
    # Durations of the 8 decided runs: 1, 2, 3, 5, 6, 7, 10, 11 seconds.
    assert r.max == pytest.approx(11.0)
    assert r.p50 == pytest.approx(5.5)
    assert r.p95 == pytest.approx(10.65)
    assert r.last_success == T0 + 10 * H + timedelta(seconds=2 + 11)
    assert r.last_failure == T0 + 9 * H + timedelta(seconds=2 + 10)
    assert r.next_fire == T0 + 11 * H
    assert r.state == "missed"
    b = row(rep, "busy")
    assert b.running_host == "h2" and b.running_for == pytest.approx(5 * 60 - 2)
    assert b.state == "running"
    # busy was created at T0: every 5-minute slot but the one running now never ran.
    assert b.missed == 10 * 12 + 5
    assert operate.missed_slots(store, FixedClock(now), "hourly", 86400) == [T0 + 3 * H, T0 + 7 * H]
    # A narrower window judges only its own slots.
    assert row(operate.report(store, FixedClock(now), 4 * 3600), "hourly").missed == 1


def test_missed_slots_follow_dst_in_the_jobs_zone(store: Repository) -> None:
    created = datetime(2026, 3, 25, tzinfo=UTC)
    job = add(store, "berlin", "30 2 * * *", created, tz="Europe/Berlin")
    now = datetime(2026, 4, 1, 12, tzinfo=UTC)
    expected = services.next_fires(job, created, 8)
    # 29 March has no 02:30 in Berlin: Debian cron runs it right after the gap, 03:00 CEST.
    assert datetime(2026, 3, 29, 1, 0, tzinfo=UTC) in expected
    for slot in expected:
        if slot.date().isoformat() != "2026-03-29":
            record(store, job, slot)
    found = operate.missed_slots(store, FixedClock(now), "berlin", 30 * 86400)
    assert found == [datetime(2026, 3, 29, 1, 0, tzinfo=UTC)]
    assert row(operate.report(store, FixedClock(now), 30 * 86400), "berlin").missed == 1
    # Autumn: the repeated hour holds 02:30 twice; cron runs it once, so one slot is expected.
    fall = add(store, "fall", "30 2 * * *", datetime(2026, 10, 24, tzinfo=UTC), tz="Europe/Berlin")
    later = datetime(2026, 10, 26, 12, tzinfo=UTC)
    slots = services.next_fires(fall, datetime(2026, 10, 24, tzinfo=UTC), 3)
    assert len({s.date() for s in slots}) == 3
    for s in slots:
        record(store, fall, s)
    assert operate.missed_slots(store, FixedClock(later), "fall", 7 * 86400) == []


def test_disabled_periods_are_not_missed(store: Repository) -> None:
    add(store, "pausable", "0 * * * *", T0)
    services.set_enabled(store, "pausable", False, FixedClock(T0 + 3 * H + timedelta(minutes=5)))
    services.set_enabled(store, "pausable", True, FixedClock(T0 + 6 * H + timedelta(minutes=5)))
    job = services.get_job(store, "pausable")
    for hour in (0, 1, 2, 3, 7, 8):  # 04:00-06:00 fell while disabled
        record(store, job, T0 + hour * H)
    now = T0 + 8 * H + timedelta(minutes=30)
    assert operate.missed_slots(store, FixedClock(now), "pausable", 86400) == []
    assert row(operate.report(store, FixedClock(now), 86400), "pausable").missed == 0
    # A disabled job is not missing anything now either.
    services.set_enabled(store, "pausable", False, FixedClock(now))
    later = now + 5 * H
    assert operate.missed_slots(store, FixedClock(later), "pausable", 86400) == []
    assert check(store, FixedClock(later), ["pausable"])[0].severity is Severity.OK


def test_an_edited_schedule_judges_each_slot_by_the_schedule_then(store: Repository) -> None:
    add(store, "moved", "0 * * * *", T0)
    services.edit_job(store, "moved", JobChanges(schedule="30 * * * *"), FixedClock(T0 + 2 * H + timedelta(minutes=10)))  # fmt: skip
    job = services.get_job(store, "moved")
    for slot in (T0, T0 + H, T0 + 2 * H, T0 + 2 * H + 30 * timedelta(minutes=1)):
        record(store, job, slot)
    now = T0 + 4 * H
    # Left: 03:30 under the new schedule (and 02:00, 03:00 are no longer slots).
    assert operate.missed_slots(store, FixedClock(now), "moved", 86400) == [
        T0 + 3 * H + timedelta(minutes=30)
    ]
    assert row(operate.report(store, FixedClock(now), 86400), "moved").missed == 1


def test_check_names_the_latest_due_slot_across_an_edit_and_a_disabled_period(
    store: Repository,
) -> None:
    """The slot `check` calls missed is the newest one `history --missed` lists."""
    job = add(store, "moved", "0 * * * *", T0)
    record(store, job, T0)  # 01:00 is missed
    m = timedelta(minutes=1)
    services.edit_job(store, "moved", JobChanges(schedule="30 * * * *"), FixedClock(T0 + H + 10 * m))  # fmt: skip
    services.set_enabled(store, "moved", False, FixedClock(T0 + H + 25 * m))
    services.set_enabled(store, "moved", True, FixedClock(T0 + 3 * H + 5 * m))

    def missed_now(now: datetime) -> tuple[list[str], list[datetime]]:
        reasons = check(store, FixedClock(now), ["moved"])[0].reasons
        return [r for r in reasons if "missed slot" in r], operate.missed_slots(
            store, FixedClock(now), "moved", 86400
        )

    crit = ["missed slot 2026-03-02T01:00:00+00:00: no host ran it"]
    # After the edit, no slot of the new schedule is due yet; after the disabled period,
    # none of the enabled one: 01:00 is still the latest due slot, and it was missed.
    assert missed_now(T0 + H + 20 * m) == (crit, [T0 + H])
    assert missed_now(T0 + 3 * H + 15 * m) == (crit, [T0 + H])
    record(store, job, T0 + 3 * H + 30 * m)
    assert missed_now(T0 + 3 * H + 35 * m) == ([], [T0 + H])


def test_check_gives_each_state_its_monitoring_code(store: Repository) -> None:
    now = T0 + 5 * H + timedelta(minutes=10)
    cases: dict[str, tuple[Severity, str]] = {}

    def case(name: str, severity: Severity, reason: str, **kw: Any) -> Job:
        cases[name] = (severity, reason)
        return add(store, name, "0 * * * *", T0, **kw)

    good = case("good", Severity.OK, "")
    retried = case("retried", Severity.WARNING, "retry happened")
    late = case("late", Severity.WARNING, "(late)")
    slow = case("slow", Severity.WARNING, "over twice p95")
    failed = case("failed", Severity.CRITICAL, "failed, exit 1")
    timed = case("timedout", Severity.CRITICAL, "timed_out")
    lost = case("lost", Severity.CRITICAL, "lost")
    lock = case("locklost", Severity.CRITICAL, "lock_lost")
    missed = case("missed", Severity.CRITICAL, "missed slot 2026-03-02T05:00:00+00:00")
    stuck = case("stuck", Severity.CRITICAL, "stuck: no heartbeat")
    jittery = case("jittery", Severity.OK, "", jitter_seconds=900)
    for job in (good, retried, late, slow, failed, timed, lost, lock, missed, stuck, jittery):
        for hour in range(5):
            record(store, job, T0 + hour * H)
    last = T0 + 5 * H
    record(store, good, last)
    record(store, retried, last, "failed")
    record(store, retried, last, attempt=2, delay=40)
    record(store, late, last, delay=8 * 60)
    record(store, slow, last, "running", heartbeat=now - timedelta(seconds=3))
    record(store, failed, last, "failed")
    record(store, timed, last, "timed_out", exit_code=124)
    record(store, lost, last, "lost")
    record(store, lock, last, "lock_lost")
    record(store, stuck, last, "running", heartbeat=now - timedelta(minutes=9))
    # jittery's 05:00 slot may start up to 15 minutes late: not missed yet at 05:10.
    checks = {c.name: c for c in check(store, FixedClock(now))}
    for name, (severity, reason) in cases.items():
        assert checks[name].severity is severity, (name, checks[name])
        assert reason in " ".join(checks[name].reasons), (name, checks[name])
    only = check(store, FixedClock(now), ["good", "late"])
    assert [c.name for c in only] == ["good", "late"]


def test_check_judges_lateness_by_the_clock_that_fired_the_run(store: Repository) -> None:
    now = T0 + 5 * H + timedelta(minutes=30)
    slot = T0 + 5 * H
    four = timedelta(minutes=4).total_seconds()

    def last_run(name: str, schedule: str = "0 * * * *", **kw: Any) -> JobCheck:
        job = add(store, name, schedule, T0)
        for hour in range(5):
            record(store, job, T0 + hour * H)
        record(store, job, slot, **kw)
        (found,) = check(store, FixedClock(now), [name])
        return found

    # A timer on a host 4 minutes behind the database fired at its slot by its own clock:
    # started 4 minutes after the slot by the database's, on time all the same.
    assert last_run("behind", delay=four, skew=-four).severity is Severity.OK
    # The daemon fires by the database clock: 4 minutes after the slot is late.
    daemon = last_run("daemon", delay=four, skew=-four, trigger="daemon")
    assert daemon.severity is Severity.WARNING and "(late)" in daemon.reasons[0]
    # Late by its own clock is late.
    slow = last_run("slow-start", delay=four + 120, skew=-120)
    assert slow.severity is Severity.WARNING and "4m after its slot (late)" in slow.reasons[0]
    # Beyond the job's tolerance (30 s for a minutely job): the host's clock is the problem.
    minutely = add(store, "offclock", "* * * * *", now - timedelta(minutes=3))
    for minutes in (3, 2):
        record(store, minutely, now - timedelta(minutes=minutes))
    record(store, minutely, now - timedelta(minutes=1), delay=-40, skew=40)
    (off,) = check(store, FixedClock(now), ["offclock"])
    assert off.severity is Severity.WARNING, off
    assert "40s ahead of the database's, beyond the job's 30s tolerance" in off.reasons[0]


def test_prune_keeps_the_first_attempts_of_slots_a_firing_could_still_claim(
    store: Repository,
) -> None:
    db_now = store.now()
    kept: dict[str, int] = {}
    for name, schedule in (("daily", "0 3 * * *"), ("monthly", "0 3 1 * *")):
        job = add(store, name, schedule, db_now - 100 * 24 * H, retention_seconds=60)
        sched = Schedule.of(schedule, "UTC")
        slots: list[datetime] = []
        for _ in range(3):
            found = sched.latest_at_or_before(slots[-1] - timedelta(seconds=1) if slots else db_now)
            assert found is not None
            slots.append(found)
        for slot in slots:
            record(store, job, slot)
        record(store, job, slots[0], "failed", attempt=2)  # retries never block a claim
        record(store, job, None)  # nor do manual runs
        # The oldest slot a firing may claim now: even a late one takes the latest slot.
        oldest = claim_window(sched, db_now).oldest
        assert oldest is not None
        kept[name] = sum(1 for x in slots if x >= oldest)
        assert kept[name] >= 1
    later = FixedClock(db_now + 24 * H)  # every row is past its one-minute retention
    dry = operate.prune(store, later, 90 * 86400, 60, dry_run=True)
    done = operate.prune(store, later, 90 * 86400, 60)
    assert dict(done.kept_claimable) == dict(dry.kept_claimable) == kept
    for name in ("daily", "monthly"):
        left = [(r.attempt, r.slot) for r in store.list_runs(name, None, None, None, 50)]
        assert len(left) == kept[name] and all(a == 1 and s is not None for a, s in left)
        assert done.deleted[name] == 3 + 2 - kept[name]
    assert operate.prune(store, later, 90 * 86400, 60).total == 0  # converged


def test_metrics_parse_with_the_official_parser(store: Repository) -> None:
    job = add(store, "nightly", "0 * * * *", T0)
    for hour in range(3):
        record(store, job, T0 + hour * H, duration=4.5)
    record(store, job, T0 + 3 * H, "failed", duration=1.25)
    now = T0 + 5 * H + timedelta(minutes=10)
    text = operate.metrics(store, FixedClock(now))
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    assert families["schedctl_runs"].type == "counter"
    assert samples[("schedctl_runs_total", (("job", "nightly"), ("status", "succeeded")))] == 3
    assert samples[("schedctl_runs_total", (("job", "nightly"), ("status", "failed")))] == 1
    key = (("job", "nightly"),)
    assert (
        samples[("schedctl_last_success_timestamp_seconds", key)]
        == (T0 + 2 * H + timedelta(seconds=6.5)).timestamp()
    )
    assert samples[("schedctl_last_duration_seconds", key)] == 1.25
    assert samples[("schedctl_missed_slots", key)] == 2  # 04:00 and 05:00 never ran
    assert samples[("schedctl_running", key)] == 0
    assert samples[("schedctl_next_fire_timestamp_seconds", key)] == (T0 + 6 * H).timestamp()
    assert samples[("schedctl_check_state", key)] == 2


def _count(store: Repository, job: str) -> dict[str, int]:
    with engine_of(store).begin() as conn:
        query = sa.select(runs.c.status, sa.func.count()).where(runs.c.job_name == job)
        return dict(conn.execute(query.group_by(runs.c.status)).all())


def test_prune_deletes_in_batches_keeps_failures_longer_and_honours_keep(store: Repository) -> None:
    now = datetime(2026, 11, 1, tzinfo=UTC)
    default = add(store, "default", "0 0 * * *", now - timedelta(days=400))
    short = add(store, "short", "0 0 * * *", now - timedelta(days=400), retention_seconds=7 * 86400)
    for days in range(1, 300, 3):  # 100 runs each, every third day back
        slot = now - timedelta(days=days)
        status = "failed" if days % 2 else "succeeded"
        record(store, default, slot, status)
        record(store, short, slot, status)
    old_running = record(store, default, None, "running", heartbeat=now)
    clock = FixedClock(now)
    dry = operate.prune(store, clock, 90 * 86400, 180 * 86400, dry_run=True)
    assert _count(store, "default")["succeeded"] == 50  # nothing deleted by a dry run
    seen: list[int] = []
    done = operate.prune(store, clock, 90 * 86400, 180 * 86400, progress=seen.append, batch=7)
    assert done.deleted == dry.deleted
    assert len(seen) > 5 and sum(seen) == done.total  # small batches, progress per batch
    # default: successes older than 90 d go, failures older than 180 d go.
    left = _count(store, "default")
    assert left["succeeded"] == sum(1 for d in range(1, 300, 3) if d % 2 == 0 and d < 90)
    assert left["failed"] == sum(1 for d in range(1, 300, 3) if d % 2 and d < 180)
    assert left["running"] == 1  # never deleted under its runner
    # short keeps 7 d of successes, failures still 180 d (the longer of the two).
    left = _count(store, "short")
    assert left["succeeded"] == sum(1 for d in range(1, 300, 3) if d % 2 == 0 and d < 7)
    assert left["failed"] == sum(1 for d in range(1, 300, 3) if d % 2 and d < 180)
    assert done.deleted["short"] > done.deleted["default"]
    # Pruned slots are not reported as missed, though their rows are gone.
    assert operate.missed_slots(store, clock, "short", 200 * 86400) != []  # every 3rd day ran
    gone = {s.date() for s in operate.missed_slots(store, clock, "short", 200 * 86400)}
    assert min(gone) >= (now - timedelta(days=7)).date()
    with engine_of(store).begin() as conn:
        assert conn.execute(sa.select(runs.c.id).where(runs.c.id == old_running)).first()
    assert operate.prune(store, clock, 90 * 86400, 180 * 86400).total == 0  # converged
