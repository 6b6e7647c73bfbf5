"""A PostgreSQL failover under running hosts: the primary stops, its standby is promoted.

Real servers (tests/pgserver.py: a primary and a streaming standby made by `pg_basebackup -R`),
real `schedctl run` processes as two hosts, a job marking each run in a file of its own.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cli_helpers import BIN, alive, cli_env, make_cli, ok
from pgserver import PgServer, destroy, promote, start_pair, wait_replayed

pytestmark = pytest.mark.slow

HEARTBEAT = "1"
# Commits wait until the standby has the WAL: a claim the primary confirmed is on the standby.
SYNCHRONOUS = {"synchronous_standby_names": "walreceiver", "synchronous_commit": "on"}
FINAL = {"succeeded", "lock_lost"}
TICK = 1.0  # seconds between two firings of the stream
BEFORE, DOWN, AFTER = 4.0, 2.0, 10.0  # stream before the stop, primary down, after promotion


@dataclass
class Firing:
    job: str
    host: str
    proc: subprocess.Popen[str]
    at: float


@dataclass
class Watch:
    """What the new primary shows, polled while the failover happens."""

    lock_lost_at: dict[int, float] = field(default_factory=dict)
    error: str = ""


@pytest.fixture
def pair() -> Iterator[tuple[PgServer, PgServer]]:
    primary, standby = start_pair(primary_settings=SYNCHRONOUS)
    try:
        yield primary, standby
    finally:
        destroy(standby)
        destroy(primary)


def _pair_url(primary: PgServer, standby: PgServer, dbname: str) -> str:
    """Return a URL naming the standby first: libpq must find the writable one itself."""
    return (
        f"postgresql://{primary.user}:{primary.password}@127.0.0.1:{standby.port},"
        f"127.0.0.1:{primary.port}/{dbname}"
    )


def _rows(server: PgServer, dbname: str) -> list[dict[str, Any]]:
    with psycopg.connect(server.url(dbname), autocommit=True) as conn:
        cur = conn.execute(
            "SELECT id, job_name, slot, status, host, claimed_at, started_at, finished_at"
            " FROM runs ORDER BY id"
        )
        names = [d.name for d in cur.description or ()]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _marks(where: Path) -> list[tuple[str, str, int, int]]:
    """Return (job, slot, run id, pid) of every run the jobs marked."""
    found = []
    for path in where.iterdir():
        job, slot, run_id, _host, _pid = path.name.split("@")
        found.append((job, slot, int(run_id), int(path.read_text().split()[0])))
    return found


def _watch(server: PgServer, dbname: str, watch: Watch, stop: threading.Event) -> None:
    """Note when each lock_lost result reaches `server` (the standby, once promoted)."""
    while not stop.is_set():
        try:
            with psycopg.connect(server.url(dbname), autocommit=True, connect_timeout=2) as conn:
                while not stop.is_set():
                    ids = conn.execute("SELECT id FROM runs WHERE status = 'lock_lost'").fetchall()
                    for (run_id,) in ids:
                        watch.lock_lost_at.setdefault(run_id, time.time())
                    time.sleep(0.1)
        except psycopg.Error as e:
            watch.error = str(e)
            time.sleep(0.1)


def test_a_failover_fences_runs_in_flight_and_runs_every_slot_once(
    pair: tuple[PgServer, PgServer], tmp_path: Path
) -> None:
    """Stop the primary (immediate) under two hosts running jobs, promote the standby.

    Two long runs are in flight; a stream of short jobs fires on both hosts every second
    throughout. Then: the long runs are stopped and recorded lock_lost on the new primary,
    new slots run there, every slot ran once by the jobs' own marks, and every run that
    started has its final result on the new primary.
    """
    primary, standby = pair
    dbname = primary.create_database()
    # The standby first, as a fleet's URL reads after an earlier failover: the order is no
    # preference, and nothing but the servers' own state says which one takes writes.
    url = _pair_url(primary, standby, dbname)
    marks = tmp_path / "marks"
    marks.mkdir()
    setup = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url)
    ok(setup("db", "upgrade"))
    # One file per process that ran a job (two runs of a slot never share a name, even if a
    # run id were handed out twice).
    mark = f'echo $$ > "{marks}/$SCHEDCTL_JOB@$SCHEDCTL_SLOT@$SCHEDCTL_RUN_ID@$SCHEDCTL_HOST@$$"'
    for name in ("long-a", "long-b"):
        ok(setup("add", name, "-s", "* * * * *", "--shell", "--", f"{mark}; exec sleep 600"))
    ticks = int((BEFORE + DOWN + AFTER) / TICK)
    stream = [f"s{i:03d}" for i in range(ticks)]
    for name in stream:
        ok(setup("add", name, "-s", "* * * * *", "--shell", "--", f"{mark}; sleep 0.3"))

    for host in ("a", "b"):
        (tmp_path / host).mkdir()
    envs = {
        host: cli_env(
            tmp_path / host,
            SCHEDCTL_DATABASE_URL=url,
            SCHEDCTL_HOST=f"fo-{host}",
            SCHEDCTL_HEARTBEAT=HEARTBEAT,
        )
        for host in ("a", "b")
    }

    def fire(job: str, host: str) -> Firing:
        proc = subprocess.Popen(
            [str(BIN), "run", job], env=envs[host], stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        return Firing(job, host, proc, time.time())

    longs = [fire("long-a", "a"), fire("long-b", "b")]
    deadline = time.monotonic() + 60
    while len(list(marks.iterdir())) < 2:
        assert time.monotonic() < deadline, [f.proc.poll() for f in longs]
        time.sleep(0.05)

    firings: list[Firing] = []
    started = time.time()

    def run_stream() -> None:
        for i, job in enumerate(stream):
            time.sleep(max(0.0, started + i * TICK - time.time()))
            firings.extend([fire(job, "a"), fire(job, "b")])

    streamer = threading.Thread(target=run_stream)
    streamer.start()
    watch, stop_watch = Watch(), threading.Event()
    watcher = threading.Thread(target=_watch, args=(standby, dbname, watch, stop_watch))
    watcher.start()
    try:
        time.sleep(max(0.0, started + BEFORE - time.time()))
        t_stop = time.time()
        primary.stop("immediate")
        time.sleep(max(0.0, t_stop + DOWN - time.time()))
        t_promote = time.time()
        promote(standby)
        t_promoted = time.time()
        streamer.join(timeout=120)
        for f in [*longs, *firings]:
            f.proc.wait(timeout=120)
    finally:
        stop_watch.set()
        watcher.join(timeout=30)
        for f in [*longs, *firings]:
            if f.proc.poll() is None:
                f.proc.kill()

    # Whatever is still spooled is flushed by the next command on its host.
    for host, env in envs.items():
        ok(make_cli(tmp_path / host, **{k: env[k] for k in ("SCHEDCTL_DATABASE_URL",)})("list"))
    rows = _rows(standby, dbname)
    by_id = {r["id"]: r for r in rows}
    done = _marks(marks)

    # No slot ran twice: counted by the jobs' own marks, not only by rows.
    twice = [k for k, n in Counter((job, slot) for job, slot, _, _ in done).items() if n > 1]
    assert not twice, twice
    # No result lost: every run that started has its final result on the new primary.
    for job, _slot, run_id, _pid in done:
        row = by_id.get(run_id)
        assert row is not None and row["job_name"] == job, (job, run_id, row)
        assert row["status"] in FINAL, row
        assert row["started_at"] is not None
    assert not [r for r in rows if r["status"] == "running"], rows
    for host in envs:
        spool = tmp_path / host / "data" / "spool"
        left = sorted(p.name for p in spool.rglob("*") if p.is_file()) if spool.exists() else []
        assert not left, (host, left)
    # The runs in flight were fenced: stopped, lock_lost, recorded on the new primary.
    long_rows = [r for r in rows if r["job_name"] in ("long-a", "long-b")]
    assert sorted(r["status"] for r in long_rows) == ["lock_lost", "lock_lost"], long_rows
    for job, _slot, _run_id, pid in done:
        if job.startswith("long-"):
            assert not alive(pid), job
    long_logs = [f.proc.stderr.read() if f.proc.stderr else "" for f in longs]
    for f, log in zip(longs, long_logs, strict=True):
        assert f.proc.returncode != 0 and "event=run.lock_lost" in log, log
    spooled = sum("event=run.spooled" in log for log in long_logs)
    # Every stream firing either ran its slot, found it taken, or failed closed (exit 75).
    codes = Counter(f.proc.returncode for f in firings)
    assert set(codes) <= {0, 75}, (codes, [f.proc.stderr.read() for f in firings
                                           if f.proc.returncode not in (0, 75) and f.proc.stderr])  # fmt: skip
    # New slots ran on the new primary.
    stop_at = datetime.fromtimestamp(t_stop, UTC)
    after = [r for r in rows if r["claimed_at"] > stop_at]
    before = [r for r in rows if r["claimed_at"] <= stop_at]
    assert len([r for r in after if r["status"] == "succeeded"]) >= 3, after
    assert before and len(done) == len([r for r in rows if r["started_at"] is not None])

    first_claim = min(r["claimed_at"] for r in after).timestamp()
    last_claim = max(r["claimed_at"] for r in before).timestamp()
    stopped = [r for r in rows if r["status"] == "lock_lost"]
    flushed = max(watch.lock_lost_at.get(r["id"], time.time()) for r in stopped)
    lines = [
        "failover figures (seconds from the primary's immediate stop):",
        f"  promotion started {t_promote - t_stop:.2f}, standby writable {t_promoted - t_stop:.2f}",
        f"  last claim on the old primary {last_claim - t_stop:.2f}, first claim on the new "
        f"primary {first_claim - t_stop:.2f} (no claims for {first_claim - last_claim:.2f} s; "
        f"{first_claim - t_promoted:.2f} s after the promotion completed)",
        f"  runs stopped (lock_lost) {len(stopped)}, their jobs ended by "
        f"{max(r['finished_at'] for r in stopped).timestamp() - t_stop:.2f}, all their results "
        f"on the new primary at {flushed - t_stop:.2f} (the long runs' spooled: {spooled} of 2)",
        f"  stream firings {len(firings)}: exit codes {dict(sorted(codes.items()))}; slots run "
        f"{len(done) - 2}, on the new primary {len(after)}",
    ]
    report = "\n".join(lines)
    print(report)
    out = os.environ.get("SCHEDCTL_TEST_FAILOVER_OUT")
    if out:
        Path(out).write_text(report + "\n")


@pytest.mark.parametrize("replication", ["asynchronous", "synchronous"])
def test_a_claim_the_standby_never_received(tmp_path: Path, replication: str) -> None:
    """The limit of asynchronous replication, and what synchronous replication changes.

    The standby stops receiving WAL; host a claims the slot on the primary; the primary stops
    and the standby is promoted; host b fires the same slot. Asynchronously, a's claim
    committed on the primary alone: the new primary has no row, so b claims the slot again
    and it runs twice. Synchronously, a's claim waits for the standby and never commits as far
    as a knows: a runs nothing (exit 75) and b runs the slot once.
    """
    synchronous = replication == "synchronous"
    primary, standby = start_pair(primary_settings=SYNCHRONOUS if synchronous else None)
    try:
        dbname = primary.create_database()
        url = _pair_url(primary, standby, dbname)
        marks = tmp_path / "marks"
        marks.mkdir()
        setup = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url)
        ok(setup("db", "upgrade"))
        mark = (
            f'echo $$ > "{marks}/$SCHEDCTL_JOB@$SCHEDCTL_SLOT@$SCHEDCTL_RUN_ID@$SCHEDCTL_HOST@$$"'
        )
        ok(setup("add", "cut", "-s", "* * * * *", "--shell", "--", f"{mark}; exec sleep $NAP"))
        wait_replayed(primary, standby)
        with standby.admin() as conn:  # cut the standby off the primary's WAL
            conn.execute("ALTER SYSTEM SET primary_conninfo = ''")
            conn.execute("SELECT pg_reload_conf()")
        with primary.admin() as conn:
            for _ in range(100):
                row = conn.execute("SELECT count(*) FROM pg_stat_replication").fetchone()
                if row and row[0] == 0:
                    break
                time.sleep(0.1)
            else:
                raise AssertionError("the standby still replicates")

        def env(host: str, nap: str, heartbeat: str) -> dict[str, str]:
            (tmp_path / host).mkdir(exist_ok=True)
            return cli_env(tmp_path / host, SCHEDCTL_DATABASE_URL=url, SCHEDCTL_HOST=f"cut-{host}",
                           SCHEDCTL_HEARTBEAT=heartbeat, NAP=nap)  # fmt: skip

        # Host a notices the loss at its next heartbeat, by when b has claimed the slot again
        # (and, the run id sequence having replayed no further than a's claim, got a's id).
        first = subprocess.Popen([str(BIN), "run", "cut"], env=env("a", "600", "10"),
                                 stderr=subprocess.PIPE, text=True)  # fmt: skip
        second: subprocess.Popen[str] | None = None
        try:
            if synchronous:
                time.sleep(3)  # long enough to start, were its claim not waiting for the standby
                assert first.poll() is None and not any(marks.iterdir())
            else:
                deadline = time.monotonic() + 30
                while not any(marks.iterdir()):
                    assert time.monotonic() < deadline, "host a's run never started"
                    time.sleep(0.05)
            primary.stop("immediate")
            promote(standby)
            second = subprocess.Popen([str(BIN), "run", "cut"], env=env("b", "1" if synchronous else "25", HEARTBEAT),
                                      stderr=subprocess.PIPE, text=True)  # fmt: skip
            first.wait(timeout=60)
            # Whatever host a did with its result, host b's run is still running, and says so.
            mid = _rows(standby, dbname)
            assert second.wait(timeout=60) == 0, second.stderr.read() if second.stderr else ""
        finally:
            for proc in (first, second):
                if proc is not None and proc.poll() is None:
                    proc.kill()
        ok(make_cli(tmp_path / "a", SCHEDCTL_DATABASE_URL=url)("list"))  # flushes a's spool
        ran = sorted(p.name.split("@")[3] for p in marks.iterdir())
        rows = _rows(standby, dbname)
        first_log = first.stderr.read() if first.stderr else ""
        if synchronous:
            assert first.returncode == 75, first_log
            assert ran == ["cut-b"]
        else:
            # Documented in docs/high-availability.md: the slot ran on both hosts.
            assert ran == ["cut-a", "cut-b"]
            assert first.returncode != 0
            # But a's result did not finish b's run, which got a's run id again: it is kept
            # aside on host a, saying why.
            assert [(r["id"], r["host"], r["status"]) for r in mid] == [(1, "cut-b", "running")]
            bad = list((tmp_path / "a" / "data" / "spool" / "bad").glob("run-1.json*"))
            assert len(bad) == 1, first_log
            assert '"host": "cut-a"' in bad[0].read_text()
        assert [(r["host"], r["status"]) for r in rows] == [("cut-b", "succeeded")]
    finally:
        destroy(standby)
        destroy(primary)


def test_a_result_whose_row_the_failover_lost_is_kept_on_the_host(tmp_path: Path) -> None:
    """Asynchronous replication lost the claim; no other run took its id: the result is kept.

    The runner notices the lost session after the promotion, reconnects to the new primary and
    finds no row for its run. It keeps the result in its spool, which the next command sets
    aside in spool/bad/ with a warning, instead of taking the job for removed and dropping it.
    """
    primary, standby = start_pair()
    try:
        dbname = primary.create_database()
        url = _pair_url(primary, standby, dbname)
        marks = tmp_path / "marks"
        marks.mkdir()
        setup = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url)
        ok(setup("db", "upgrade"))
        mark = f'echo $$ > "{marks}/$SCHEDCTL_JOB@$SCHEDCTL_SLOT@$SCHEDCTL_RUN_ID@$SCHEDCTL_HOST"'
        ok(setup("add", "kept", "-s", "* * * * *", "--shell", "--", f"{mark}; exec sleep 600"))
        wait_replayed(primary, standby)
        with standby.admin() as conn:
            conn.execute("ALTER SYSTEM SET primary_conninfo = ''")
            conn.execute("SELECT pg_reload_conf()")
        (tmp_path / "a").mkdir()
        # A heartbeat slower than the promotion: the runner's new session reaches the new primary.
        env = cli_env(tmp_path / "a", SCHEDCTL_DATABASE_URL=url, SCHEDCTL_HOST="kept-a",
                      SCHEDCTL_HEARTBEAT="8")  # fmt: skip
        runner = subprocess.Popen([str(BIN), "run", "kept"], env=env, stderr=subprocess.PIPE,
                                  text=True)  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while not any(marks.iterdir()):
                assert time.monotonic() < deadline and runner.poll() is None, "never started"
                time.sleep(0.05)
            primary.stop("immediate")
            promote(standby)
            runner.wait(timeout=60)
        finally:
            if runner.poll() is None:
                runner.kill()
        log = runner.stderr.read() if runner.stderr else ""
        assert "event=run.job_removed" not in log, log
        assert "event=run.spooled" in log, log
        flush = make_cli(tmp_path / "a", SCHEDCTL_DATABASE_URL=url)("list")
        assert flush.rc == 0 and "event=spool.bad_record" in flush.err, flush
        bad = list((tmp_path / "a" / "data" / "spool" / "bad").glob("run-1.json*"))
        assert len(bad) == 1 and '"status": "lock_lost"' in bad[0].read_text(), log
        assert _rows(standby, dbname) == []
    finally:
        destroy(standby)
        destroy(primary)
