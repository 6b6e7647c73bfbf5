"""The daemon's scheduling decisions with a hand-moved clock and fake children."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from schedctl.daemon import Daemon, Hooks
from schedctl.models import CatchUpPolicy, Job, JobSpec

T0 = datetime(2026, 11, 23, 10, 0, 30, tzinfo=UTC)


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at


@dataclass
class Child:
    pid: int
    code: int | None = None
    terminated: bool = False

    def poll(self) -> int | None:
        return self.code

    def terminate(self) -> None:
        self.terminated = True
        self.code = -15

    def kill(self) -> None:
        self.code = -9


def job(id_: int, name: str, schedule: str = "* * * * *", **kw: Any) -> Job:
    spec = JobSpec(name=name, schedule=schedule, timezone="UTC", command=("true",), **kw)
    return Job(id_, spec, 1, T0 - timedelta(days=1), T0 - timedelta(days=1))


class World:
    """The database and process table the daemon sees."""

    def __init__(self, jobs: list[Job], db_offset: timedelta = timedelta(0)) -> None:
        self.jobs = jobs
        self.clock = Clock(T0)
        self.db_offset = db_offset
        self.spawned: list[tuple[str, datetime]] = []
        self.children: list[Child] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.done: set[tuple[int, float]] = set()

    def spawn(self, j: Job) -> Child:
        self.spawned.append((j.name, self.clock.now() + self.db_offset))
        child = Child(1000 + len(self.children))
        self.children.append(child)
        return child

    def ran(self, pairs: Iterable[tuple[int, datetime]]) -> set[tuple[int, float]]:
        return {(j, s.timestamp()) for j, s in pairs} & self.done

    def daemon(self, **kw: Any) -> Daemon:
        hooks = Hooks(
            load_jobs=lambda: list(self.jobs),
            db_now=lambda: self.clock.now() + self.db_offset,
            ran=self.ran,
            spawn=self.spawn,
            emit=lambda event, **f: self.events.append((event, f)),
            clock=self.clock,
            sleep=lambda s: None,
        )
        return Daemon(hooks, **kw)

    def advance(self, d: Daemon, seconds: int) -> None:
        for _ in range(seconds):
            self.clock.at += timedelta(seconds=1)
            d.tick()


def names(events: list[tuple[str, dict[str, Any]]], kind: str) -> list[str]:
    return [f["job"] for e, f in events if e == kind]


def test_fires_each_due_slot_once_by_the_database_clock() -> None:
    # The host clock is 20 s behind the database: the daemon must still fire at the slot.
    w = World([job(1, "every"), job(2, "hourly", "0 * * * *")], db_offset=timedelta(seconds=20))
    d = w.daemon()
    d.refresh(first=False)
    w.advance(d, 150)
    fired = [(n, at) for n, at in w.spawned if n == "every"]
    assert [at.replace(microsecond=0) for _, at in fired] == [
        datetime(2026, 11, 23, 10, 1, 0, tzinfo=UTC),
        datetime(2026, 11, 23, 10, 2, 0, tzinfo=UTC),
        datetime(2026, 11, 23, 10, 3, 0, tzinfo=UTC),
    ]
    assert "hourly" not in [n for n, _ in w.spawned]
    assert names(w.events, "job.registered") == ["every", "hourly"]


def test_catch_up_runs_only_an_unrun_latest_slot_of_catch_up_jobs() -> None:
    w = World([job(1, "missed"), job(2, "done"),
               job(3, "skipper", catch_up=CatchUpPolicy.SKIP)])  # fmt: skip
    w.done.add((2, datetime(2026, 11, 23, 10, 0, tzinfo=UTC).timestamp()))
    w.daemon().refresh(first=True)
    assert [n for n, _ in w.spawned] == ["missed"]


def test_picks_up_added_edited_disabled_and_removed_jobs() -> None:
    w = World([job(1, "a"), job(2, "b")])
    d = w.daemon()
    d.refresh(first=True)
    # Defined 0.5 s before its first slot, seen 1.5 s after it: that slot still fires.
    w.clock.at = datetime(2026, 11, 23, 10, 0, 59, 500000, tzinfo=UTC)
    w.jobs.append(replace(job(3, "new"), created_at=w.clock.at, updated_at=w.clock.at))
    w.clock.at += timedelta(seconds=2)
    w.spawned.clear()
    d.refresh(first=False)
    d.tick()
    assert sorted(n for n, _ in w.spawned) == ["a", "b", "new"]
    edited = replace(w.jobs[0], revision=2, spec=replace(w.jobs[0].spec, schedule="30 * * * *"))
    w.jobs = [edited, replace(w.jobs[1], spec=replace(w.jobs[1].spec, enabled=False))]
    d.refresh(first=False)
    assert names(w.events, "job.updated") == ["a"]
    assert sorted(names(w.events, "job.unregistered")) == ["b", "new"]
    assert d.entries[1].due == datetime(2026, 11, 23, 10, 30, tzinfo=UTC)


def test_tag_filter_and_failing_children_are_reaped() -> None:
    w = World([job(1, "web", tags=("web",)), job(2, "db", tags=("db",))])
    d = w.daemon(tag="web")
    d.refresh(first=False)
    w.advance(d, 31)
    assert [n for n, _ in w.spawned] == ["web"]
    w.children[0].code = 3
    d.reap()
    # A failed run is a warning here; the run's own line is the error.
    exited = {"level": "warning", "job": "web", "pid": 1000, "exit_code": 3}
    assert ("job.exited", exited) in w.events
    assert d.children == {}


def test_stop_waits_for_children_then_terminates_them() -> None:
    w = World([job(1, "slow")])
    d = w.daemon(stop_timeout=0.0, kill_grace=0.0)
    d.refresh(first=False)
    w.advance(d, 31)
    d.stop()
    assert d.run() == 0
    assert w.children[0].terminated
    assert names(w.events, "job.terminated") == ["slow"]
    assert [e for e, _ in w.events][-1] == "daemon.stopped"


def test_health_needs_a_live_loop_and_a_recent_database() -> None:
    w = World([job(1, "x")])
    d = w.daemon(refresh_seconds=1.0)
    d.last_tick = d.last_db_ok = 100.0
    assert d.healthy(105.0) == (True, "ok")
    assert d.healthy(116.0) == (False, "scheduling loop stalled")
    d.last_tick = 115.0
    assert d.healthy(116.0) == (False, "database unreachable")


def test_schedules_only_the_jobs_placed_on_its_host_and_registers_every_refresh() -> None:
    w = World([job(1, "db", placement="role=db"), job(2, "web", placement="role in (web)"),
               job(3, "everywhere")])  # fmt: skip
    d = w.daemon()
    seen: list[dict[str, str]] = []
    labels = {"role": "db", "host": "d1"}
    d.hooks = replace(d.hooks, labels=labels, register=lambda: seen.append(labels))
    d.refresh(first=False)
    w.advance(d, 65)
    assert sorted({n for n, _ in w.spawned}) == ["db", "everywhere"]
    assert names(w.events, "job.registered") == ["db", "everywhere"]
    assert len(seen) == 1

    # Relabelled: the next refresh drops the job that no longer matches and takes the other.
    d.hooks = replace(d.hooks, labels={"role": "web", "host": "d1"})
    d.refresh(first=False)
    assert names(w.events, "job.unregistered") == ["db"]
    assert names(w.events, "job.registered")[-1] == "web"

    # A refused registration is said; scheduling goes on.
    def refuse() -> None:
        raise RuntimeError("permission denied for table hosts")

    d.hooks = replace(d.hooks, register=refuse)
    d.refresh(first=False)
    failed = [f for e, f in w.events if e == "host.register_failed"]
    assert failed == [{"level": "warning", "error": "permission denied for table hosts"}]
    assert set(d.entries) == {2, 3}
