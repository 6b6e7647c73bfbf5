"""`schedctl daemon` through the installed binary, against real PostgreSQL servers."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cli_helpers import BIN, cli_env, make_cli, ok, run_rows
from pgserver import destroy, free_port, start_server


def health(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:  # not listening (yet)
        return 0


def start_daemon(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as f:
        return subprocess.Popen([str(BIN), "daemon", *args], env=env, stdout=f, stderr=f)


def wait_for(what: str, check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=90)


@pytest.mark.slow
def test_two_replicas_run_each_minute_slot_exactly_once(tmp_path: Path, pg_url: str) -> None:
    """Three minutes, two daemons, one database: one run per slot, no slot missed."""
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url)
    ok(cli("db", "upgrade"))
    ok(cli("add", "tick", "-s", "* * * * *", "--", "true"))
    ok(cli("add", "broken", "-s", "* * * * *", "--", "false"))
    started = datetime.now(UTC)
    port = free_port()
    procs = []
    logs = []
    for i in (1, 2):
        (tmp_path / f"r{i}").mkdir()
        env = cli_env(tmp_path / f"r{i}", SCHEDCTL_DATABASE_URL=pg_url, SCHEDCTL_HOST=f"replica{i}")
        logs.append(tmp_path / f"daemon{i}.log")
        extra = ["--health-port", str(port)] if i == 1 else []
        procs.append(start_daemon(env, logs[-1], "--refresh", "2s", *extra))
    try:
        wait_for("/health", lambda: health(port) == 200, 20)
        time.sleep(60)
        # A job defined while the daemons run is picked up without a restart.
        ok(cli("add", "added-later", "-s", "* * * * *", "--", "true"))
        added = datetime.now(UTC)
        time.sleep(122)
        assert health(port) == 200  # alive after three minutes of a failing job
        # Stop just after a slot, while the sleeping job of that slot still runs.
        ok(cli("add", "sleepy", "-s", "* * * * *", "--", "sleep", "8"))
        wait_for(
            "a running sleepy",
            lambda: any(r["status"] == "running" for r in run_rows(pg_url, "sleepy")),
            75,
        )
        codes = [stop(p) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    ended = datetime.now(UTC)
    assert codes == [0, 0]
    text = [log.read_text() for log in logs]
    for t in text:
        assert t.count("event=daemon.started") == 1
        assert t.count("event=job.registered job=tick ") == 1
        assert "event=job.registered job=added-later " in t
        assert "event=daemon.stopped" in t
        assert "Traceback" not in t
    # Both replicas fired the slots; the claim let one of them run each.
    assert all(t.count("event=job.fired job=tick ") >= 3 for t in text)
    assert "event=run.skipped.duplicate job=tick" in "".join(text)

    def slots(job: str, after: datetime) -> list[datetime]:
        first = (after + timedelta(minutes=1)).replace(second=0, microsecond=0)
        out = []
        while first <= ended - timedelta(seconds=61):
            out.append(first)
            first += timedelta(minutes=1)
        return out

    for job, since in (("tick", started), ("broken", started), ("added-later", added)):
        rows = [r for r in run_rows(pg_url, job) if r["attempt"] == 1]
        want = slots(job, since)
        assert len(want) >= (3 if job != "added-later" else 1)
        got = [r["slot"].astimezone(UTC) for r in rows]
        for s in want:
            assert got.count(s) == 1, (job, s, got)
        assert all(r["trigger"] == "daemon" for r in rows)
        missed = json.loads(ok(cli("history", job, "--missed", "--since", "10m", "--json")).out)
        assert missed == [], (job, missed)
    assert {r["status"] for r in run_rows(pg_url, "broken")} == {"failed"}
    # SIGTERM waited for the running job instead of killing it.
    assert [r["status"] for r in run_rows(pg_url, "sleepy")][-1] == "succeeded"
    assert {r["host"] for r in run_rows(pg_url, "tick")} <= {"replica1", "replica2"}


def test_health_turns_503_when_the_database_goes_away(tmp_path: Path) -> None:
    server = start_server()
    try:
        url = server.url(server.create_database())
        cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url)
        ok(cli("db", "upgrade"))
        ok(cli("add", "hourly", "-s", "0 * * * *", "--", "true"))
        port = free_port()
        env = cli_env(tmp_path, SCHEDCTL_DATABASE_URL=url)
        proc = start_daemon(env, tmp_path / "d.log", "--refresh", "1s", "--health-port", str(port))
        try:
            wait_for("/health 200", lambda: health(port) == 200, 20)
            server.stop()
            t0 = time.monotonic()
            wait_for("/health 503", lambda: health(port) == 503, 40)
            assert time.monotonic() - t0 >= 10  # a blip is tolerated before the probe fails
            assert proc.poll() is None  # the loop itself stays up and keeps retrying
            server.start()
            wait_for("/health 200 again", lambda: health(port) == 200, 30)
            assert stop(proc) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
        log = (tmp_path / "d.log").read_text()
        assert "event=daemon.refresh_failed" in log and "Traceback" not in log
    finally:
        destroy(server)


def test_daemon_rejects_a_port_in_use(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        port = s.getsockname()[1]
        res = make_cli(tmp_path)("daemon", "--health-port", str(port), timeout=30)
    assert res.rc == 78 and res.err.startswith("schedctl: error: cannot serve /health on port")
    assert len(res.err.splitlines()) == 1


@pytest.mark.parametrize("bad", ["0s", "soon"])
def test_daemon_rejects_a_bad_refresh(tmp_path: Path, bad: str) -> None:
    res = make_cli(tmp_path)("daemon", "--refresh", bad, timeout=30)
    assert res.rc == 2 and len(res.err.splitlines()) == 1 and "refresh" in res.err
