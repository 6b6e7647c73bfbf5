"""Which slot a firing claims: hosts whose clocks are off the database's, DST, and prune.

The runner's clock is moved with libfaketime; PostgreSQL's clock is the real one, so the
skew between them is exactly what each test sets. On SQLite the database clock is the
host's own, so faketime moves both.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cli_helpers import BIN, age_runs, at, cli_env, faketime, make_cli, ok, run_rows


def start(env: dict[str, str], job: str, clock: str, host: str) -> subprocess.Popen[str]:
    """Start `schedctl run JOB` as a timer on a host whose clock is `clock` (FAKETIME)."""
    return subprocess.Popen(
        [str(BIN), "run", job],
        env={**env, "FAKETIME": clock, "SCHEDCTL_HOST": host},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(p: subprocess.Popen[str]) -> str:
    """Wait for a run; return its stderr (the event lines)."""
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    return err


def slot_of(row: dict[str, object]) -> datetime:
    slot = row["slot"]
    assert isinstance(slot, datetime)
    return slot.astimezone(UTC)


def next_minute(after: datetime) -> datetime:
    """The first whole minute at or after `after`."""
    whole = after.replace(second=0, microsecond=0)
    return whole if whole == after else whole + timedelta(minutes=1)


# Host clock minus the database's, in seconds, in the order their firings come.
SKEWS = (30, 2, -2, -30)


@pytest.mark.slow
def test_hosts_seconds_off_the_database_claim_the_slot_their_timer_fired_for(
    pg_url: str, tmp_path: Path
) -> None:
    """Every minute and every 5 minutes; hosts 30 s and 2 s ahead and behind.

    Each host's timer fires at the slot by its own clock, so the four firings of one slot
    reach the database from 30 s before it to 30 s after it. The five-minute job is
    `M-59/5` with M chosen so that its slot is the minute slot too: the same gaps as
    `*/5` without waiting up to five minutes for a multiple of five.
    """
    lib = faketime()
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url)
    ok(cli("db", "upgrade"))
    slot = next_minute(datetime.now(UTC) + timedelta(seconds=35))
    schedules = {"m": "* * * * *", "f": f"{slot.minute % 5}-59/5 * * * *"}
    names = {}
    for tag, expr in schedules.items():
        for skew in SKEWS:
            names[tag, skew] = f"{tag}{'ahead' if skew > 0 else 'behind'}{abs(skew)}"
            ok(cli("add", names[tag, skew], "-s", expr, "--tz", "UTC", "--", "true"))
    env = cli_env(tmp_path, SCHEDCTL_DATABASE_URL=pg_url, LD_PRELOAD=lib, TZ="UTC")
    logs = {}
    for skew in SKEWS:
        # The real (database) instant at which this host's clock shows the slot.
        time.sleep(max(0.0, (slot - timedelta(seconds=skew) - datetime.now(UTC)).total_seconds()))
        procs = {
            tag: start(env, names[tag, skew], f"{skew:+d}", f"host{skew:+d}") for tag in schedules
        }
        logs.update({(tag, skew): finish(p) for tag, p in procs.items()})
    rows = {r["job_name"]: r for r in run_rows(pg_url)}
    for (tag, skew), name in names.items():
        assert name in rows, f"{name} claimed nothing: {logs[tag, skew]}"
        assert slot_of(rows[name]) == slot, (name, rows[name]["slot"], logs[tag, skew])
        assert abs(rows[name]["clock_skew_seconds"] - skew) < 1.5, rows[name]
        if abs(skew) == 2:
            assert "run.clock_skew" not in logs[tag, skew]


def test_a_daily_job_on_a_host_six_minutes_off_runs_its_own_slot(
    pg_url: str, tmp_path: Path
) -> None:
    """Six minutes is beyond the tolerance: the slot the host's timer fired for still runs.

    Ahead: today's slot, not yesterday's. Behind with `--catch-up skip`: the lateness is the
    clock's, not downtime, so the slot runs. Both log the measured skew.
    """
    lib = faketime()
    now = datetime.now(UTC)
    ahead = now.replace(second=0, microsecond=0) + timedelta(minutes=7)  # 6-7 min ahead
    behind = now.replace(second=0, microsecond=0) - timedelta(minutes=6)  # 6-7 min behind
    # Defined two days ago: yesterday's slot is one the job had.
    past = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url, LD_PRELOAD=lib, FAKETIME="-2d")
    ok(past("db", "upgrade"))
    ok(past("add", "early", "-s", f"{ahead.minute} {ahead.hour} * * *", "--tz", "UTC", "--", "true"))  # fmt: skip
    ok(past("add", "late", "-s", f"{behind.minute} {behind.hour} * * *", "--tz", "UTC",
            "--catch-up", "skip", "--", "true"))  # fmt: skip
    env = cli_env(tmp_path, SCHEDCTL_DATABASE_URL=pg_url, LD_PRELOAD=lib, TZ="UTC")
    for job, slot in (("early", ahead), ("late", behind)):
        err = finish(start(env, job, at(slot), f"{job}-host"))
        rows = run_rows(pg_url, job)
        assert [slot_of(r) for r in rows] == [slot], err
        skew = rows[0]["clock_skew_seconds"]
        assert 355 < abs(skew) < 425, skew
        line = next(x for x in err.splitlines() if "event=run.clock_skew" in x)
        logged = re.search(r"skew_seconds=(-?[0-9.]+)", line)
        assert "level=warning" in line and logged and abs(float(logged[1]) - skew) < 1, line


def test_a_daemon_on_a_host_70_s_ahead_runs_the_slot_it_fired(pg_url: str, tmp_path: Path) -> None:
    """The daemon fires by the database clock, so its runs pick their slot by that clock too.

    By the host's clock, 70 s ahead, its catch-up of minute M would look like minute M+1.
    """
    lib = faketime()
    past = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url, LD_PRELOAD=lib, FAKETIME="-2m")
    ok(past("db", "upgrade"))
    ok(past("add", "tick", "-s", "* * * * *", "--", "true"))
    # Start early in a minute: the run then starts less than 45 s after M by the database,
    # where M+1 would lie in its claim window.
    second = datetime.now(UTC).second
    if not 2 <= second <= 25:
        time.sleep((62 - second) % 60)
    env = cli_env(tmp_path, SCHEDCTL_DATABASE_URL=pg_url, LD_PRELOAD=lib, FAKETIME="+70")
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    log = tmp_path / "daemon.log"
    with log.open("wb") as f:
        daemon = subprocess.Popen(
            [str(BIN), "daemon", "--refresh", "1s"], env=env, stdout=f, stderr=f
        )
    try:
        deadline = time.monotonic() + 40
        while not run_rows(pg_url, "tick") and time.monotonic() < deadline:
            time.sleep(0.3)
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
    text = log.read_text()
    fired = re.search(r"event=job.fired job=tick slot=(\S+) .*reason=catch-up", text)
    assert fired, text
    rows = run_rows(pg_url, "tick")
    assert rows and slot_of(rows[0]) == minute == datetime.fromisoformat(fired[1]), text
    assert rows[0]["trigger"] == "daemon" and rows[0]["clock_skew_seconds"] > 69


def test_a_stray_firing_in_a_repeated_hour_runs_no_second_slot(tmp_path: Path) -> None:
    """systemd, started in Berlin's second 02:xx of 2026-10-25, fires `30 2 * * *` at 01:30 UTC.

    That is no slot (tests/render checks systemd's elapse); the job ran at 00:30 UTC. On
    SQLite both clocks are the host's, so faketime sets the whole scene.
    """
    lib = faketime()
    past = make_cli(tmp_path, LD_PRELOAD=lib, TZ="UTC", FAKETIME="@2026-10-20 12:00:00")
    ok(past("add", "backup", "-s", "30 2 * * *", "--tz", "Europe/Berlin", "--", "true"))
    env = cli_env(tmp_path, LD_PRELOAD=lib, TZ="UTC")
    first = finish(start(env, "backup", "@2026-10-25 00:30:00", "web1"))
    assert "event=run.claimed" in first and "slot=2026-10-25T02:30:00+02:00" in first
    stray = finish(start(env, "backup", "@2026-10-25 01:30:00", "web2"))
    assert "event=run.skipped.duplicate" in stray, stray
    assert "slot=2026-10-25T02:30:00+02:00" in stray
    rows = run_rows(f"sqlite:///{tmp_path / 'data' / 'schedctl.db'}")
    assert [(slot_of(r), r["host"]) for r in rows] == [
        (datetime(2026, 10, 25, 0, 30, tzinfo=UTC), "web1")
    ]


def test_prune_keeps_the_rows_that_stop_a_slot_running_twice(pg_url: str, tmp_path: Path) -> None:
    """`--keep 1m`, `prune`, and a second host firing 62 s after the first, on both backends.

    The first run's times are moved 62 s back instead of waiting: retention judges its age.
    """
    now = datetime.now(UTC)
    if now.second >= 50:  # the slot is this minute: define and run it within the minute
        time.sleep(61 - now.second)
        now = datetime.now(UTC)
    daily = f"{now.minute} {now.hour} * * *"
    sqlite_url = f"sqlite:///{tmp_path / 'sqlite' / 'data' / 'schedctl.db'}"
    setups = []
    for name, url in (("sqlite", sqlite_url), ("postgresql", pg_url)):
        home = tmp_path / name
        home.mkdir()
        extra = {} if name == "sqlite" else {"SCHEDCTL_DATABASE_URL": url}
        cli = make_cli(home, **extra)
        ok(cli("db", "upgrade"))
        ok(cli("add", "report", "-s", daily, "--tz", "UTC", "--keep", "1m", "--", "true"))
        env = cli_env(home, **extra)
        assert "event=run.claimed" in finish(start(env, "report", "+0", "host-a"))
        setups.append((name, url, cli, env))
    for name, url, cli, env in setups:
        age_runs(url, "report", 62)
        pruned = json.loads(ok(cli("prune", "--json")).out)
        second = finish(start(env, "report", "+0", "host-b"))
        rows = run_rows(url, "report")
        assert [r["host"] for r in rows] == ["host-a"], (name, second)
        assert "event=run.skipped.duplicate" in second, (name, second)
        assert (pruned["total"], pruned["kept_claimable"]) == (0, 1), (name, pruned)
        assert pruned["kept_claimable_jobs"] == {"report": 1}
        assert re.search(r"kept 1 runs past retention", ok(cli("prune", "--dry-run")).out)
