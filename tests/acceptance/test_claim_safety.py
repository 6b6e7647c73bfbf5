"""What `run` does between its claim and its job's start, and with settings that would break it."""

from __future__ import annotations

import json
import re
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cli_helpers import BIN, Cli, cli_env, make_cli, ok, run_rows
from test_run import start_run, this_minute_daily

BAD_HEARTBEATS = ["inf", "1e300", "nan", "0", "-1", "abc", "301", "1_0", "\u0663"]


@pytest.mark.parametrize("value", BAD_HEARTBEATS)
def test_a_heartbeat_out_of_range_is_refused_before_the_claim(
    backend: tuple[Cli, str, dict[str, str]], value: str
) -> None:
    cli, url, env = backend
    ok(cli("add", "hb", "-s", "* * * * *", "--tz", "UTC", "--", "/bin/true"))
    run = subprocess.run(
        [str(BIN), "run", "hb", "--now"], env={**env, "SCHEDCTL_HEARTBEAT": value},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    err = run.stderr
    assert run.returncode == 78, err
    assert err.splitlines() == [err.strip()] and err.startswith("schedctl: error: "), err
    assert "$SCHEDCTL_HEARTBEAT" in err and "0.1 to 300" in err, err
    assert run_rows(url, "hb") == []  # nothing claimed
    ok(cli("history"))
    daemon = subprocess.run(
        [str(BIN), "daemon"], env={**env, "SCHEDCTL_HEARTBEAT": value},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert daemon.returncode == 78 and "$SCHEDCTL_HEARTBEAT" in daemon.stderr, daemon.stderr


def _insert_running(url: str, job: str, fence: str, started: bool = True) -> int:
    """Insert a `running` row of a dead runner an hour old, with this fence, past validation."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO runs (job_id, job_name, trigger, attempt, status, host, pid,"
            " db_backend_pid, claimed_at, started_at, heartbeat_at, output_bytes,"
            " output_truncated, schedctl_version, fence_seconds)"
            " SELECT id, name, 'manual', 1, 'running', 'otherhost', 1, 999999,"
            " now() - interval '1 hour', CASE WHEN %s THEN now() - interval '1 hour' END,"
            " now() - interval '1 hour', 0, false, '0.0.9', %s::float8"
            " FROM jobs WHERE name = %s RETURNING id",
            (started, fence, job),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_stored_fence_out_of_range_breaks_no_command(pg_url: str, tmp_path: Path) -> None:
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url)
    ok(cli("db", "upgrade"))
    ok(cli("add", "hb", "-s", "* * * * *", "--tz", "UTC", "--", "/bin/true"))
    # Rows an older schedctl wrote when it took any SCHEDCTL_HEARTBEAT.
    bad = {_insert_running(pg_url, "hb", f) for f in ("Infinity", "2e300", "NaN", "-Infinity")}
    for command in (["history"], ["report"], ["locks"], ["metrics"], ["check", "--settle"]):
        result = cli(*command)
        assert result.rc in (0, 1, 2), (command, result.rc, result.err)
        assert "interval out of range" not in result.err + result.out, (command, result.err)
        assert "internal error" not in result.err + result.out, (command, result.err)
    run = ok(cli("run", "hb", "--now"))
    assert "event=run.finished" in run.err
    rows = {r["id"]: r for r in run_rows(pg_url, "hb")}
    # A fence counts at most the longest one a runner can record (611 s): an hour-old
    # heartbeat is past it, whatever the row says.
    assert {rows[i]["status"] for i in bad} == {"lost"}


def test_a_claim_stores_a_fence_within_range(pg_url: str) -> None:
    from schedctl.clock import SystemClock
    from schedctl.config import parse_database_url
    from schedctl.db import schema
    from schedctl.db.repository import Claim, open_current
    from schedctl.models import JobSpec, Trigger

    longest = 611.0  # the fence of the longest heartbeat (300 s): 300 + 300 + 10 + 1

    url = parse_database_url(pg_url)
    schema.upgrade(url)
    store = open_current(url, SystemClock())
    try:
        spec = JobSpec(name="f", schedule="* * * * *", timezone="UTC", command=("true",))
        job = store.add_job(spec, datetime.now(UTC))
        for fence, stored in ((float("inf"), longest), (float("nan"), longest),
                              (-5.0, 0.0), (21.0, 21.0)):  # fmt: skip
            claim = Claim(job, None, Trigger.MANUAL, 1, "h", 1, datetime.now(UTC), 0.0, "t", fence)
            run_id = store.claim(claim)
            assert run_id is not None
            assert store.get_run(run_id) is not None
            found = next(r for r in run_rows(pg_url, "f") if r["id"] == run_id)["fence_seconds"]
            assert found == stored, (fence, found)
    finally:
        store.close()


BAD_HOSTS = [
    "bad\udc9bhost",  # the byte 0x9b alone: not UTF-8
    '=HYPERLINK("x")\x1b]0;PWN\x07\x1b[2J\x9b31m\u2028[bold]B[/bold]',
    "a\u2029b",
    "a\nb",
    "a\x7fb",
    "h" * 256,
]


@pytest.mark.parametrize("host", BAD_HOSTS, ids=range(len(BAD_HOSTS)))
def test_a_host_name_a_stored_string_may_not_be_is_refused(
    backend: tuple[Cli, str, dict[str, str]], host: str, tmp_path: Path
) -> None:
    cli, url, env = backend
    ok(cli("add", "j1", "-s", "* * * * *", "--tz", "UTC", "--", "/bin/true"))
    bad = {**env, "SCHEDCTL_HOST": host}
    crontab = tmp_path / "crontab"
    for command in (
        ["run", "j1", "--now"],
        ["daemon"],
        ["sync", "crontab", "--file", str(crontab)],
    ):
        p = subprocess.run([str(BIN), *command], env=bad, capture_output=True, timeout=60,
                           check=False)  # fmt: skip
        err = p.stderr.decode("utf-8", "replace")
        assert p.returncode == 78, (command, p.returncode, err)
        assert len(err.splitlines()) == 1 and err.startswith("schedctl: error: "), err
        assert "$SCHEDCTL_HOST" in err and "Traceback" not in err, err
        assert "\x1b" not in err and "\x9b" not in err, err
    assert run_rows(url, "j1") == []
    with_hosts = ok(cli("hosts", "--json")).out
    assert "HYPERLINK" not in with_hosts and "hhhh" not in with_hosts


def _backend_waiting_on_a_lock(
    admin: psycopg.Connection[Any], database: str, timeout: float = 20
) -> int:
    """Return the pid of the `schedctl run` session on `database` once it waits on a row lock."""
    deadline = time.monotonic() + timeout
    while True:
        row = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'schedctl run'"
            " AND wait_event_type = 'Lock' AND datname = %s",
            (database,),
        ).fetchone()
        if row:
            return int(row[0])
        assert time.monotonic() < deadline, "the runner never waited on the row lock"
        time.sleep(0.1)


def _database(url: str) -> str:
    return url.rsplit("/", 1)[1].split("?", maxsplit=1)[0]


def _held_row(url: str, run_id: int) -> psycopg.Connection[Any]:
    """Hold a lock on a run row, so that a runner's settling of dead rows waits on it."""
    holder = psycopg.connect(url)
    holder.execute("SELECT id FROM runs WHERE id = %s FOR UPDATE", (run_id,))
    return holder


def _db_now(url: str) -> datetime:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    now: datetime = row[0]
    return now


def _a_day_earlier(url: str, job: str) -> None:
    """Move the job's definition and its slots' runs a day back, as if its slot was yesterday.

    `history --missed` judges slots by the database's clock, and only those a minute old.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE job_changes SET at = at - interval '36 hours' WHERE job_id ="
                     " (SELECT id FROM jobs WHERE name = %s)", (job,))  # fmt: skip
        conn.execute("UPDATE jobs SET created_at = created_at - interval '36 hours'"
                     " WHERE name = %s", (job,))  # fmt: skip
        conn.execute("UPDATE runs SET slot = slot - interval '1 day', claimed_at = claimed_at"
                     " - interval '1 day' WHERE job_name = %s AND slot IS NOT NULL", (job,))  # fmt: skip


def test_a_session_lost_between_claim_and_start_still_runs_the_slot_once(
    pg_url: str, tmp_path: Path
) -> None:
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url)
    env = cli_env(tmp_path, SCHEDCTL_DATABASE_URL=pg_url)
    ok(cli("db", "upgrade"))
    side = tmp_path / "side"
    ok(cli("add", "bx", "-s", this_minute_daily(), "--tz", "UTC", "--shell", "--",
           f"echo RAN-BX >> {side}"))  # fmt: skip
    dead = _insert_running(pg_url, "bx", "21")
    holder = _held_row(pg_url, dead)
    runner = start_run(env, "bx")
    try:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            pid = _backend_waiting_on_a_lock(admin, _database(pg_url))
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        time.sleep(1)
        holder.commit()
        _, err = runner.communicate(timeout=60)
    finally:
        holder.close()
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == 0, err
    assert "event=run.session_replaced" in err, err
    assert side.read_text() == "RAN-BX\n"
    again = ok(cli("run", "bx"))
    assert "event=run.skipped.duplicate" in again.err, again.err
    assert side.read_text() == "RAN-BX\n"  # exactly once
    mine = [r for r in run_rows(pg_url, "bx") if r["slot"] is not None]
    assert [(r["status"], r["started_at"] is not None) for r in mine] == [("succeeded", True)]
    # Judged once the slot is past its deadline: it ran, so nothing is missed.
    _a_day_earlier(pg_url, "bx")
    assert "no missed slots" in ok(cli("history", "bx", "--missed")).out


def test_a_session_that_does_not_come_back_before_the_start_leaves_the_slot_missed(
    pg_url: str, tmp_path: Path
) -> None:
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url)
    env = cli_env(tmp_path, SCHEDCTL_DATABASE_URL=pg_url)
    ok(cli("db", "upgrade"))
    side = tmp_path / "side"
    ok(cli("add", "bx", "-s", this_minute_daily(), "--tz", "UTC", "--shell", "--",
           f"echo RAN-BX >> {side}"))  # fmt: skip
    database = _database(pg_url)
    dead = _insert_running(pg_url, "bx", "21")
    holder = _held_row(pg_url, dead)
    runner = start_run(env, "bx")
    admin = psycopg.connect(pg_url.rsplit("/", 1)[0] + "/postgres", autocommit=True)
    try:
        pid = _backend_waiting_on_a_lock(admin, database)
        # No new session can come back within the runner's budget.
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        started = time.monotonic()
        _, err = runner.communicate(timeout=60)
        waited = time.monotonic() - started
    finally:
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        admin.close()
        holder.rollback()
        holder.close()
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == 75, err
    last = err.splitlines()[-1]
    assert last.startswith("schedctl: error: ") and "the job did not run" in last, err
    assert "recorded lost with no start" in last and "Traceback" not in err, err
    assert 8 < waited < 30, waited  # the budget, bounded
    assert not side.exists()
    # The next command settles the row: lost, never started.
    ok(cli("history", "bx"))
    mine = [r for r in run_rows(pg_url, "bx") if r["slot"] is not None]
    assert [(r["status"], r["started_at"]) for r in mine] == [("lost", None)]
    _a_day_earlier(pg_url, "bx")
    missed = ok(cli("history", "bx", "--missed", "--json")).out
    assert "no missed slots" not in missed
    yesterday = mine[0]["slot"] - timedelta(days=1)
    assert yesterday.strftime("%Y-%m-%dT%H:%M") in missed, missed
    # Today's slot (its run moved a day back) counts as missed too once it is a minute old by
    # the database's clock, which a slow machine reaches during the test.
    before = _db_now(pg_url)
    report = json.loads(ok(cli("report", "--json", "--since", "2d")).out)
    after = _db_now(pg_url)
    grace = timedelta(minutes=1)
    expected = {1 + (before - grace >= mine[0]["slot"]), 1 + (after - grace >= mine[0]["slot"])}
    (missed_count,) = [j["missed"] for j in report["jobs"] if j["job"] == "bx"]
    assert missed_count in expected, report


def test_removing_a_job_with_purge_during_its_run_lets_it_finish_unrecorded(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    cli, url, env = backend
    side = tmp_path / "side"
    ok(cli("add", "rm", "-s", "0 0 1 1 *", "--tz", "UTC", "--shell", "--",
           f"sleep 3; echo finished > {side}"))  # fmt: skip
    runner = start_run({**env, "SCHEDCTL_HEARTBEAT": "0.3"}, "rm", "--now")
    try:
        deadline = time.monotonic() + 30
        while not any(r["started_at"] for r in run_rows(url, "rm")):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        ok(cli("remove", "rm", "--purge", "--yes"))
        _, err = runner.communicate(timeout=60)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == 0, err
    assert side.read_text() == "finished\n"  # ran to its end
    assert "lock_lost" not in err, err
    assert re.search(r"level=warning event=run\.job_removed .*status=succeeded", err), err
    assert "event=run.spooled" not in err, err
    spool = Path(env["SCHEDCTL_DATA_DIR"]) / "spool"
    assert not spool.exists() or not any(spool.rglob("*.json")), list(spool.rglob("*"))
    assert run_rows(url, "rm") == []
    ok(cli("list"))
    assert "spool.bad_record" not in cli("list").err
