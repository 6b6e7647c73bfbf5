"""The slot a firing serves is named by the instant it fired, however long the database kept it.

Against the installed binary and real PostgreSQL servers: a server full of connections, a
server whose commits wait for a synchronous standby that does not exist, a host that takes
TCP connections and never answers, and a daemon started seconds before a slot.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from cli_helpers import BIN, cli_env, make_cli, ok, one_line_error, run_rows
from pgserver import PRIMARY_SETTINGS, destroy, start_server
from storm import storm_server_user


def wait_for_second(low: float, high: float) -> datetime:
    """Sleep until the wall clock's second within the minute lies in [low, high]; return it."""
    while True:
        now = datetime.now(UTC)
        second = now.second + now.microsecond / 1e6
        if low <= second <= high:
            return now
        time.sleep(min(0.2, (low - second) % 60))


def minute_of(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def test_a_firing_that_waits_for_a_full_server_still_serves_its_own_slot(tmp_path: Path) -> None:
    # Five connections, three kept for the superuser: an ordinary role gets two.
    server = start_server(settings={"max_connections": "5"})
    try:
        url = storm_server_user(server)
        cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url, SCHEDCTL_HOST="full")
        ok(cli("db", "upgrade"))
        marks = tmp_path / "marks"
        ok(cli("add", "m1", "-s", "* * * * *", "--shell", "--", f"echo $SCHEDCTL_SLOT >> {marks}"))
        fired = wait_for_second(44, 48)
        holders = [psycopg.connect(url, autocommit=True) for _ in range(2)]
        # Freed after the next minute has begun: the run waits across the minute boundary.
        release = minute_of(fired) + timedelta(minutes=1, seconds=4)

        def free() -> None:
            for h in holders:
                h.close()

        threading.Timer((release - datetime.now(UTC)).total_seconds(), free).start()
        ran = cli("run", "m1", "--trigger", "timer", timeout=90)
        assert datetime.now(UTC) >= release
        assert ran.rc == 0, ran.err
        own = minute_of(fired)
        rows = run_rows(url, "m1")
        assert [r["slot"] for r in rows] == [own], (rows, ran.err)
        assert datetime.fromisoformat(marks.read_text().strip()) == own
        assert abs(rows[0]["clock_skew_seconds"]) < 2, rows
        assert "run.clock_skew" not in ran.err, ran.err
    finally:
        destroy(server)


def test_the_connect_budget_is_a_deadline_against_a_host_that_never_answers(
    tmp_path: Path,
) -> None:
    # Takes TCP connections (the kernel completes them) and never says a word.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    port = silent.getsockname()[1]
    try:
        url = f"postgresql://nobody:pw@127.0.0.1:{port}/sched"
        cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url, SCHEDCTL_CONNECT_RETRY="9")
        started = time.monotonic()
        res = cli("run", "j", "--now", timeout=60)
        took = time.monotonic() - started
        one_line_error(res, 75, "timeout expired")
        # At least one whole attempt, and never past the budget: the last attempt included.
        assert 3.5 <= took <= 9.6, took
    finally:
        silent.close()


@pytest.mark.slow
def test_a_run_held_up_by_commits_measures_no_skew_and_serves_its_slot_while_it_can(
    tmp_path: Path,
) -> None:
    # The suite's servers commit asynchronously; this one waits for its standbys.
    server = start_server(settings={**PRIMARY_SETTINGS, "synchronous_commit": "on"})
    try:
        url = server.url(server.create_database())
        cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url, SCHEDCTL_HOST="held")
        ok(cli("db", "upgrade"))
        for job in ("early", "late"):
            ok(cli("add", job, "-s", "* * * * *", "--shell", "--", "echo $SCHEDCTL_SLOT"))
        with server.admin() as admin:
            # A synchronous standby that does not exist: every commit waits (SyncRep).
            admin.execute("ALTER SYSTEM SET synchronous_standby_names = 'nosuch'")
            admin.execute("SELECT pg_reload_conf()")
        runs: dict[str, subprocess.Popen[str]] = {}
        fired: dict[str, datetime] = {}

        def fire(job: str) -> None:
            # Hosts of their own: each waits on its own commit, not on the other's row.
            env = cli_env(tmp_path, SCHEDCTL_DATABASE_URL=url, SCHEDCTL_HOST=f"held-{job}")
            fired[job] = datetime.now(UTC)
            runs[job] = subprocess.Popen(
                [str(BIN), "run", job, "--trigger", "timer"], env=env, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip

        # `early` fires 20 s before a minute, `late` 2 s into it; both wait until 38 s into
        # that minute: `late` 36 s (more than the tolerance of 30 s, so a skew measured
        # against its start would be a false alarm), `early` until its slot has left the
        # claim window (a minute and a tolerance after it).
        wait_for_second(39, 41)
        fire("early")
        wait_for_second(2, 3)
        fire("late")
        time.sleep(36)
        with server.admin() as admin:
            waiting = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
            ).fetchone()
            assert waiting is not None and waiting[0] == 2, waiting
            admin.execute("ALTER SYSTEM RESET synchronous_standby_names")
            admin.execute("SELECT pg_reload_conf()")
        out = {job: p.communicate(timeout=60) for job, p in runs.items()}
        for job, p in runs.items():
            assert p.returncode == 0, out[job][1]
            assert "run.clock_skew" not in out[job][1], out[job][1]
        late = run_rows(url, "late")
        assert [r["slot"] for r in late] == [minute_of(fired["late"])], (late, out["late"][1])
        assert abs(late[0]["clock_skew_seconds"]) < 2, late
        assert late[0]["started_at"] - minute_of(fired["late"]) >= timedelta(seconds=36)
        # `early` serves the latest slot: its own left the window while it waited.
        early = run_rows(url, "early")
        assert [r["slot"] for r in early] == [minute_of(fired["late"])], (early, out["early"][1])
        assert abs(early[0]["clock_skew_seconds"]) < 2, early
        assert "event=run.held_up" in out["early"][1], out["early"][1]
        said = re.search(r"event=run\.held_up .*fired_for=(\S+)", out["early"][1])
        assert said is not None, out["early"][1]
        assert datetime.fromisoformat(said.group(1)) == minute_of(fired["early"]), said.group(0)
    finally:
        destroy(server)


def test_a_daemon_started_seconds_before_a_slot_does_not_run_it_early(
    tmp_path: Path, pg_url: str
) -> None:
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url, SCHEDCTL_HOST="d4")
    ok(cli("db", "upgrade"))
    ok(cli("add", "d1", "-s", "* * * * *", "--", "true"))
    env = cli_env(
        tmp_path,
        SCHEDCTL_DATABASE_URL=pg_url,
        SCHEDCTL_HOST="d4",
        PATH=f"{BIN.parent}:/usr/bin:/bin",
    )
    # Within the seconds before a slot that a firing's clock may read early.
    started = wait_for_second(56.0, 57.5)
    slot = minute_of(started) + timedelta(minutes=1)
    log = tmp_path / "daemon.log"
    with log.open("wb") as f:
        proc = subprocess.Popen(
            [str(BIN), "daemon", "--refresh", "2s"], env=env, stdout=f, stderr=f
        )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(
            r["started_at"] for r in run_rows(pg_url, "d1")
        ):
            time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=90)
    rows = run_rows(pg_url, "d1")
    text = log.read_text()
    assert rows, text
    for row in rows:
        assert row["slot"] == slot, (rows, text)
        # Started by the database's clock no earlier than its slot.
        assert row["started_at"] >= row["slot"], (rows, text)
        assert row["claimed_at"] >= row["slot"], (rows, text)
    assert "reason=catch-up" not in text, text
