"""`check`, `report` and `history --missed` agree, slot for slot, on which slots were missed.

One history on each backend: Europe/Berlin jobs across the spring-forward and fall-back
changes of 2026 (a fixed-time job whose slot falls in the skipped hour, an hourly one, a
wildcard minute in the repeated hour), a job edited twice, a job disabled all summer, a job
added partway with jitter. Job changes are made at chosen instants; run rows are written as
`run` writes them (a first attempt per slot that ran, claimed around its slot, some retried,
some failed or skipped). The installed binary is then asked, under libfaketime, at chosen
instants (on PostgreSQL the server's clock is set to each too: stored times are judged by it), and each answer compared with an oracle that knows nothing of schedctl:
cronsim and a minute-by-minute wall-clock scan for the Debian-cron slots, and the timeline
below for which schedule was in force and enabled.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from cli_helpers import Cli, at, cli_env, faketime, make_cli, ok
from cronsim import CronSim
from dbtools import engine_of
from pgserver import destroy, start_server

import schedctl
from schedctl import services
from schedctl.clock import FixedClock, SystemClock
from schedctl.config import parse_database_url
from schedctl.db.repository import open_current
from schedctl.db.tables import jobs, runs
from schedctl.models import JobChanges, JobSpec

BERLIN = "Europe/Berlin"
MINUTE = timedelta(minutes=1)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


class Change(NamedTuple):
    """From `at` on, the job is `enabled` with `expr` (the oracle's own timeline)."""

    at: datetime
    enabled: bool
    expr: str


class Plan(NamedTuple):
    name: str
    jitter: int
    changes: list[Change]


# Changes fall 20 s past a minute and every question is asked 30 s past one: slots and their
# deadlines are whole minutes, so the seconds a process takes to start never cross one.
PLANS = [
    # 02:30 falls in the skipped hour on 29 March and in the repeated one on 25 October.
    Plan("nightly", 0, [Change(utc("2026-03-27 00:00:20"), True, "30 2 * * *")]),
    # No 02:00 on 29 March, two on 25 October; disabled from spring to autumn.
    Plan(
        "hourly",
        0,
        [
            Change(utc("2026-03-27 00:00:20"), True, "0 * * * *"),
            Change(utc("2026-03-30 12:10:20"), False, "0 * * * *"),
            Change(utc("2026-10-23 09:50:20"), True, "0 * * * *"),
        ],
    ),
    # Edited to a fixed time across the gap, disabled, enabled, edited to a wildcard minute
    # in the repeated hour.
    Plan(
        "edited",
        0,
        [
            Change(utc("2026-03-27 00:00:20"), True, "15 */2 * * *"),
            Change(utc("2026-03-28 10:20:20"), True, "45 1-3 * * *"),
            Change(utc("2026-03-31 00:00:20"), False, "45 1-3 * * *"),
            Change(utc("2026-10-23 00:00:20"), True, "45 1-3 * * *"),
            Change(utc("2026-10-24 12:00:20"), True, "*/20 2 * * *"),
        ],
    ),
    # Added two minutes after its 05:35 slot, which is therefore not its to miss.
    Plan("late", 120, [Change(utc("2026-10-24 05:37:20"), True, "5,35 * * * *")]),
]
END = utc("2026-10-27 00:00:30")
# Slots whose fate the test fixes, for the corners; every other slot is drawn at random.
FORCED = {
    ("nightly", utc("2026-03-28 01:30")): False,
    ("nightly", utc("2026-10-25 00:30")): False,  # first pass of the repeated hour
    ("hourly", utc("2026-10-25 00:00")): True,  # 02:00 CEST
    ("hourly", utc("2026-10-25 01:00")): False,  # 02:00 CET
    ("hourly", utc("2026-03-30 12:00")): False,  # the last slot before the summer off
    ("edited", utc("2026-03-28 09:15")): False,  # the last slot before the first edit
    ("edited", utc("2026-03-30 23:45")): False,  # the last slot before the summer off
    ("late", utc("2026-10-24 06:05")): False,
}
SEED = 16


def debian_slots(expr: str, zone: str, start: datetime, end: datetime) -> list[datetime]:
    """Return the Debian-cron slots of `expr` in [start, end), in UTC, by schedctl-free means."""
    minute, hour = expr.split()[:2]
    z = ZoneInfo(zone)
    out = []
    if not minute.startswith("*") and not hour.startswith("*"):  # fixed time: cronsim
        base = start - timedelta(seconds=1)
        for x in CronSim(expr, base.astimezone(z)):
            # From a base in a repeated hour cronsim may first return earlier instants.
            if x <= base:
                continue
            if x >= end:
                break
            out.append(x.astimezone(UTC))
        return out
    # A wildcard job fires whenever the wall clock matches: scan every real minute.
    cs = CronSim(expr, start.astimezone(z))
    t = start.replace(second=0, microsecond=0)
    t += MINUTE if t < start else timedelta(0)
    while t < end:
        local = t.astimezone(z)
        if (local.month in cs.months and cs.match_day(local.date())
                and local.hour in cs.hours and local.minute in cs.minutes):  # fmt: skip
            out.append(t)
        t += MINUTE
    return out


def expected(plan: Plan, until: datetime) -> list[datetime]:
    """Return the slots `plan` was due for before `until`, by its timeline."""
    out: list[datetime] = []
    for i, c in enumerate(plan.changes):
        stop = plan.changes[i + 1].at if i + 1 < len(plan.changes) else until
        if c.enabled:
            out += debian_slots(c.expr, BERLIN, c.at, min(stop, until))
    return out


def enabled_at(plan: Plan, t: datetime) -> bool:
    return [c for c in plan.changes if c.at <= t][-1].enabled


class History(NamedTuple):
    env: dict[str, str]
    ran: dict[str, set[datetime]]
    # PostgreSQL's: monitoring judges by the database's clock, so the server is asked too.
    server_clock: Path | None = None


def build(backend: tuple[Cli, str, dict[str, str]], server_clock: Path | None) -> History:
    """Make the jobs' changes at their instants and write the run rows of the slots that ran.

    The changes go through the same use cases `add`, `edit`, `enable` and `disable` call, in
    this process with a fixed clock: a process per change would double the test's time.
    """
    _, url, env = backend
    store = open_current(parse_database_url(url), SystemClock())
    try:
        for plan in PLANS:
            first, *rest = plan.changes
            spec = JobSpec(name=plan.name, schedule=first.expr, timezone=BERLIN,
                           command=("true",), jitter_seconds=plan.jitter)  # fmt: skip
            services.add_job(store, spec, FixedClock(first.at))
            for prev, c in zip(plan.changes, rest, strict=False):
                if c.expr != prev.expr:
                    edit = JobChanges(schedule=c.expr)
                    services.edit_job(store, plan.name, edit, FixedClock(c.at))
                elif c.enabled != prev.enabled:
                    services.set_enabled(store, plan.name, c.enabled, FixedClock(c.at))
    finally:
        store.close()
    rng = random.Random(SEED)
    ran: dict[str, set[datetime]] = {}
    rows = []
    with engine_of(url).begin() as conn:
        ids = dict(conn.execute(sa.select(jobs.c.name, jobs.c.id)).all())
        for plan in PLANS:
            ran[plan.name] = set()
            for slot in expected(plan, END):
                if not FORCED.get((plan.name, slot), rng.random() < 0.7):
                    continue
                ran[plan.name].add(slot)
                status = rng.choice(["succeeded"] * 6 + ["failed", "timed_out", "skipped_overlap"])
                rows.append(_row(ids[plan.name], plan.name, slot, 1, status, rng))
                if status == "failed" and rng.random() < 0.5:
                    rows.append(_row(ids[plan.name], plan.name, slot, 2, "succeeded", rng))
        # A manual run serves no slot.
        rows.append({**_row(ids["nightly"], "nightly", utc("2026-10-25 00:31"), 1, "succeeded",
                            rng), "slot": None, "trigger": "manual"})  # fmt: skip
        conn.execute(runs.insert(), rows)
    return History({**env, "TZ": "UTC", "LD_PRELOAD": faketime()}, ran, server_clock)


def _row(
    job_id: int, name: str, slot: datetime, attempt: int, status: str, rng: random.Random
) -> dict[str, object]:
    """A finished run as `run` records it; hosts ahead of the database claim a little early."""
    claimed = slot + timedelta(seconds=rng.uniform(-20, 40) + 300 * (attempt - 1))
    duration = 0.0 if status == "skipped_overlap" else rng.uniform(0.1, 5)
    return {
        "job_id": job_id, "job_name": name, "job_revision": 1, "slot": slot, "trigger": "timer",
        "attempt": attempt, "status": status, "host": rng.choice(["web1", "web2"]), "pid": 4242,
        "claimed_at": claimed, "started_at": claimed, "finished_at": claimed + timedelta(
            seconds=duration), "heartbeat_at": claimed, "exit_code": 0 if status == "succeeded"
        else 1, "duration_seconds": duration, "output_bytes": 0, "output_truncated": False,
        "clock_skew_seconds": 0.0, "schedctl_version": schedctl.__version__,
    }  # fmt: skip


def oracle_missed(h: History, plan: Plan, now: datetime, since: datetime) -> list[datetime]:
    """Missed slots of `plan` in [since, now - jitter - 1 min]."""
    deadline = now - timedelta(seconds=plan.jitter) - MINUTE
    due = [s for s in expected(plan, deadline + timedelta(seconds=1)) if s >= since]
    return [s for s in due if s not in h.ran[plan.name]]


def oracle_check(h: History, plan: Plan, now: datetime) -> datetime | None:
    """The slot `check` must call missed at `now`: the latest due slot, if no host ran it."""
    deadline = now - timedelta(seconds=plan.jitter) - MINUTE
    due = expected(plan, deadline + timedelta(seconds=1))
    return due[-1] if due and due[-1] not in h.ran[plan.name] else None


def asked(h: History, tmp_path: Path, now: datetime, *args: str) -> str:
    if h.server_clock is not None:
        staged = h.server_clock.with_suffix(".new")
        staged.write_text(at(now) + "\n")
        staged.replace(h.server_clock)  # whole: the server reads it at every clock call
    cli = make_cli(tmp_path, **{**h.env, "FAKETIME": at(now)})
    result = cli(*args)
    assert result.rc in (0, 1, 2), result
    return result.out


def report_missed(
    h: History, tmp_path: Path, now: datetime, since: str
) -> dict[str, tuple[int, list[datetime]]]:
    """Ask `report`: per job, the JSON count and the slots its HTML timeline marks missed."""
    page = tmp_path / "report.html"
    data = json.loads(asked(h, tmp_path, now, "report", "--since", since, "--json",
                            "--html", str(page)))  # fmt: skip
    marked: dict[str, list[datetime]] = {}
    job = ""
    for m in re.finditer(r'<text x="0" y="\d+">([^<]+)</text>|<title>missed ([^<]+) UTC</', page.read_text()):  # fmt: skip
        if m.group(1):
            job = m.group(1)
        else:
            marked.setdefault(job, []).append(utc(m.group(2)))
    return {j["job"]: (j["missed"], marked.get(j["job"], [])) for j in data["jobs"]}


def history_missed(
    h: History, tmp_path: Path, now: datetime, job: str, since: str
) -> list[datetime]:
    out = asked(h, tmp_path, now, "history", job, "--missed", "--since", since, "--json")
    return [datetime.fromisoformat(r["slot"]).astimezone(UTC) for r in json.loads(out)]


def check_missed(h: History, tmp_path: Path, now: datetime) -> dict[str, datetime | None]:
    """Ask `check`: per job, the slot it calls missed (None when it names none)."""
    data = json.loads(asked(h, tmp_path, now, "check", "--json"))
    out: dict[str, datetime | None] = {}
    for j in data["jobs"]:
        found = [m.group(1) for r in j["reasons"] if (m := re.fullmatch(r"missed slot (\S+): no host ran it", r))]  # fmt: skip
        assert len(found) <= 1, j
        out[j["job"]] = datetime.fromisoformat(found[0]).astimezone(UTC) if found else None
    return out


def seconds(text: str) -> int:
    units = {"d": 86400, "h": 3600, "m": 60}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([dhm])", text))


# (now, --since): the whole history; the spring gap; the first edit; the autumn change; the
# late job's creation; the re-enabling; windows whose start cuts a disabled period.
REPORTS = [
    (utc("2026-10-27 00:00:30"), "220d"),
    (utc("2026-03-29 06:10:30"), "1d"),
    (utc("2026-03-28 10:25:30"), "6h"),
    (utc("2026-10-25 03:00:30"), "1d"),
    (utc("2026-10-24 06:10:30"), "2h"),
    (utc("2026-10-23 10:30:30"), "1h"),
    (utc("2026-10-23 12:00:30"), "100d"),
]
# Instants just past the deadline of a corner slot, and after each change.
CHECKS = [
    utc("2026-03-28 01:31:30"),  # nightly's missed slot
    utc("2026-03-29 01:01:30"),  # the gap: nightly's 02:30 ran at 03:00 CEST
    utc("2026-03-28 10:25:30"),  # just after edited's first edit; its 09:15 was missed
    utc("2026-03-28 09:16:30"),
    utc("2026-03-30 12:01:30"),
    utc("2026-10-23 09:52:30"),  # hourly just enabled again
    utc("2026-10-23 00:02:30"),  # edited just enabled again
    utc("2026-10-24 06:07:30"),  # late: slot 06:05 has jitter 2m, not due yet
    utc("2026-10-24 06:08:30"),  # ... now it is
    utc("2026-10-24 12:05:30"),  # just after edited's second edit
    utc("2026-10-25 00:31:30"),
    utc("2026-10-25 01:01:30"),  # hourly's second 02:00 (CET)
    utc("2026-10-25 00:41:30"),  # edited's */20 in the first pass
    utc("2026-10-25 01:21:30"),  # ... and in the second
]


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_at(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[tuple[Cli, str, dict[str, str]], Path | None]]:
    """The installed binary on each backend, and the file that sets PostgreSQL's clock.

    PostgreSQL gets a server of its own under libfaketime, its time read from that file at
    every call, so that it can be asked at the test's instants as the host is.
    """
    if request.param == "sqlite":
        cli = make_cli(tmp_path)
        ok(cli("db", "upgrade"))
        yield (cli, f"sqlite:///{tmp_path / 'data' / 'schedctl.db'}", cli_env(tmp_path)), None
        return
    where = Path(tempfile.mkdtemp(prefix="schedctl-clock-"))
    where.chmod(0o755)  # the server runs as nobody
    clock = where / "now"
    clock.write_text(at(END) + "\n")
    server = start_server({"LD_PRELOAD": faketime(), "FAKETIME_TIMESTAMP_FILE": str(clock),
                           "FAKETIME_NO_CACHE": "1", "TZ": "UTC"})  # fmt: skip
    try:
        url = server.url(server.create_database())
        cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url)
        ok(cli("db", "upgrade"))
        yield (cli, url, cli_env(tmp_path, SCHEDCTL_DATABASE_URL=url)), clock
    finally:
        destroy(server)
        shutil.rmtree(where)


@pytest.mark.postgres
def test_check_report_and_history_agree_with_the_oracle_slot_for_slot(
    backend_at: tuple[tuple[Cli, str, dict[str, str]], Path | None], tmp_path: Path
) -> None:
    h = build(*backend_at)
    rng = random.Random(SEED)
    # Two more instants in each of the DST weeks, where every job but `late` is enabled.
    weeks = [utc("2026-03-27 00:02:30"), utc("2026-10-23 10:00:30")]
    randoms = [w + timedelta(minutes=rng.randrange(4 * 1440)) for w in weeks for _ in range(2)]
    compared = 0
    for now, since in REPORTS:
        got = report_missed(h, tmp_path, now, since)
        window_start = now - timedelta(seconds=seconds(since))
        for plan in PLANS:
            want = oracle_missed(h, plan, now, window_start)
            count, marked = got[plan.name]
            assert (count, marked) == (len(want), want), (plan.name, now, since)
            compared += len(want)
    for now, since in REPORTS[:2]:  # the whole history, and a window cut at one end
        window_start = now - timedelta(seconds=seconds(since))
        for plan in PLANS:
            want = oracle_missed(h, plan, now, window_start)
            assert history_missed(h, tmp_path, now, plan.name, since) == want, (plan.name, now)
    verdicts: list[datetime | None] = []
    for now in CHECKS + randoms:
        got_check = check_missed(h, tmp_path, now)
        for plan in PLANS:
            if plan.changes[0].at > now or not enabled_at(plan, now):
                continue  # `check` reads today's definition: only ask where it held then
            verdicts.append(oracle_check(h, plan, now))
            assert got_check[plan.name] == verdicts[-1], (plan.name, now)
    # Both answers were compared, many times.
    assert compared > 100
    assert sum(v is None for v in verdicts) > 5 and sum(v is not None for v in verdicts) > 5
