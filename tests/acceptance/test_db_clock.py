"""Monitoring judges stored times by the database's clock, whatever the monitoring host's says.

PostgreSQL stamps claims, starts and heartbeats with its own clock; `check`, `report`,
`metrics`, `history --missed`, `hosts` and `notify` run here on a host whose clock libfaketime
puts 100 s (or 125 s) ahead of or behind the server's.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from cli_helpers import BIN, Cli, cli_env, faketime, make_cli, ok


def born(pg_url: str, job: str, seconds_ago: float) -> None:
    """Make `job` defined `seconds_ago` by the database's clock: its slots are judged from then."""
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(
            "WITH t AS (SELECT clock_timestamp() - make_interval(secs => %s) AS at),"
            " j AS (UPDATE jobs SET created_at = t.at, updated_at = t.at FROM t"
            "  WHERE name = %s RETURNING jobs.id, t.at)"
            " UPDATE job_changes c SET at = j.at FROM j WHERE c.job_id = j.id",
            (seconds_ago, job),
        )


def host_off(tmp_path: Path, pg_url: str, offset: str) -> Cli:
    """The CLI on a host whose clock is `offset` (FAKETIME, e.g. "+100s") off the database's."""
    return make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url, LD_PRELOAD=faketime(), FAKETIME=offset)


@pytest.fixture
def cli(tmp_path: Path, pg_url: str) -> Cli:
    run = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url)
    ok(run("db", "upgrade"))
    notify = ["--notify", "exec:/bin/true", "--notify-on", "missed"]
    ok(run("add", "tick", "-s", "* * * * *", "--tz", "UTC", *notify, "--", "/bin/true"))
    return run


def missed_everywhere(off: Cli, pg_url: str, seconds_ago: float) -> dict[str, int]:
    """Count `tick`'s missed slots as each command sees them, each right after `born`."""
    found = {}
    born(pg_url, "tick", seconds_ago)
    checked = off("check", "tick")
    found["check"] = int("missed slot" in checked.out)
    assert checked.rc in (0, 2), checked
    born(pg_url, "tick", seconds_ago)
    (row,) = json.loads(ok(off("report", "--json")).out)["jobs"]
    found["report"] = row["missed"]
    born(pg_url, "tick", seconds_ago)
    found["history"] = len(json.loads(ok(off("history", "tick", "--missed", "--json")).out))
    born(pg_url, "tick", seconds_ago)
    metrics = ok(off("metrics")).out
    (line,) = [ln for ln in metrics.splitlines() if ln.startswith("schedctl_missed_slots{")]
    found["metrics"] = int(float(line.split()[-1]))
    born(pg_url, "tick", seconds_ago)
    found["notify"] = json.loads(ok(off("notify", "--json")).out)["missed_slots"]
    return found


def test_a_host_ahead_sees_no_missed_slot_before_it_is_due(
    tmp_path: Path, pg_url: str, cli: Cli
) -> None:
    # Defined 40 s ago by the database: no slot of it is past jitter + 1 min yet. By a clock
    # 100 s ahead, the slot after the definition would be.
    off = host_off(tmp_path, pg_url, "+100s")
    found = missed_everywhere(off, pg_url, 40)
    assert found == dict.fromkeys(found, 0)
    born(pg_url, "tick", 40)
    checked = off("check", "tick")
    assert (checked.rc, checked.out) == (0, "SCHEDCTL OK - 1 jobs OK\n"), checked


def test_a_host_behind_still_sees_the_slot_that_was_missed(
    tmp_path: Path, pg_url: str, cli: Cli
) -> None:
    # Defined 150 s ago: at least one minute began between then and a minute ago, and no host
    # ran it. By a clock 100 s behind, the definition would lie in the future.
    off = host_off(tmp_path, pg_url, "-100s")
    found = missed_everywhere(off, pg_url, 150)
    assert all(n >= 1 for n in found.values()), found
    born(pg_url, "tick", 150)
    assert off("check", "tick").rc == 2


def test_a_heartbeating_run_is_not_stuck_on_a_host_ahead(
    tmp_path: Path, pg_url: str, cli: Cli
) -> None:
    ok(cli("add", "slow", "-s", "@daily", "--tz", "UTC", "--", "/bin/sleep", "20"))
    running = subprocess.Popen(
        [str(BIN), "run", "slow", "--now"],
        env=cli_env(tmp_path, SCHEDCTL_DATABASE_URL=pg_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while "running" not in ok(cli("history", "slow", "--json")).out:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        time.sleep(1)
        for offset in ("+125s", "-125s"):
            checked = host_off(tmp_path, pg_url, offset)("check", "slow", "--json")
            verdict = json.loads(checked.out)
            assert (checked.rc, verdict["jobs"][0]["state"]) == (0, "OK"), (offset, verdict)
        report = json.loads(ok(host_off(tmp_path, pg_url, "+125s")("report", "--json")).out)
        (row,) = [r for r in report["jobs"] if r["job"] == "slow"]
        assert row["running_seconds"] < 60, row
    finally:
        running.kill()
        running.wait()


def test_hosts_are_aged_by_the_database_clock(tmp_path: Path, pg_url: str, cli: Cli) -> None:
    ok(cli("run", "tick", "--now"))  # registers this host
    for offset in ("+400s", "-400s"):
        (host,) = json.loads(ok(host_off(tmp_path, pg_url, offset)("hosts", "--json")).out)
        assert host["live"] and host["seen_seconds_ago"] < 60, (offset, host)
