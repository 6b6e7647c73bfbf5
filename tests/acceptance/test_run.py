"""`schedctl run` through the installed binary: exactly once, supervised, recorded, fail-safe."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cli_helpers import (
    BIN,
    Cli,
    alive,
    cgroup_usable,
    cli_env,
    faketime,
    held,
    make_cli,
    ok,
    one_line_error,
    run_rows,
    wait_started,
)
from pgserver import PgServer, destroy, free_port, start_server


def this_minute_daily() -> str:
    """A daily schedule whose latest slot is the current UTC minute, stable for a day."""
    now = datetime.now(UTC)
    if now.second >= 58:  # don't define it in one minute and run it in the next
        time.sleep(2.5)
        now = datetime.now(UTC)
    return f"{now.minute} {now.hour} * * *"


def start_run(env: dict[str, str], job: str, *args: str) -> subprocess.Popen[str]:
    """Start `schedctl run JOB ARGS` in the background, as a timer would."""
    return subprocess.Popen(
        [str(BIN), "run", job, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@contextmanager
def own_server(
    tmp_path: Path, *job: str, **extra_env: str
) -> Iterator[tuple[PgServer, str, Cli, dict[str, str]]]:
    """A PostgreSQL server of the test's own (the test stops it), with one job defined."""
    server = start_server()
    try:
        url = server.url(server.create_database())
        cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url, **extra_env)
        ok(cli("db", "upgrade"))
        ok(cli("add", *job))
        yield server, url, cli, cli_env(tmp_path, SCHEDCTL_DATABASE_URL=url, **extra_env)
    finally:
        destroy(server)


def test_run_claims_the_slot_once_and_records_it(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    cli, url, _ = backend
    side = tmp_path / "side"
    envdump = tmp_path / "env"
    script = f'echo "$SCHEDCTL_JOB $SCHEDCTL_RUN_ID $SCHEDCTL_SLOT" >> {side}; env > {envdump}; echo done'
    ok(
        cli(
            "add",
            "job",
            "-s",
            this_minute_daily(),
            "--tz",
            "UTC",
            "--env",
            "X=1",
            "--shell",
            "--",
            script,
        )
    )

    first = cli("run", "job", "--trigger", "timer")
    assert first.rc == 0, first.err
    assert first.out == "done\n"  # the job's output is streamed through
    assert "event=run.claimed" in first.err and "event=run.finished" in first.err
    again = cli("run", "job")
    assert again.rc == 0 and "event=run.skipped.duplicate" in again.err

    lines = side.read_text().splitlines()
    assert len(lines) == 1
    name, run_id, slot = lines[0].split()
    assert name == "job" and slot.endswith("+00:00")
    job_env = envdump.read_text()
    assert "X=1" in job_env and "SCHEDCTL_DATABASE_URL" not in job_env  # the secret stays out
    (row,) = run_rows(url)
    assert row["id"] == int(run_id)
    assert (row["status"], row["trigger"], row["attempt"], row["exit_code"]) == (
        "succeeded",
        "timer",
        1,
        0,
    )
    assert row["slot"].isoformat() == slot
    assert row["output_tail"] == "done\n" and row["output_bytes"] == 5
    assert row["started_at"] <= row["finished_at"]


def test_a_job_removed_and_added_again_does_not_run_the_same_slot_twice(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    cli, url, _ = backend
    side = tmp_path / "side"
    schedule = this_minute_daily()
    job = ["add", "again", "-s", schedule, "--tz", "UTC", "--shell", "--"]
    ok(cli(*job, f'echo "$SCHEDCTL_SLOT" >> {side}'))
    ok(cli("run", "again", "--trigger", "cron"))
    ok(cli("remove", "again", "--yes"))
    ok(cli(*job, f'echo "$SCHEDCTL_SLOT" >> {side}'))

    second = cli("run", "again", "--trigger", "cron")

    assert second.rc == 0, second.err
    assert "event=run.skipped.duplicate" in second.err, second.err
    assert len(side.read_text().splitlines()) == 1
    assert [r["status"] for r in run_rows(url, "again")] == ["succeeded"]


def test_manual_runs_exit_codes_timeout_and_retries(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    cli, url, _ = backend
    ok(cli("add", "fails", "-s", "@daily", "--", "sh", "-c", "echo bad >&2; exit 3"))
    ok(cli("add", "slow", "-s", "@daily", "--timeout", "1s", "--", "sleep", "30"))
    counter = tmp_path / "count"
    flaky = (
        f"n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}; [ $n -ge 3 ]"
    )
    ok(
        cli(
            "add",
            "flaky",
            "-s",
            "@daily",
            "--retries",
            "3",
            "--retry-delay",
            "1s",
            "--shell",
            "--",
            flaky,
        )
    )
    ok(cli("add", "missing", "-s", "@daily", "--", "/nonexistent/bin"))

    assert cli("run", "fails", "--now").rc == 3
    started = time.monotonic()
    assert cli("run", "slow", "--now").rc == 124
    assert time.monotonic() - started < 15
    assert cli("run", "flaky", "--now").rc == 0
    assert cli("run", "missing", "--now").rc == 127

    by_job: dict[str, list[tuple[Any, ...]]] = {}
    for r in run_rows(url):
        by_job.setdefault(r["job_name"], []).append(
            (r["trigger"], r["slot"], r["attempt"], r["status"], r["exit_code"])
        )
    assert by_job["fails"] == [("manual", None, 1, "failed", 3)]
    assert by_job["slow"] == [("manual", None, 1, "timed_out", 124)]
    assert by_job["flaky"] == [
        ("manual", None, 1, "failed", 1),
        ("manual", None, 2, "failed", 1),
        ("manual", None, 3, "succeeded", 0),
    ]
    assert by_job["missing"] == [("manual", None, 1, "failed", 127)]


def test_thirty_racing_hosts_run_the_slot_once(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    cli, url, env = backend
    side = tmp_path / "side"
    ok(
        cli(
            "add",
            "race",
            "-s",
            this_minute_daily(),
            "--tz",
            "UTC",
            "--shell",
            "--",
            f'echo "$SCHEDCTL_RUN_ID" >> {side}; sleep 1',
        )
    )
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            [str(BIN), "run", "race"],
            env={**env, "SCHEDCTL_HOST": f"host-{i:02d}"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(30)
    ]
    results = [(p.wait(timeout=120), p.stderr.read() if p.stderr else "") for p in procs]
    wall = time.monotonic() - started
    assert [rc for rc, _ in results] == [0] * 30
    assert sum("event=run.skipped.duplicate" in err for _, err in results) == 29
    assert len(side.read_text().splitlines()) == 1  # the side effect happened exactly once
    rows = run_rows(url)
    assert len(rows) == 1 and rows[0]["status"] == "succeeded"
    print(f"\n30 racers on {url.split(':')[0]}: 1 ran, 29 skipped, {wall:.2f} s wall")


def test_overlap_is_skipped_under_forbid(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    cli, url, env = backend
    started, release = tmp_path / "started", tmp_path / "release"
    # The job holds the lock until the test has tried the second run, however slow the machine.
    script = f"touch {started}; while [ ! -e {release} ]; do sleep 0.05; done"
    ok(cli("add", "long", "-s", "@daily", "--shell", "--", script))
    first = start_run(env, "long", "--now")
    deadline = time.monotonic() + 30
    while not started.exists():
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)
    second = cli("run", "long", "--now")
    release.touch()
    assert second.rc == 0 and "event=run.lock.busy" in second.err
    assert first.wait(timeout=30) == 0
    assert sorted(r["status"] for r in run_rows(url)) == ["skipped_overlap", "succeeded"]


def test_signals_to_run_stop_the_whole_job(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    cli, url, env = backend
    pid_file = tmp_path / "pid"
    ok(
        cli(
            "add",
            "tree",
            "-s",
            "@daily",
            "--shell",
            "--",
            f"sleep 60 & echo $! > {pid_file}; sleep 60",
        )
    )
    runner = start_run(env, "tree", "--now")
    deadline = time.monotonic() + 20
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(timeout=30) == 128 + signal.SIGTERM
    grandchild = int(pid_file.read_text())
    time.sleep(0.2)
    assert not alive(grandchild)
    (row,) = run_rows(url)
    assert (row["status"], row["exit_code"]) == ("killed", 143)


def test_a_signal_while_the_job_starts_still_stops_it_and_is_recorded(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    # The job signals its runner the moment it starts: before the runner's handler was in
    # place, SIGTERM ended schedctl itself (-15), the run became `lost` and the job ran on.
    cli, url, env = backend
    pid_file = tmp_path / "pid"
    job = f"kill -TERM $PPID; sleep 60 & echo $! > {pid_file}; wait"
    ok(cli("add", "early", "-s", "@daily", "--shell", "--", job))
    runner = start_run(env, "early", "--now")
    try:
        assert runner.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        if runner.poll() is None:
            runner.kill()
    if pid_file.exists() and pid_file.read_text().strip():
        grandchild = int(pid_file.read_text())
        deadline = time.monotonic() + 5
        while alive(grandchild):
            assert time.monotonic() < deadline, "the job's background process outlived its run"
            time.sleep(0.05)
    (row,) = run_rows(url)
    assert (row["status"], row["exit_code"]) == ("killed", 143)
    # Blocked while the job starts, not in the job: it gets the signal mask schedctl had.
    ok(cli("add", "mask", "-s", "@daily", "--", "grep", "SigBlk", "/proc/self/status"))
    done = subprocess.run(
        [str(BIN), "run", "mask", "--now"],
        check=False, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (0, "SigBlk:\t0000000000000000\n"), done.stderr


def test_kill_9_of_the_runner_is_reconciled_as_lost(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    cli, url, env = backend
    marker = tmp_path / "started"
    ok(cli("add", "victim", "-s", "@daily", "--shell", "--", f"echo $$ > {marker}; sleep 60"))
    runner = start_run(env, "victim", "--now")
    deadline = time.monotonic() + 20
    while not marker.exists() or not marker.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    runner.kill()
    runner.wait()
    job_pid = int(marker.read_text())
    time.sleep(0.3)
    assert not alive(job_pid)  # the job died with its runner
    # The next run reconciles the dead runner's row and, the lock being free, runs. On
    # PostgreSQL it first waits out the dead runner's fence: from another host a killed
    # runner looks like one whose session merely ended, whose job may still be stopping.
    ok(cli("edit", "victim", "--shell", "--", "true"))
    nxt = ok(cli("run", "victim", "--now"))
    assert ("event=run.fence.wait" in nxt.err) == url.startswith("postgresql")
    assert [r["status"] for r in run_rows(url)] == ["lost", "succeeded"]


def test_database_unreachable_at_start_runs_nothing(tmp_path: Path) -> None:
    side = tmp_path / "side"
    url = f"postgresql://u:secret-pw-9@127.0.0.1:{free_port()}/x"
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url)
    result = cli("run", "anything", "--now")
    one_line_error(result, 75, "cannot reach the database")
    assert "secret-pw-9" not in result.err
    assert not side.exists()


def test_database_lost_mid_run_stops_the_job_and_spools_the_result(tmp_path: Path) -> None:
    job = ("during", "-s", "@daily", "--", "sleep", "30")
    with own_server(tmp_path, *job, SCHEDCTL_HEARTBEAT="0.5") as (server, url, cli, env):
        runner = start_run(env, "during", "--now")
        time.sleep(2)
        server.stop("fast")  # the database goes away while the job runs
        # Meanwhile no other host can run it: without the database nothing runs.
        (tmp_path / "other").mkdir()
        other = make_cli(tmp_path / "other", SCHEDCTL_DATABASE_URL=url)("run", "during", "--now")
        assert other.rc == 75
        rc = runner.wait(timeout=40)
        err = runner.stderr.read() if runner.stderr else ""
        assert rc == 128 + signal.SIGTERM, err
        assert "event=run.lock_lost" in err and "event=run.spooled" in err
        spooled = list((tmp_path / "data" / "spool").glob("run-*.json"))
        assert len(spooled) == 1 and spooled[0].stat().st_mode & 0o777 == 0o600
        server.start()
        ok(cli("list"))  # any later command flushes the spool
        assert not list((tmp_path / "data" / "spool").glob("run-*.json"))
        (row,) = run_rows(url)
        assert row["status"] == "lock_lost"


def test_run_loads_no_cli_framework_or_orm(backend: tuple[Cli, str, dict[str, str]]) -> None:
    cli, url, env = backend
    ok(cli("add", "lean", "-s", "@daily", "--", "true"))
    out = subprocess.run(
        [sys.executable, "-X", "importtime", str(BIN), "run", "lean", "--now"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    forbidden = {
        m
        for m in imported
        if m.split(".")[0] in ("typer", "click", "rich", "sqlalchemy", "alembic", "structlog")
    }
    assert forbidden == set()
    # What only reads history back (reports, checks, `history`) is not the run's business.
    assert {"schedctl.history", "schedctl.report", "schedctl.operate"} & imported == set()
    # One driver per run: the other backend's is not loaded either, and PostgreSQL is spoken
    # to through libpq directly: loading psycopg would cost more than all the rest.
    unwanted = {"psycopg", "psycopg_binary"}
    unwanted |= {"sqlite3"} if url.startswith("postgresql") else {"schedctl.db.libpq"}
    assert unwanted & imported == set()
    assert ("schedctl.db.libpq" in imported) == url.startswith("postgresql")
    assert "schedctl.runner" in imported  # the measurement saw the run path


def test_run_that_loses_the_claim_loads_no_supervisor(
    backend: tuple[Cli, str, dict[str, str]],
) -> None:
    # At the top of the hour every racer that lost pays for what it imports, on shared cores.
    cli, _, env = backend
    ok(cli("add", "raced", "-s", this_minute_daily(), "--tz", "UTC", "--", "true"))
    ok(cli("run", "raced"))  # takes the slot
    out = subprocess.run(
        [sys.executable, "-X", "importtime", str(BIN), "run", "raced"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "event=run.skipped.duplicate job=raced" in out.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    assert "schedctl.services" in imported  # the measurement saw the run path
    assert {"schedctl.runner", "subprocess"} & imported == set()


def test_output_with_nul_bytes_is_recorded_not_spooled(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    cli, url, _ = backend
    ok(cli("add", "binary", "-s", "@daily", "--", "printf", "a\\000b\\n"))
    done = cli("run", "binary", "--now")
    assert done.rc == 0, done.err
    assert "event=run.spooled" not in done.err
    (row,) = run_rows(url, "binary")
    # PostgreSQL text cannot hold NUL: it is stored as U+FFFD, like invalid UTF-8.
    assert (row["status"], row["output_tail"], row["output_bytes"]) == (
        "succeeded",
        "a\ufffdb\n",
        4,
    )
    assert not list((tmp_path / "data" / "spool").glob("run-*.json"))
    ok(cli("list"))  # and nothing is left over for later commands to trip on


def test_history_logs_and_locks(backend: tuple[Cli, str, dict[str, str]]) -> None:
    cli, _, env = backend
    noisy = "for i in $(seq 1 500); do echo line-$i; done; exit 2"
    ok(cli("add", "noisy", "-s", "@daily", "--output-limit", "1024", "--shell", "--", noisy))
    ok(cli("add", "quiet", "-s", "@daily", "--", "true"))
    assert cli("run", "noisy", "--now").rc == 2
    ok(cli("run", "quiet", "--now"))

    runs_json = json.loads(ok(cli("history", "--json")).out)
    assert [r["job"] for r in runs_json] == ["quiet", "noisy"]  # newest first
    for key in (
        "id",
        "job",
        "slot",
        "trigger",
        "attempt",
        "status",
        "exit_code",
        "host",
        "started_at",
        "finished_at",
        "duration_seconds",
    ):
        assert key in runs_json[0]
    failed = json.loads(ok(cli("history", "--status", "failed", "--json")).out)
    assert [(r["job"], r["exit_code"]) for r in failed] == [("noisy", 2)]
    assert len(json.loads(ok(cli("history", "--limit", "1", "--json")).out)) == 1
    assert (
        json.loads(ok(cli("history", "quiet", "--since", "1h", "--json")).out)[0]["job"] == "quiet"
    )
    assert json.loads(ok(cli("history", "--host", "elsewhere", "--json")).out) == []
    csv_out = ok(cli("history", "--csv")).out.splitlines()
    assert csv_out[0].startswith("id,job,slot,trigger,attempt,status,exit_code")
    assert len(csv_out) == 3
    assert "noisy" in ok(cli("history")).out

    noisy_id = str(failed[0]["id"])
    log = cli("logs", noisy_id)
    assert log.rc == 0 and log.out.endswith("line-500\n") and len(log.out) == 1024
    assert "output truncated: the last 1024 of" in log.err
    one_line_error(cli("logs", "999999"), 3, "no run with id 999999")
    one_line_error(cli("history", "--status", "weird"), 2, "unknown status 'weird'")

    ok(cli("add", "holder", "-s", "@daily", "--", "sleep", "4"))
    runner = start_run({**env, "SCHEDCTL_HOST": "h-lock"}, "holder", "--now")
    try:
        deadline = time.monotonic() + 20
        while True:
            held = json.loads(ok(cli("locks", "--json")).out)
            if held:
                break
            assert time.monotonic() < deadline, "lock never showed up"
            time.sleep(0.2)
        assert held[0]["job"] == "holder" and held[0]["host"] == "h-lock"
        assert held[0]["run_id"] is not None and held[0]["since"] is not None
        assert "holder" in ok(cli("locks")).out
    finally:
        assert runner.wait(timeout=30) == 0
    assert json.loads(ok(cli("locks", "--json")).out) == []


def test_database_down_when_the_job_ends_spools_its_result(tmp_path: Path) -> None:
    # Heartbeats far apart: the job ends before any heartbeat can notice the outage.
    command, started, go = held(tmp_path)
    job = ("short", "-s", "@daily", "--shell", "--", command)
    with own_server(tmp_path, *job, SCHEDCTL_HEARTBEAT="60") as (server, url, cli, env):
        runner = start_run(env, "short", "--now")
        wait_started(started, runner)
        server.stop("fast")  # the database is gone when the job ends
        go.touch()
        assert runner.wait(timeout=30) == 0  # the job's own status
        assert "event=run.spooled" in (runner.stderr.read() if runner.stderr else "")
        server.start()
        ok(cli("history"))  # flushes the spool first
        (row,) = run_rows(url)
        assert (row["status"], row["exit_code"]) == ("succeeded", 0)


@pytest.mark.parametrize(
    ("policy", "statuses"),
    [
        ("queue", ["succeeded", "succeeded"]),
        ("allow", ["succeeded", "succeeded"]),
    ],
)
def test_queue_waits_and_allow_overlaps(
    backend: tuple[Cli, str, dict[str, str]], policy: str, statuses: list[str]
) -> None:
    cli, url, env = backend
    ok(cli("add", "busy", "-s", "@daily", "--concurrency", policy, "--", "sleep", "4"))
    first = start_run(env, "busy", "--now")
    time.sleep(1)
    second = cli("run", "busy", "--now")
    assert first.wait(timeout=30) == 0
    assert second.rc == 0 and "event=run.lock.busy" in second.err
    rows = run_rows(url)
    assert [r["status"] for r in rows] == statuses
    if policy == "queue":  # it started only once the first had finished
        assert rows[1]["started_at"] >= rows[0]["finished_at"]
    else:  # it ran alongside the first
        assert rows[1]["started_at"] < rows[0]["finished_at"]


def test_run_as_the_first_command_creates_a_private_database(tmp_path: Path) -> None:
    cli = make_cli(tmp_path)
    one_line_error(cli("run", "nothing"), 3, "no job named 'nothing'")
    db = tmp_path / "data" / "schedctl.db"
    assert db.stat().st_mode & 0o777 == 0o600
    assert db.parent.stat().st_mode & 0o777 == 0o700


def _ticks(path: Path) -> dict[int, list[float]]:
    """Read "RUN_ID UNIX_TIME" lines the test jobs append, by run id."""
    out: dict[int, list[float]] = {}
    for line in path.read_text().splitlines():
        run_id, at = line.split()
        out.setdefault(int(run_id), []).append(float(at))
    return out


def _wait_for_lines(path: Path, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() or len(path.read_text().splitlines()) < count:
        assert time.monotonic() < deadline, f"{path} never reached {count} lines"
        time.sleep(0.1)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_server_restart_mid_run_never_lets_two_runs_overlap(tmp_path: Path, mode: str) -> None:
    ticks, first = tmp_path / "ticks", tmp_path / "first"
    # The first run ignores SIGTERM, so it runs on through its whole grace period until
    # SIGKILL; the runs after it tick for two seconds. Each tick is a line with a timestamp.
    script = (
        f"n=20; if [ ! -e {first} ]; then touch {first}; n=900; trap '' TERM; fi; i=0; "
        f'while [ $i -lt $n ]; do echo "$SCHEDCTL_RUN_ID $(date +%s.%N)" >> {ticks}; '
        "sleep 0.1; i=$((i+1)); done"
    )
    job = ("fenced", "-s", "@daily", "--shell", "--", script)
    with own_server(tmp_path, *job, SCHEDCTL_HEARTBEAT="1") as (server, url, _, env):
        holder = start_run(env, "fenced", "--now")
        try:
            _wait_for_lines(ticks, 5)
            server.stop(mode)  # pg_ctl restart: every session ends, every advisory lock is free
            server.start()
            # Another host's run gets the lock at once; it must not start the job before the
            # first run's job has certainly stopped.
            (tmp_path / "other").mkdir()
            other_env = cli_env(tmp_path / "other", SCHEDCTL_DATABASE_URL=url)
            second = subprocess.run(
                [str(BIN), "run", "fenced", "--now"],
                env={**other_env, "SCHEDCTL_HOST": "other"},
                capture_output=True,
                text=True,
                timeout=90,
                check=False,
            )
            rc = holder.wait(timeout=60)
        finally:
            holder.kill()
        err = holder.stderr.read() if holder.stderr else ""
        assert second.returncode == 0, second.stderr
        by_run = _ticks(ticks)
        (_, old), (new_id, new) = sorted(by_run.items())
        assert len(new) == 20
        assert max(old) < min(new), (
            f"run {new_id} overlapped the old one by {max(old) - min(new):.1f}s"
        )
        assert rc == 128 + signal.SIGKILL, err  # it ignored SIGTERM: killed after the grace
        assert err.count("event=run.lock_lost") == 1, err
        assert "event=run.fence.wait" in second.stderr
        assert [r["status"] for r in run_rows(url)] == ["lock_lost", "succeeded"]


def test_a_silent_database_session_still_stops_the_job_within_the_fence(tmp_path: Path) -> None:
    ticks = tmp_path / "ticks"
    script = (
        "trap '' TERM; "
        f'while :; do echo "$SCHEDCTL_RUN_ID $(date +%s.%N)" >> {ticks}; sleep 0.1; done'
    )
    job = ("frozen", "-s", "@daily", "--shell", "--", script)
    with own_server(tmp_path, *job, SCHEDCTL_HEARTBEAT="1") as (_, url, _, env):
        runner = start_run(env, "frozen", "--now")
        try:
            _wait_for_lines(ticks, 5)
            with psycopg.connect(url, autocommit=True) as admin:
                row = admin.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = 'schedctl run'"
                ).fetchone()
                assert row is not None
                backend = int(str(row[0]))
                # The session's server process stops answering while the kernel still acks:
                # what a dead network or a hung server looks like to the heartbeat.
                os.kill(backend, signal.SIGSTOP)
                try:
                    rc = runner.wait(timeout=60)
                    (beat,) = admin.execute(
                        "SELECT extract(epoch FROM heartbeat_at)::float8 FROM runs"
                    ).fetchone()  # type: ignore[misc]
                finally:
                    os.kill(backend, signal.SIGCONT)
        finally:
            runner.kill()
        err = runner.stderr.read() if runner.stderr else ""
        assert rc == 128 + signal.SIGKILL, err
        assert err.count("event=run.lock_lost") == 1, err
        (row_dict,) = run_rows(url)
        assert row_dict["status"] == "lock_lost"
        fence = row_dict["fence_seconds"]
        assert fence is not None and fence < 20
        # The job's last tick came before its fence ran out, counted from its last heartbeat.
        (last_tick,) = [max(t) for t in _ticks(ticks).values()]
        assert last_tick < float(str(beat)) + fence, (last_tick - float(str(beat)), fence)


def _when_row(url: str, job: str, count: int, ready: Any, timeout: float = 30) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        rows = run_rows(url, job)
        if len(rows) >= count and all(ready(r) for r in rows[:count]):
            return rows
        assert time.monotonic() < deadline, rows
        time.sleep(0.2)


def test_queued_runs_heartbeat_and_a_signal_records_them_killed(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    cli, url, env = backend
    faketime_lib = Path(faketime())
    # A schedule whose slots all lie before the job was added: `check` judges runs only.
    ok(cli("add", "q", "-s", "0 0 1 1 *", "--tz", "UTC", "--concurrency", "queue",
           "--", "sleep", "30"))  # fmt: skip
    fast = {**env, "SCHEDCTL_HEARTBEAT": "0.3"}
    holder = start_run(fast, "q", "--now")
    queued: list[subprocess.Popen[str]] = []
    try:
        _when_row(url, "q", 1, lambda r: r["started_at"] is not None)
        queued = [start_run(fast, "q", "--now") for _ in range(2)]
        rows = _when_row(url, "q", 3, lambda r: r["heartbeat_at"] is not None)
        assert [r["started_at"] is None for r in rows] == [False, True, True]  # still waiting
        newest = rows[2]
        time.sleep(1)
        later = run_rows(url, "q")[2]
        assert later["heartbeat_at"] > newest["heartbeat_at"]  # it heartbeats while it waits
        # `check` judges a run stuck after 2 minutes without a heartbeat. Seen 115 s from now
        # by check's clock, the queued run's heartbeat is younger than that, its claim older.
        waited = datetime.now(UTC) - newest["claimed_at"]
        time.sleep(max(0.0, 8 - waited.total_seconds()))
        check = subprocess.run(
            [str(BIN), "check", "q", "--json"],
            env={**env, "LD_PRELOAD": str(faketime_lib), "FAKETIME": "+115"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert check.returncode == 0, check.stdout
        assert json.loads(check.stdout)["state"] == "OK", check.stdout
        # A signal to a queued runner ends it at once, recorded as killed: its command never ran.
        stopped_at = time.monotonic()
        queued[0].send_signal(signal.SIGTERM)
        queued[1].send_signal(signal.SIGINT)
        codes = [p.wait(timeout=10) for p in queued]
        assert time.monotonic() - stopped_at < 3
        assert codes == [128 + signal.SIGTERM, 128 + signal.SIGINT]
    finally:
        for p in (holder, *queued):
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=30)
    by_id = {r["id"]: r for r in run_rows(url, "q")}
    for p, code in zip(queued, codes, strict=True):
        err = p.stderr.read() if p.stderr else ""
        run_id = int(re.search(r"event=run\.claimed .*?run_id=(\d+)", err).group(1))  # type: ignore[union-attr]
        row = by_id[run_id]
        assert (row["status"], row["exit_code"], row["started_at"]) == ("killed", code, None)


# -- processes that leave the job's process group ---------------------------------------------

CGROUP_MODES = pytest.mark.parametrize("cgroup", ["auto", "off"], ids=["cgroup", "no-cgroup"])


@CGROUP_MODES
def test_a_session_of_its_own_does_not_hold_the_run_open(tmp_path: Path, cgroup: str) -> None:
    cli = make_cli(tmp_path, SCHEDCTL_RUN_CGROUP=cgroup)
    pid = tmp_path / "pid"
    leftover = f"setsid sleep 40 & echo $! > {pid}; sleep 1"
    ok(cli("add", "left", "-s", "* * * * *", "--timeout", "3s", "--shell", "--", leftover))
    overtime = f"setsid sleep 40 & echo $! > {pid}; sleep 30"
    ok(cli("add", "over", "-s", "* * * * *", "--timeout", "2s", "--shell", "--", overtime))

    started = time.monotonic()
    done = cli("run", "left", "--now")
    # The main process ended after 1 s: what it left is stopped then (it held the pipes for 40 s).
    assert done.rc == 0, done.err
    assert time.monotonic() - started < 5
    assert not alive(int(pid.read_text()))

    started = time.monotonic()
    done = cli("run", "over", "--now")
    assert done.rc == 124, done.err
    assert time.monotonic() - started < 8
    assert not alive(int(pid.read_text()))
    url = f"sqlite:///{tmp_path / 'data' / 'schedctl.db'}"
    assert [(r["job_name"], r["status"]) for r in run_rows(url)] == [
        ("left", "succeeded"),
        ("over", "timed_out"),
    ]


@CGROUP_MODES
def test_a_detached_grandchild_does_not_outlive_its_run(tmp_path: Path, cgroup: str) -> None:
    cli = make_cli(tmp_path, SCHEDCTL_RUN_CGROUP=cgroup)
    pid = tmp_path / "pid"
    script = f'setsid sh -c "sleep 30" >/dev/null 2>&1 & echo $! > {pid}; sleep 0.3'
    ok(cli("add", "detach", "-s", "* * * * *", "--shell", "--", script))
    ok(cli("run", "detach", "--now"))
    # Recorded succeeded and the lock released only once it is gone.
    assert not alive(int(pid.read_text()))
    assert not list((tmp_path / "data" / "procs").iterdir())  # its record went with it


@CGROUP_MODES
def test_the_next_run_stops_what_a_killed_runner_left(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path, cgroup: str
) -> None:
    cli, url, env = backend
    env = {**env, "SCHEDCTL_RUN_CGROUP": cgroup}
    log, gpid, verdict = tmp_path / "log", tmp_path / "gpid", tmp_path / "verdict"
    where = tmp_path / "cgroup"
    # The first run leaves a writer in a session of its own; the second says whether it still
    # runs as it starts, then writes too. Both stamp every line with their run id.
    script = tmp_path / "writer.sh"
    script.write_text(f"""
stamp() {{ echo "$SCHEDCTL_RUN_ID $(date +%s%N)" >> {log}; }}
if [ ! -e {gpid} ]; then
  grep -o 'schedctl-run-' /proc/self/cgroup > {where}
  setsid sh -c 'echo $$ > {gpid}.tmp; mv {gpid}.tmp {gpid}
    while :; do echo "$SCHEDCTL_RUN_ID $(date +%s%N)" >> {log}; sleep 0.02; done' \\
    </dev/null >/dev/null 2>&1 &
  sleep 60
else
  g=$(cat {gpid})
  if [ -e /proc/$g ] && ! grep -q ') Z' /proc/$g/stat; then echo alive; else echo dead; fi > {verdict}
  for i in 1 2 3 4 5; do stamp; sleep 0.02; done
fi
""")
    ok(cli("add", "writer", "-s", "@daily", "--", "/bin/sh", str(script)))
    first = start_run(env, "writer", "--now")
    try:
        deadline = time.monotonic() + 20
        while not (gpid.exists() and log.exists() and len(log.read_text().splitlines()) >= 10):
            if time.monotonic() >= deadline:
                first.kill()
                raise AssertionError(
                    f"the first run never started its writer: {first.communicate(timeout=30)}"
                )
            time.sleep(0.05)
        first.kill()  # SIGKILL: none of schedctl's code runs any more
        first.wait(timeout=10)
        grandchild = int(gpid.read_text())
        assert alive(grandchild)  # PR_SET_PDEATHSIG took the job's shell, not the escaped writer
        in_cgroup = where.read_text() == "schedctl-run-\n"
        assert in_cgroup is (cgroup == "auto" and cgroup_usable())

        second = subprocess.run(
            [str(BIN), "run", "writer", "--now"],
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 0, second.stderr
        assert verdict.read_text() == "dead\n"
        stamps = [line.split() for line in log.read_text().splitlines()]
        first_id, second_id = stamps[0][0], stamps[-1][0]
        assert first_id != second_id
        last_of_first = max(int(t) for run, t in stamps if run == first_id)
        first_of_second = min(int(t) for run, t in stamps if run == second_id)
        assert last_of_first < first_of_second  # never both at once
        assert not alive(grandchild)
        assert "event=run.leftovers_stopped" in second.stderr
        assert [r["status"] for r in run_rows(url, "writer")] == ["lost", "succeeded"]
    finally:
        if gpid.exists() and alive(int(gpid.read_text())):
            os.kill(int(gpid.read_text()), signal.SIGKILL)  # a failed run must not leave it


def test_clean_up_after_a_killed_runner_spares_another_databases_job_of_the_same_name(
    tmp_path: Path,
) -> None:
    # Two schedctl databases on one host (two users, or a personal and a system install) both
    # have a job `writer` whose first run is run 1. The clean-up after `mine`'s runner was killed
    # stopped every process marked SCHEDCTL_JOB=writer SCHEDCTL_RUN_ID=1: `theirs`, live and run by
    # a live runner, too (seen in CI when two copies of the killed-runner test overlapped).
    env = {"SCHEDCTL_RUN_CGROUP": "off"}  # the environment scan is all that finds escapees
    for side in ("mine", "theirs"):
        (tmp_path / side).mkdir()
    mine, theirs = make_cli(tmp_path / "mine", **env), make_cli(tmp_path / "theirs", **env)
    mine_env, theirs_env = cli_env(tmp_path / "mine", **env), cli_env(tmp_path / "theirs", **env)
    gpid, their_pid = tmp_path / "gpid", tmp_path / "their_pid"
    escape = (
        f"setsid sh -c 'echo $$ > {gpid}.tmp; mv {gpid}.tmp {gpid}; exec sleep 60' "
        "</dev/null >/dev/null 2>&1 & sleep 60"
    )
    ok(mine("add", "writer", "-s", "@daily", "--shell", "--", f"[ -e {gpid} ] || {{ {escape}; }}"))
    ok(
        theirs(
            "add",
            "writer",
            "-s",
            "@daily",
            "--shell",
            "--",
            f"echo $$ > {their_pid}; exec sleep 60",
        )
    )
    first = start_run(mine_env, "writer", "--now")
    other = None
    try:
        deadline = time.monotonic() + 20
        while not gpid.exists():
            assert time.monotonic() < deadline, "the first run never started its escapee"
            time.sleep(0.05)
        # Started after `mine`'s runner, as the scan requires of what it stops.
        other = start_run(theirs_env, "writer", "--now")
        while not their_pid.exists():
            assert time.monotonic() < deadline, "the other database's run never started"
            time.sleep(0.05)
        theirs_job = int(their_pid.read_text())
        first.kill()
        first.wait(timeout=10)
        escapee = int(gpid.read_text())
        assert alive(escapee)

        second = subprocess.run(
            [str(BIN), "run", "writer", "--now"],
            check=False, env=mine_env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert second.returncode == 0, second.stderr
        assert "event=run.leftovers_stopped" in second.stderr
        assert not alive(escapee)
        assert alive(theirs_job), "another database's job was stopped"
        assert other.poll() is None
    finally:
        for path in (gpid, their_pid):
            if path.exists() and alive(int(path.read_text())):
                os.kill(int(path.read_text()), signal.SIGKILL)
        if other is not None:
            other.wait(timeout=30)


def test_concurrent_runs_of_an_allow_job_share_a_killed_runners_clean_up(
    pg_url: str, tmp_path: Path
) -> None:
    # A runner of an `allow` job is killed, leaving its record. The next runs, started together,
    # all find that record: one stops what it lists and removes it, the others must neither
    # fail on the file being gone nor start before it is dealt with.
    env = cli_env(tmp_path, SCHEDCTL_DATABASE_URL=pg_url, SCHEDCTL_HOST="h-allow")
    cli = make_cli(tmp_path, **{k: v for k, v in env.items() if k.startswith("SCHEDCTL_")})
    ok(cli("db", "upgrade"))
    marks, long = tmp_path / "marks", tmp_path / "long"
    marks.mkdir()
    # The first run leaves a process that outlives its killed runner until it is stopped,
    # however long the racers take to start; the racers' own jobs are short.
    job = (
        f"touch {marks}/$SCHEDCTL_RUN_ID; if mkdir {long} 2>/dev/null; then "
        f"sleep 120 & echo $! > {long}/pid.tmp; mv {long}/pid.tmp {long}/pid; wait; "
        "else sleep 3; fi"
    )
    ok(cli("add", "al", "-s", "0 0 1 1 *", "--concurrency", "allow", "--shell", "--", job))
    first = start_run(env, "al", "--now")
    deadline = time.monotonic() + 30
    while not (long / "pid").exists():
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the first run never started"
        time.sleep(0.05)
    leftover = int((long / "pid").read_text())
    try:
        first.kill()
        first.wait(timeout=10)
        procs = tmp_path / "data" / "procs"
        assert len(list(procs.glob("*.json"))) == 1  # what the killed runner left
        assert alive(leftover)

        racers = [start_run(env, "al", "--now") for _ in range(10)]
        results = [(p.communicate(timeout=120)[1], p.returncode)[::-1] for p in racers]
        assert [rc for rc, _ in results] == [0] * 10, [err for rc, err in results if rc]
        assert not any("Traceback" in err or "internal error" in err for _, err in results)
        assert len(list(marks.iterdir())) == 11  # every job ran
        assert sum("event=run.leftovers_stopped" in err for _, err in results) == 1
        assert not alive(leftover)
        assert list(procs.iterdir()) == []  # the leftover record is gone, and so are theirs
    finally:
        if alive(leftover):
            os.kill(leftover, signal.SIGKILL)  # a failed run must not leave it
    statuses = sorted(r["status"] for r in run_rows(pg_url, "al"))
    assert statuses == ["lost"] + ["succeeded"] * 10


def test_stored_tail_is_bounded_in_bytes(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    cli, url, _ = backend
    data = tmp_path / "random.bin"
    data.write_bytes(random.Random(5).randbytes(2_000_000))
    ok(cli("add", "noise", "-s", "@daily", "--output-limit", "1048576", "--", "cat", str(data)))
    done = subprocess.run(
        [str(BIN), "run", "noise", "--now"],
        check=False,
        env=backend[2],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == data.read_bytes()  # passed through byte for byte
    (row,) = run_rows(url, "noise")
    stored = row["output_tail"].encode()
    assert 1048576 - 4 < len(stored) <= 1048576  # U+FFFD takes 3 bytes: it was 1.5 MB
    assert (row["output_bytes"], row["output_truncated"]) == (2_000_000, True)


def test_a_retry_after_the_session_was_lost_never_runs_without_the_lock(tmp_path: Path) -> None:
    # The job ends before any heartbeat (60 s apart) can notice that its session was killed:
    # only recording the result finds out, on a new session that does not hold the lock.
    count = tmp_path / "count"
    job = ("flaky", "-s", "@daily", "--retries", "2", "--retry-delay", "1s", "--shell", "--",
           f"echo ran >> {count}; sleep 2; exit 1")  # fmt: skip
    with own_server(tmp_path, *job, SCHEDCTL_HEARTBEAT="60") as (server, url, _, env):
        with server.admin() as admin:
            # The server notes, at DEBUG1, every session that ends without being closed.
            admin.execute("ALTER SYSTEM SET log_min_messages = debug1")
            admin.execute("ALTER SYSTEM SET log_line_prefix = '[%a] '")
            admin.execute("SELECT pg_reload_conf()")
            runner = start_run(env, "flaky", "--now")
            deadline = time.monotonic() + 20
            while not count.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = 'schedctl run'"
            ).fetchone()
            assert killed == (1,)
            assert runner.wait(timeout=60) == 1
            err = runner.stderr.read() if runner.stderr else ""
            admin.execute("ALTER SYSTEM RESET ALL")
            admin.execute("SELECT pg_reload_conf()")
        assert count.read_text() == "ran\n", err  # no attempt ran without the lock
        assert "event=run.retry.abandoned" in err and 'reason="session lost"' in err, err
        (row,) = run_rows(url, "flaky")
        assert (row["attempt"], row["status"], row["exit_code"]) == (1, "failed", 1)
        # Both the run's sessions ended closed: the killed one, and the one that recorded.
        log = (server.root / "log").read_text()
        assert "[schedctl run] " in log
        unclosed = [ln for ln in log.splitlines() if "unexpected EOF" in ln and "schedctl" in ln]
        assert unclosed == [], unclosed


def test_a_missing_working_directory_is_named_not_the_command(tmp_path: Path) -> None:
    cli = make_cli(tmp_path)
    gone = tmp_path / "gone" / "dir"
    not_dir = tmp_path / "plain-file"
    not_dir.write_text("")
    ok(cli("add", "wd", "-s", "@daily", "--workdir", str(gone), "--", "/bin/true"))
    ok(cli("add", "nd", "-s", "@daily", "--workdir", str(not_dir), "--", "/bin/true"))
    ok(cli("add", "cmd", "-s", "@daily", "--workdir", str(tmp_path), "--", "/nonexistent/bin"))
    for job, code, says in (
        ("wd", 126, f"cannot enter the working directory {gone} to run /bin/true: No such file"),
        ("nd", 126, f"cannot enter the working directory {not_dir} to run /bin/true: Not a dir"),
        # The command itself missing, in a directory that is there: as before.
        ("cmd", 127, "cannot execute /nonexistent/bin: No such file or directory"),
    ):
        assert cli("run", job, "--now").rc == code, job
        (run,) = json.loads(ok(cli("history", job, "--json")).out)
        assert (run["status"], run["exit_code"]) == ("failed", code)
        assert says in ok(cli("logs", str(run["id"]))).out, job
