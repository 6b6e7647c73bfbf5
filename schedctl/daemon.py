"""A foreground scheduler for hosts and containers without systemd or cron.

It only decides *when*: each due slot starts `schedctl run --trigger daemon JOB` in a child
process, and that run claims the slot. So replicas may run side by side (a slot still runs
once), a failing job never touches the loop, and history looks like a timer's.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from schedctl.clock import Clock
from schedctl.models import CatchUpPolicy, Job, iso
from schedctl.placement import selector_of
from schedctl.schedule import Schedule, pick_slot


class Child(Protocol):
    """A started `schedctl run` (subprocess.Popen fits)."""

    pid: int

    def poll(self) -> int | None:
        """Return the exit code once finished."""
        ...

    def terminate(self) -> None:
        """Ask it to stop (it forwards SIGTERM to the job)."""
        ...

    def kill(self) -> None:
        """Stop it now."""
        ...


@dataclass
class Entry:
    """A registered job and the slot it waits for."""

    job: Job
    schedule: Schedule
    due: datetime | None
    fire_at: datetime | None


@dataclass
class Hooks:
    """Everything the loop needs from outside."""

    load_jobs: Callable[[], list[Job]]  # enabled and disabled jobs, fresh from the database
    db_now: Callable[[], datetime]
    ran: Callable[[Iterable[tuple[int, datetime]]], set[tuple[int, float]]]
    spawn: Callable[[Job], Child]
    emit: Callable[..., None]
    clock: Clock
    sleep: Callable[[float], None] = time.sleep
    # Starts the notification delivery step (`schedctl notify`) in a child process.
    spawn_step: Callable[[], Child] | None = None
    # This host's labels (None: every job is placed here) and the upsert of its row.
    labels: Mapping[str, str] | None = None
    register: Callable[[], object] | None = None


@dataclass
class Daemon:
    """The scheduling loop; `run()` returns after `stop()` once children are done."""

    hooks: Hooks
    tag: str | None = None
    refresh_seconds: float = 5.0
    tick_seconds: float = 0.5
    stop_timeout: float = 25.0
    kill_grace: float = 15.0
    entries: dict[int, Entry] = field(default_factory=dict)
    children: dict[int, tuple[str, Child]] = field(default_factory=dict)
    last_tick: float = 0.0
    last_db_ok: float = 0.0
    step_seconds: float = 60.0
    _step: Child | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _offset: timedelta = timedelta(0)
    _rng: random.Random = field(default_factory=random.Random)

    def stop(self) -> None:
        """Stop launching; `run()` then waits for running jobs (safe from a signal handler)."""
        self._stop.set()

    def now(self) -> datetime:
        """Return the database's time, as measured at the last refresh."""
        return self.hooks.clock.now() + self._offset

    def healthy(self, monotonic: float) -> tuple[bool, str]:
        """Return whether the loop is alive and the database was reached recently."""
        if monotonic - self.last_tick > max(10.0, 4 * self.tick_seconds):
            return False, "scheduling loop stalled"
        # Three failed refreshes in a row (at least 15 s): a blip is not worth a restart.
        if monotonic - self.last_db_ok > max(15.0, 3 * self.refresh_seconds):
            return False, "database unreachable"
        return True, "ok"

    def refresh(self, first: bool) -> None:
        """Reload definitions: register new jobs, re-plan edited ones, drop removed ones."""
        jobs = self.hooks.load_jobs()
        self._offset = self.hooks.db_now() - self.hooks.clock.now()
        self.last_db_ok = time.monotonic()
        if self.hooks.register is not None:
            try:
                self.hooks.register()
            except Exception as e:  # scheduling matters more than being listed
                self.hooks.emit("host.register_failed", level="warning", error=_one_line(e))
        now = self.now()
        labels = self.hooks.labels
        wanted = {
            j.id: j
            for j in jobs
            if j.spec.enabled
            and (self.tag is None or self.tag in j.spec.tags)
            and (labels is None or selector_of(j.spec.placement).matches(labels))
        }
        for job_id in list(self.entries):
            if job_id not in wanted:
                self.hooks.emit("job.unregistered", job=self.entries.pop(job_id).job.name)
        fresh = []
        for job in wanted.values():
            known = self.entries.get(job.id)
            if known is not None and known.job.revision == job.revision:
                continue
            schedule = Schedule.of(job.spec.schedule, job.spec.timezone)
            entry = Entry(job, schedule, None, None)
            # A definition that changed since the last refresh may already have a slot due:
            # plan from the change (at most two refreshes back), so that slot is not skipped.
            recent = now - timedelta(seconds=2 * self.refresh_seconds)
            self._plan(entry, now if first else max(recent, job.updated_at))
            self.entries[job.id] = entry
            fresh.append(entry)
            event = "job.registered" if known is None else "job.updated"
            self.hooks.emit(event, job=job.name, schedule=job.spec.schedule,
                            timezone=job.spec.timezone, next=iso(entry.due))  # fmt: skip
        if first:
            self._catch_up(fresh, now)

    def _plan(self, entry: Entry, after: datetime) -> None:
        found = entry.schedule.next_after(after)
        entry.due = found[0] if found else None
        jitter = entry.job.spec.jitter_seconds
        delay = timedelta(seconds=self._rng.uniform(0, jitter)) if jitter else timedelta(0)
        entry.fire_at = None if entry.due is None else entry.due + delay

    def _catch_up(self, entries: list[Entry], now: datetime) -> None:
        """Start the latest slot missed while no daemon ran (systemd's Persistent=true)."""
        latest = {}
        for e in entries:
            if e.job.spec.catch_up is not CatchUpPolicy.LATEST:
                continue
            # The slot the child's run will pick: it fires by the database clock, as this loop.
            slot = pick_slot(e.schedule, now, now).slot
            if slot is not None and slot > now:
                # A slot due within seconds, which that pick takes early: not missed. It
                # fires when due (planned already); started now it would run before its time.
                continue
            if slot is not None and slot >= e.job.created_at:
                latest[e.job.id] = slot
        done = self.hooks.ran(latest.items())
        for job_id, slot in latest.items():
            if (job_id, slot.timestamp()) not in done:
                self._fire(self.entries[job_id], "catch-up", slot)

    def _fire(self, entry: Entry, why: str, slot: datetime | None) -> None:
        try:
            child = self.hooks.spawn(entry.job)
        except OSError as e:
            self.hooks.emit("job.spawn_failed", level="error", job=entry.job.name, error=str(e))
            return
        self.children[child.pid] = (entry.job.name, child)
        self.hooks.emit("job.fired", job=entry.job.name, slot=iso(slot), pid=child.pid,
                        reason=why)  # fmt: skip

    def reap(self) -> None:
        """Log and forget children that finished."""
        for pid, (name, child) in list(self.children.items()):
            code = child.poll()
            if code is not None:
                del self.children[pid]
                # The run's own line says what failed, at error; this one marks it.
                self.hooks.emit("job.exited", level="warning" if code else "info", job=name,
                                pid=pid, exit_code=code)  # fmt: skip

    def tick(self) -> None:
        """Start every job whose slot (plus its jitter delay) has come."""
        now = self.now()
        for entry in self.entries.values():
            if entry.fire_at is not None and entry.fire_at <= now:
                self._fire(entry, "due", entry.due)
                self._plan(entry, max(now, entry.due or now))
        self.reap()

    def run(self) -> int:
        """Loop until stopped; return 0 after running jobs finished or were stopped."""
        self.last_tick = time.monotonic()
        next_refresh = 0.0
        next_step = 0.0
        first = True
        self.hooks.emit("daemon.started", tag=self.tag, refresh_seconds=self.refresh_seconds)
        while not self._stop.is_set():
            mono = time.monotonic()
            if mono >= next_refresh:
                try:
                    self.refresh(first)
                    first = False
                except Exception as e:  # a database blip: keep the plan we have, retry soon
                    self.hooks.emit("daemon.refresh_failed", level="warning", error=_one_line(e))
                next_refresh = mono + self.refresh_seconds
            self.tick()
            if self.hooks.spawn_step is not None and mono >= next_step:
                next_step = mono + self.step_seconds
                self._start_step()
            self.last_tick = time.monotonic()
            self._stop.wait(self.tick_seconds)
        return self._drain()

    def _start_step(self) -> None:
        """Start the delivery step unless the previous one is still at work."""
        assert self.hooks.spawn_step is not None
        if self._step is not None and self._step.poll() is None:
            return
        try:
            self._step = self.hooks.spawn_step()
        except OSError as e:
            self.hooks.emit("notify.step_failed", level="warning", error=_one_line(e))

    def _drain(self) -> int:
        if self._step is not None and self._step.poll() is None:
            self._step.terminate()
        self.hooks.emit("daemon.stopping", running=len(self.children))
        deadline = time.monotonic() + self.stop_timeout
        while self.children and time.monotonic() < deadline:
            self.reap()
            self.hooks.sleep(0.2)
        if self.children:
            for name, child in self.children.values():
                self.hooks.emit("job.terminated", level="warning", job=name, pid=child.pid)
                child.terminate()
            deadline = time.monotonic() + self.kill_grace
            while self.children and time.monotonic() < deadline:
                self.reap()
                self.hooks.sleep(0.2)
            for _, child in self.children.values():
                child.kill()
            self.reap()
        self.hooks.emit("daemon.stopped")
        return 0


def _one_line(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]


def health_server(daemon: Daemon, port: int, host: str = "0.0.0.0") -> Any:  # noqa: S104 - kubelet probes come from off the pod
    """Serve GET /health (200 ok / 503 reason) on a background thread; return the server."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/health":
                self.send_error(404, "try /health")
                return
            ok, why = daemon.healthy(time.monotonic())
            body = (why + "\n").encode()
            self.send_response(200 if ok else 503)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # probes every few seconds would drown the job logs

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server
