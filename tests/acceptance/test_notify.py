"""Notifications through the installed binary, received by a real HTTP server on 127.0.0.1.

Failures, recoveries and missed slots each give one document; a receiver that refuses, fails
and hangs for a while loses nothing and gets nothing twice while three hosts deliver; mail
goes through a `sendmail` on PATH and `exec:` targets get the document on stdin.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import (
    BIN,
    Cli,
    cli_env,
    make_cli,
    ok,
    one_line_error,
    run_rows,
    store_as_older_versions_did,
)
from dbtools import engine_of

SECRET = "T0KEN-s3cr3t-path"
FIELDS = {"event", "job", "run_id", "slot", "status", "exit_code", "signal", "host",
          "duration_seconds", "attempt", "trigger", "started_at", "finished_at", "output_tail",
          "notification_id", "text"}  # fmt: skip


class Receiver:
    """A webhook receiver whose behaviour the test switches: ok, 500, hang, or down."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.lock = threading.Lock()
        self.delivered: list[dict[str, Any]] = []  # documents answered with 200
        self.seen: list[tuple[str, int]] = []  # (mode, notification id) of every POST
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.server: ThreadingHTTPServer | None = None
        self.port = 0
        self.up()

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                doc = json.loads(body)
                mode = receiver.mode
                with receiver.lock:
                    receiver.seen.append((mode, doc["notification_id"]))
                if mode == "hang":
                    time.sleep(3)  # past the client's timeout: it has given up by now
                    return
                if mode == "drip":  # a byte well within each timeout, for a long while
                    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"x" * 30:
                        try:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                        except OSError:
                            return
                        time.sleep(0.4)
                    return
                status = 500 if mode == "500" else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                if status == 200:
                    with receiver.lock:
                        receiver.delivered.append(doc)
                        receiver.paths.append(self.path)
                        receiver.headers.append(dict(self.headers))

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self) -> None:
        """Stop listening: connections are refused until `up()`."""
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()
        self.server = None

    @property
    def target(self) -> str:
        return f"webhook:http://127.0.0.1:{self.port}/hook/{SECRET}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        if r.server is not None:
            r.down()


MakeCli = Callable[..., Cli]


@pytest.fixture(params=["sqlite", "postgresql"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[MakeCli, str]:
    """Return a factory of clis (extra environment per call) on each backend, and the URL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'data' / 'schedctl.db'}"
        base: dict[str, str] = {}
    else:
        url = str(request.getfixturevalue("pg_url"))
        base = {"SCHEDCTL_DATABASE_URL": url}

    def factory(**extra: str) -> Cli:
        return make_cli(tmp_path, **base, **extra)

    ok(factory()("db", "upgrade"))
    return factory, url


def backdate(url: str, job: str, minutes: int = 10) -> None:
    """Make `job` look defined `minutes` ago, so the current slot is one it can claim."""
    past = datetime.now(UTC) - timedelta(minutes=minutes)
    store_as_older_versions_did(url, job, created_at=past, updated_at=past)


def move_back(url: str, job: str, by: timedelta) -> None:
    """Move `job`'s definition and its recorded changes `by` into the past."""
    import sqlalchemy as sa

    from schedctl.db.tables import job_changes, jobs

    with engine_of(url).begin() as conn:
        job_id, created, updated = conn.execute(
            sa.select(jobs.c.id, jobs.c.created_at, jobs.c.updated_at).where(jobs.c.name == job)
        ).one()
        conn.execute(sa.update(jobs).where(jobs.c.id == job_id)
                     .values(created_at=created - by, updated_at=updated - by))  # fmt: skip
        for change_id, at_ in conn.execute(
            sa.select(job_changes.c.id, job_changes.c.at).where(job_changes.c.job_id == job_id)
        ).all():
            conn.execute(sa.update(job_changes).where(job_changes.c.id == change_id)
                         .values(at=at_ - by))  # fmt: skip


def outbox(url: str) -> list[dict[str, Any]]:
    import sqlalchemy as sa

    from schedctl.db.tables import notifications

    with engine_of(url).connect() as conn:
        query = sa.select(notifications).order_by(notifications.c.id)
        return [dict(r) for r in conn.execute(query).mappings()]


def wait_for(check: Callable[[], bool], seconds: float = 10.0) -> None:
    end = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


# -- a failure, a recovery: one document each, with every field ------------------------------


def test_a_failure_and_a_recovery_each_give_one_post_with_every_field(
    setup: tuple[MakeCli, str], receiver: Receiver
) -> None:
    factory, url = setup
    cli = factory(SCHEDCTL_HOST="web-1")
    script = "seq -f 'backup: copied chunk %g of 300' 1 300; echo boom >&2; exit 3"
    ok(cli("add", "backup", "-s", "* * * * *", "--notify", receiver.target, "--shell", "--",
           script))  # fmt: skip
    backdate(url, "backup")
    failed = cli("run", "backup")
    assert failed.rc == 3, failed.err
    # Delivered by the run itself, before it exited.
    assert len(receiver.delivered) == 1
    doc = receiver.delivered[0]
    (run,) = run_rows(url, "backup")
    assert set(doc) == FIELDS
    assert doc["event"] == "failure" and doc["status"] == "failed"
    assert (doc["job"], doc["run_id"], doc["exit_code"], doc["signal"]) == ("backup", run["id"],
                                                                             3, None)  # fmt: skip
    assert doc["slot"] == run["slot"].isoformat() and doc["slot"] is not None
    assert (doc["host"], doc["attempt"], doc["trigger"]) == ("web-1", 1, "cron")
    assert doc["duration_seconds"] == pytest.approx(run["duration_seconds"])
    assert len(doc["output_tail"].encode()) == 4096 and doc["output_tail"].endswith("boom\n")
    assert doc["text"].startswith(f"schedctl: job backup failed on web-1 (slot {doc['slot']})")
    assert "exit code 3" in doc["text"] and "boom" in doc["text"]
    assert receiver.paths == [f"/hook/{SECRET}"]
    assert receiver.headers[0]["Content-Type"] == "application/json"
    if os.environ.get("SCHEDCTL_TEST_WEBHOOK_OUT"):  # a sample document, where asked for
        Path(os.environ["SCHEDCTL_TEST_WEBHOOK_OUT"]).write_text(json.dumps(doc, indent=2) + "\n")

    # The delivery step finds nothing more to send.
    ok(cli("notify"))
    assert len(receiver.delivered) == 1

    # The next success is a recovery; the one after it says nothing.
    ok(cli("edit", "backup", "--shell", "--", "echo fine"))
    ok(cli("run", "backup", "--now"))
    ok(cli("run", "backup", "--now"))
    ok(cli("notify"))
    assert [d["event"] for d in receiver.delivered] == ["failure", "recovery"]
    rec = receiver.delivered[1]
    assert set(rec) == FIELDS and (rec["status"], rec["exit_code"]) == ("succeeded", 0)
    assert rec["slot"] is None and rec["trigger"] == "manual"
    assert rec["text"].startswith("schedctl: job backup recovered")
    assert {n["state"] for n in outbox(url)} == {"sent"} and len(outbox(url)) == 2

    # The webhook URL is a secret: never shown by show, list, --json, or any log line.
    shown = [cli("show", "backup"), cli("show", "backup", "--json"), cli("list"),
             cli("list", "--json"), failed]  # fmt: skip
    for result in shown:
        assert SECRET not in result.out + result.err
    assert f"webhook:http://127.0.0.1:{receiver.port}/***" in shown[0].out
    assert json.loads(shown[1].out)["notify"] == [f"webhook:http://127.0.0.1:{receiver.port}/***"]


def test_the_run_never_waits_for_a_hanging_receiver_past_its_budget(
    setup: tuple[MakeCli, str], receiver: Receiver
) -> None:
    factory, _ = setup
    cli = factory(SCHEDCTL_NOTIFY_BUDGET="1", SCHEDCTL_NOTIFY_BACKOFF="0.2")
    ok(cli("add", "slow", "-s", "@daily", "--notify", receiver.target, "--", "false"))
    receiver.mode = "hang"
    started = time.monotonic()
    result = cli("run", "slow", "--now")
    took = time.monotonic() - started
    assert result.rc == 1  # the job's own status
    assert took < 1 + 1.5, took  # the budget plus start-up
    assert "event=notify.retry" in result.err and SECRET not in result.err
    receiver.mode = "ok"
    time.sleep(0.3)
    ok(cli("notify"))
    assert [d["event"] for d in receiver.delivered] == ["failure"]


# -- missed slots ------------------------------------------------------------------------------


def test_each_missed_slot_gives_one_post(setup: tuple[MakeCli, str], receiver: Receiver) -> None:
    factory, url = setup
    cli = factory()
    ok(cli("add", "report", "-s", "* * * * *", "--notify", receiver.target, "--notify-on",
           "missed", "--", "true"))  # fmt: skip
    # Defined 4.5 minutes ago (missed slots are judged by the database's clock, so a host
    # whose clock is ahead would find none that are not yet due).
    move_back(url, "report", timedelta(minutes=4, seconds=30))
    created = datetime.fromisoformat(json.loads(cli("show", "report", "--json").out)["created_at"])
    before = datetime.now(UTC)
    first = cli("notify")
    ok(first)
    ok(cli("notify"))
    ok(factory(SCHEDCTL_HOST="other-host")("notify"))
    after = datetime.now(UTC)
    slots = [d["slot"] for d in receiver.delivered]

    def due(now: datetime) -> set[str]:
        """Every minute from the job's creation to a minute before `now`."""
        out, slot = set(), created.replace(second=0, microsecond=0) + timedelta(minutes=1)
        while slot <= now - timedelta(minutes=1):
            out.add(slot.isoformat())
            slot += timedelta(minutes=1)
        return out

    # Each missed once; a minute that came due while the three looked may be among them.
    assert len(slots) == len(set(slots)) and 3 <= len(slots) <= 6, slots
    assert due(before) <= set(slots) <= due(after), (slots, before, after)
    for d in receiver.delivered:
        assert (d["event"], d["status"], d["run_id"], d["host"]) == ("missed", "missed", None,
                                                                      None)  # fmt: skip
        assert d["text"] == f"schedctl: job report missed its slot {d['slot']}: no host ran it"
    assert f"missed slots found {len(slots)}" in first.out


# -- the receiver down for a while, three hosts delivering -----------------------------------


def test_an_outage_loses_nothing_and_sends_nothing_twice_with_three_hosts(
    pg_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    settings = {"SCHEDCTL_DATABASE_URL": pg_url, "SCHEDCTL_NOTIFY_TIMEOUT": "1",
                "SCHEDCTL_NOTIFY_BACKOFF": "0.2", "SCHEDCTL_NOTIFY_BACKOFF_MAX": "1",
                "SCHEDCTL_NOTIFY_ATTEMPTS": "1000", "SCHEDCTL_NOTIFY_BUDGET": "0"}  # fmt: skip
    cli = make_cli(tmp_path, **settings)
    ok(cli("db", "upgrade"))
    ok(cli("add", "flaky", "-s", "@daily", "--notify", receiver.target, "--", "false"))
    receiver.down()
    for _ in range(6):
        assert cli("run", "flaky", "--now").rc == 1
    assert len(outbox(pg_url)) == 6

    stop = threading.Event()
    steps: list[subprocess.CompletedProcess[str]] = []

    def host(name: str) -> None:
        env = cli_env(tmp_path / name, SCHEDCTL_HOST=name, **settings)
        while not stop.is_set():
            done = subprocess.run([str(BIN), "notify"], env=env, capture_output=True, text=True,
                                  timeout=60, check=False)  # fmt: skip
            steps.append(done)

    for name in ("h1", "h2", "h3"):
        (tmp_path / name).mkdir()
    hosts = [threading.Thread(target=host, args=(n,)) for n in ("h1", "h2", "h3")]
    for t in hosts:
        t.start()
    try:
        time.sleep(4)  # connection refused
        receiver.up()
        receiver.mode = "500"
        wait_for(lambda: sum(m == "500" for m, _ in receiver.seen) >= 6)
        receiver.mode = "hang"
        wait_for(lambda: sum(m == "hang" for m, _ in receiver.seen) >= 3)
        time.sleep(1)
        receiver.mode = "ok"
        wait_for(lambda: len(receiver.delivered) >= 6, 20)
        time.sleep(2)  # a duplicate would arrive by now
    finally:
        stop.set()
        for t in hosts:
            t.join(60)
    assert all(s.returncode == 0 for s in steps), [s.stderr for s in steps if s.returncode]
    ids = sorted(d["notification_id"] for d in receiver.delivered)
    assert ids == sorted(n["id"] for n in outbox(pg_url))  # each exactly once
    rows = outbox(pg_url)
    assert {r["state"] for r in rows} == {"sent"}
    assert all(r["attempts"] >= 3 for r in rows)  # refused, then 500 or a hang, at least
    logs = "".join(s.stderr for s in steps)
    assert "Connection refused" in logs and "HTTP 500" in logs and "no reply within 1 s" in logs
    assert SECRET not in logs
    # The steps delivered them (the runs' budget was 0), one POST answered per notification.
    assert sum(s.stderr.count("event=notify.sent") for s in steps) == 6


def test_a_receiver_that_dribbles_or_a_command_that_hangs_is_a_failed_attempt(
    tmp_path: Path, receiver: Receiver
) -> None:
    hook = tmp_path / "hangs"
    # Its child keeps the pipes open: only the whole group's end lets the attempt finish.
    hook.write_text("#!/bin/sh\nsleep 60 &\nsleep 60\n")
    hook.chmod(0o755)
    cli = make_cli(tmp_path, SCHEDCTL_NOTIFY_TIMEOUT="1", SCHEDCTL_NOTIFY_BUDGET="0")
    ok(cli("add", "j", "-s", "@daily", "--notify", receiver.target, "--notify", f"exec:{hook}",
           "--", "false"))  # fmt: skip
    assert cli("run", "j", "--now").rc == 1
    receiver.mode = "drip"
    started = time.monotonic()
    step = cli("notify")
    took = time.monotonic() - started
    ok(step)
    assert took < 2 * 2 + 2, took  # two attempts of at most twice the timeout, and start-up
    assert "no complete reply within 2 s" in step.err
    assert "did not finish within 2 s" in step.err
    url = f"sqlite:///{tmp_path / 'data' / 'schedctl.db'}"
    assert {(r["state"], r["attempts"]) for r in outbox(url)} == {("pending", 1)}


def test_a_notification_is_given_up_after_its_attempts(
    setup: tuple[MakeCli, str], receiver: Receiver
) -> None:
    factory, url = setup
    cli = factory(SCHEDCTL_NOTIFY_ATTEMPTS="2", SCHEDCTL_NOTIFY_BACKOFF="0")
    ok(cli("add", "doomed", "-s", "@daily", "--notify", receiver.target, "--", "false"))
    receiver.mode = "500"
    assert cli("run", "doomed", "--now").rc == 1
    last = cli("notify")
    ok(last)
    assert "event=notify.gave_up" in last.err and "level=error" in last.err
    (row,) = outbox(url)
    assert (row["state"], row["attempts"], row["last_error"]) == (
        "failed",
        2,
        "HTTP 500 Internal Server Error",
    )
    ok(cli("notify"))
    assert [m for m, _ in receiver.seen] == ["500", "500"]


# -- spooled results -------------------------------------------------------------------------


def test_a_spooled_result_notifies_exactly_once_however_many_flush_it(
    setup: tuple[MakeCli, str], receiver: Receiver, tmp_path: Path
) -> None:
    from test_spool import claim_runs, spool_file

    factory, url = setup
    cli = factory()
    ok(cli("add", "offline", "-s", "@daily", "--notify", receiver.target, "--", "true"))
    ids = claim_runs(url, "offline", 5)
    for run_id in ids:
        spool_file(tmp_path / "data", run_id)
    env = cli_env(tmp_path, **({"SCHEDCTL_DATABASE_URL": url} if "postgres" in url else {}))
    flushers = [subprocess.Popen([str(BIN), "notify"], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(4)]  # fmt: skip
    for p in flushers:
        p.communicate(timeout=60)
        assert p.returncode == 0
    ok(cli("notify"))
    assert sorted(n["run_id"] for n in outbox(url)) == sorted(ids)
    assert sorted(d["run_id"] for d in receiver.delivered) == sorted(ids)


# -- mail and exec ---------------------------------------------------------------------------


def test_mail_goes_through_sendmail_and_exec_gets_the_document(
    setup: tuple[MakeCli, str], tmp_path: Path
) -> None:
    factory, _ = setup
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sendmail = bin_dir / "sendmail"
    sendmail.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/mail.args\ncat >> {tmp_path}/mail\n')
    hook = bin_dir / "page-oncall"
    hook.write_text(f"#!/bin/sh\ncat > {tmp_path}/exec.json\n")
    for f in (sendmail, hook):
        f.chmod(0o755)
    cli = factory(PATH=f"{bin_dir}:/usr/bin:/bin", SCHEDCTL_HOST="db-2")
    ok(cli("add", "vacuum", "-s", "@daily", "--notify", "mailto:ops@example.com", "--notify",
           f"exec:{hook}", "--shell", "--", "echo vacuum broke; exit 4"))  # fmt: skip
    assert cli("run", "vacuum", "--now").rc == 4
    args = (tmp_path / "mail.args").read_text().split()
    assert args == ["-i", "--", "ops@example.com"]
    head, _, body = (tmp_path / "mail").read_text().partition("\n\n")
    headers = dict(line.split(": ", 1) for line in head.splitlines())
    assert headers["To"] == "ops@example.com"
    assert headers["Subject"] == "schedctl: vacuum failed on db-2"
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert "schedctl: job vacuum failed on db-2 (manual run)" in body
    assert "exit code 4" in body and "vacuum broke" in body
    doc = json.loads((tmp_path / "exec.json").read_text())
    assert set(doc) == FIELDS and (doc["job"], doc["exit_code"], doc["host"]) == ("vacuum", 4,
                                                                                   "db-2")  # fmt: skip


# -- input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--notify", f"webhook:ftp://hooks.example/{SECRET}"], "needs an http:// or https://"),
        (["--notify", "slack:#ops"], "unknown kind of target"),
        (["--notify", "mailto:-oQ/tmp/x"], "not a mail address"),
        (["--notify", "exec:page-oncall"], "must be an absolute path"),
        (["--notify-on", "failure,bogus"], "--notify-on 'bogus': not an event"),
        (["--notify-on", ","], "--notify-on needs at least one"),
        (["--notify", "none", "--notify", "mailto:a@b.example"], "give it alone"),
    ],
)
def test_bad_targets_and_events_are_refused_and_nothing_is_stored(
    tmp_path: Path, args: list[str], fragment: str
) -> None:
    cli = make_cli(tmp_path)
    one_line_error(cli("add", "j", "-s", "@daily", *args, "--", "true"), 2, fragment)
    assert json.loads(cli("list", "--json").out) == []
    ok(cli("add", "j", "-s", "@daily", "--", "true"))
    before = json.loads(cli("show", "j", "--json").out)
    result = cli("edit", "j", *args)
    one_line_error(result, 2, fragment)
    assert SECRET not in result.err
    assert json.loads(cli("show", "j", "--json").out) == before


def test_defaults_come_from_the_configuration_file_and_are_stored(tmp_path: Path) -> None:
    config = tmp_path / "schedctl.env"
    config.write_text("SCHEDCTL_NOTIFY=mailto:ops@example.com,exec:/usr/local/bin/page\n"
                      "SCHEDCTL_NOTIFY_ON=failure,missed\n")  # fmt: skip
    cli = make_cli(tmp_path, SCHEDCTL_CONFIG=str(config))
    ok(cli("add", "a", "-s", "@daily", "--", "true"))
    ok(cli("add", "b", "-s", "@daily", "--notify", "none", "--", "true"))
    ok(cli("add", "c", "-s", "@daily", "--notify-on", "recovery", "--", "true"))
    config.write_text("")  # another host's file, or none: the stored settings stand
    shown = {
        j["name"]: (j["notify"], j["notify_on"]) for j in json.loads(cli("list", "--json").out)
    }
    assert shown == {
        "a": (["mailto:ops@example.com", "exec:/usr/local/bin/page"], ["failure", "missed"]),
        "b": ([], ["failure", "missed"]),
        "c": (["mailto:ops@example.com", "exec:/usr/local/bin/page"], ["recovery"]),
    }
    ok(cli("edit", "a", "--notify", "mailto:dba@example.com", "--notify-on", "failure"))
    a = json.loads(cli("show", "a", "--json").out)
    assert (a["notify"], a["notify_on"]) == (["mailto:dba@example.com"], ["failure"])
    ok(cli("edit", "a", "--notify", "none"))
    assert json.loads(cli("show", "a", "--json").out)["notify"] == []


def test_sync_runs_the_delivery_step(tmp_path: Path, receiver: Receiver) -> None:
    cli = make_cli(tmp_path, SCHEDCTL_NOTIFY_BUDGET="0")
    ok(cli("add", "j", "-s", "@daily", "--notify", receiver.target, "--", "false"))
    assert cli("run", "j", "--now").rc == 1
    assert receiver.delivered == []
    ok(cli("sync", "crontab", "--file", str(tmp_path / "cron.d-schedctl")))
    assert [d["event"] for d in receiver.delivered] == ["failure"]


def test_the_daemon_runs_the_delivery_step(tmp_path: Path, receiver: Receiver) -> None:
    from test_daemon import start_daemon, stop

    cli = make_cli(tmp_path, SCHEDCTL_NOTIFY_BUDGET="0")
    ok(cli("add", "j", "-s", "@yearly", "--notify", receiver.target, "--", "false"))
    assert cli("run", "j", "--now").rc == 1
    assert receiver.delivered == []
    env = cli_env(tmp_path)
    daemon = start_daemon(env, tmp_path / "daemon.log")
    try:
        wait_for(lambda: len(receiver.delivered) == 1, 30)
    finally:
        assert stop(daemon) == 0
    assert [d["event"] for d in receiver.delivered] == ["failure"]


def test_notify_is_a_reserved_job_name(tmp_path: Path) -> None:
    one_line_error(make_cli(tmp_path)("add", "notify", "-s", "@daily", "--", "true"), 2, "notify")
