"""What `run` and `logs` say, and where: levels, formats, the journal, cron, a terminal."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cli_helpers import BIN, Cli, cli_env, make_cli, ok, one_line_error

FAIL = ("sh", "-c", "echo broken; exit 3")


def run_with_stderr(env: dict[str, str], *args: str, fd: int) -> int:
    """Run the binary with stderr on `fd` (a pipe or a terminal made here); return its code."""
    done = subprocess.run([str(BIN), *args], env=env, stdout=subprocess.DEVNULL, stderr=fd,
                          timeout=60, check=False)  # fmt: skip
    return done.returncode


def read_all(fd: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # a terminal's other end reads EIO once the child has gone
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()


def test_under_cron_a_success_prints_only_the_jobs_output(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    cli, _, env = backend
    # As cron starts it: stderr a pipe (cron mails it), no terminal, no journal, no level set.
    cron = make_cli(tmp_path, SCHEDCTL_LOG_LEVEL="",
                    **{k: v for k, v in env.items() if k == "SCHEDCTL_DATABASE_URL"})  # fmt: skip
    ok(cli("add", "fine", "-s", "@daily", "--", "echo", "all good"))
    ok(cli("add", "broken", "-s", "@daily", "--", *FAIL))
    good = cron("run", "fine", "--now")
    assert (good.rc, good.out, good.err) == (0, "all good\n", "")
    bad = cron("run", "broken", "--now")
    assert bad.rc == 3 and bad.out == "broken\n"
    lines = bad.err.splitlines()
    assert len(lines) == 1, bad.err
    assert " level=error event=run.finished job=broken " in lines[0]
    assert "status=failed exit_code=3" in lines[0]
    # Asked for, info events come back.
    shown = make_cli(tmp_path, SCHEDCTL_LOG_LEVEL="info",
                     **{k: v for k, v in env.items() if k == "SCHEDCTL_DATABASE_URL"})  # fmt: skip
    assert "event=run.claimed" in ok(shown("run", "fine", "--now")).err


def test_events_carry_levels_and_json_on_request(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    cli, _, env = backend
    ok(cli("add", "broken", "-s", "@daily", "--", *FAIL))
    as_json = make_cli(tmp_path, SCHEDCTL_LOG_FORMAT="json", SCHEDCTL_LOG_LEVEL="debug",
                       **{k: v for k, v in env.items() if k == "SCHEDCTL_DATABASE_URL"})  # fmt: skip
    done = as_json("run", "broken", "--now")
    assert done.rc == 3
    events = [json.loads(line) for line in done.err.splitlines()]
    levels = {e["event"]: e["level"] for e in events}
    assert levels == {"run.claimed": "info", "run.started": "info", "run.finished": "error"}
    assert all(re.fullmatch(r"\d{4}-.*\d{6}Z", e["timestamp"]) for e in events)


@pytest.mark.parametrize(
    ("var", "value"), [("SCHEDCTL_LOG_LEVEL", "verbose"), ("SCHEDCTL_LOG_FORMAT", "xml")]
)
@pytest.mark.parametrize("command", [("run", "any", "--now"), ("list",)])
def test_a_bad_log_setting_is_a_configuration_error(
    tmp_path: Path, var: str, value: str, command: tuple[str, ...]
) -> None:
    cli = make_cli(tmp_path, **{var: value})
    one_line_error(cli(*command), 78, f"{var}={value!r} is not a")


def test_on_the_journal_lines_carry_syslog_priorities(
    backend: tuple[Cli, str, dict[str, str]],
) -> None:
    cli, _, env = backend
    ok(cli("add", "fine", "-s", "@daily", "--", "true"))
    ok(cli("add", "broken", "-s", "@daily", "--", *FAIL))
    env = {**env, "SCHEDCTL_LOG_LEVEL": ""}
    for job, code, want in (("fine", 0, {"<6>"}), ("broken", 3, {"<6>", "<3>"})):
        r, w = os.pipe()
        st = os.fstat(w)
        # The stream systemd would have connected: JOURNAL_STREAM names this very pipe.
        journal = {**env, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert run_with_stderr(journal, "run", job, "--now", fd=w) == code
        os.close(w)
        lines = read_all(r).splitlines()
        os.close(r)
        assert {line[:3] for line in lines} == want, lines
        assert [line for line in lines if line.startswith("<3>")] == [
            line for line in lines if "level=error" in line
        ]
        # Inherited by something that writes elsewhere, the variable means nothing.
        r, w = os.pipe()
        assert run_with_stderr(journal, "run", job, "--now", fd=w) == code
        os.close(w)
        assert "<" not in read_all(r)
        os.close(r)


def test_not_due_is_said_in_words_on_a_terminal(
    backend: tuple[Cli, str, dict[str, str]],
) -> None:
    cli, _, env = backend
    # Created just now, a yearly job has had no slot yet: nothing is due.
    ok(cli("add", "yearly", "-s", "5 14 1 1 *", "--tz", "Europe/Berlin", "--", "true"))
    primary, secondary = os.openpty()
    try:
        assert run_with_stderr({**env, "SCHEDCTL_LOG_LEVEL": ""}, "run", "yearly",
                               fd=secondary) == 0  # fmt: skip
        os.close(secondary)
        said = read_all(primary)
    finally:
        os.close(primary)
    assert re.fullmatch(
        r"not due: next slot 20\d\d-01-01 14:05 CET; use --now to run it now\r?\n", said
    ), said
    # Not to a person: the event, as before.
    piped = cli("run", "yearly")
    assert piped.rc == 0 and "event=run.skipped.no_slot" in piped.err
    assert "next_slot=20" in piped.err and "not due" not in piped.err


def test_logs_of_a_job(backend: tuple[Cli, str, dict[str, str]]) -> None:
    cli, _, _ = backend
    ok(cli("add", "flaky", "-s", "@daily", "--", "sh", "-c",
           'test -e "$HOME/ok" && echo fixed || { echo "attempt failed"; exit 1; }'))  # fmt: skip
    assert cli("run", "flaky", "--now").rc == 1
    ok(cli("add", "fixer", "-s", "@daily", "--", "sh", "-c", 'mkdir -p "$HOME"; touch "$HOME/ok"'))
    ok(cli("run", "fixer", "--now"))
    ok(cli("run", "flaky", "--now"))
    latest = ok(cli("logs", "flaky"))
    assert latest.out == "fixed\n"
    assert re.fullmatch(r"run \d+ of flaky \(succeeded, exit 0, .*\):\n", latest.err)
    failure = ok(cli("logs", "--failed", "flaky"))
    assert failure.out == "attempt failed\n" and "(failed, exit 1," in failure.err
    # Nothing printed: stdout stays empty for a pipe, the note is on stderr.
    quiet = ok(cli("logs", "fixer"))
    assert quiet.out == "" and quiet.err.endswith("\n(no output)\n")
    one_line_error(cli("logs", "--failed", "fixer"), 3, "job 'fixer' has no failed run recorded")
    one_line_error(cli("logs", "nope"), 3, "no job named 'nope'")
    ok(cli("add", "idle", "-s", "@daily", "--", "true"))
    one_line_error(cli("logs", "idle"), 3, "schedctl run idle --now")


def test_all_digits_is_a_run_id_and_job_names_one_explicitly(
    backend: tuple[Cli, str, dict[str, str]],
) -> None:
    cli, _, _ = backend
    ok(cli("add", "1", "-s", "@daily", "--", "echo", "from the job named 1"))
    ok(cli("add", "other", "-s", "@daily", "--", "echo", "from run 1"))
    ok(cli("run", "other", "--now"))  # run id 1
    ok(cli("run", "1", "--now"))
    assert ok(cli("logs", "1")).out == "from run 1\n"
    assert ok(cli("logs", "--job", "1")).out == "from the job named 1\n"
    one_line_error(cli("logs", "--failed", "1"), 2, "give --job 1")
    one_line_error(cli("logs", "1", "--job", "1"), 2, "not both")


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_the_daemon_logs_info_through_structlog_whatever_stderr_is(
    tmp_path: Path, pg_url: str, fmt: str
) -> None:
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url)
    ok(cli("db", "upgrade"))
    ok(cli("add", "tick", "-s", "* * * * *", "--", "true"))
    env = cli_env(tmp_path, SCHEDCTL_DATABASE_URL=pg_url, SCHEDCTL_LOG_LEVEL="",
                  SCHEDCTL_LOG_FORMAT=fmt)  # fmt: skip
    log = tmp_path / "daemon.log"
    with log.open("wb") as f:  # a file, as a container's log: not a terminal, not the journal
        daemon = subprocess.Popen([str(BIN), "daemon", "--refresh", "1s"], env=env, stdout=f,
                                  stderr=f)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "job.registered" not in log.read_text():
            time.sleep(0.2)
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
    lines = log.read_text().splitlines()
    if fmt == "json":
        events = [(e["level"], e["event"]) for e in map(json.loads, lines)]
    else:
        found = [re.fullmatch(r"timestamp=\S+Z level=(\w+) event=(\S+)( .*)?", ln) for ln in lines]
        assert all(found), lines
        events = [(m.group(1), m.group(2)) for m in found if m]
    assert events[:2] == [("info", "daemon.started"), ("info", "job.registered")], lines
    assert events[-1] == ("info", "daemon.stopped")


def test_a_late_start_is_a_warning_and_a_late_skip_is_not(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    cli, url, env = backend
    ok(cli("add", "nightly", "-s", "@daily", "--catch-up", "latest", "--", "true"))
    ok(cli("add", "skipper", "-s", "@daily", "--catch-up", "skip", "--", "true"))
    # Defined long ago, so today's midnight slot is theirs, and starting it now is late.
    import sqlalchemy as sa

    from schedctl.config import parse_database_url
    from schedctl.db.schema import make_engine

    engine = make_engine(parse_database_url(url))
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE jobs SET created_at = :at"),
                     {"at": datetime.now(UTC) - timedelta(days=3)})  # fmt: skip
    engine.dispose()
    cron = make_cli(tmp_path, SCHEDCTL_LOG_LEVEL="",
                    **{k: v for k, v in env.items() if k == "SCHEDCTL_DATABASE_URL"})  # fmt: skip
    late = cron("run", "nightly")
    assert late.rc == 0
    (line,) = late.err.splitlines()
    assert " level=warning event=run.late job=nightly " in line and " catch_up=latest" in line
    assert float(re.findall(r" late_seconds=([\d.]+)", line)[0]) > 300
    # Skipped as its policy says: nothing for a person to do, so nothing under cron.
    skipped = cron("run", "skipper")
    assert (skipped.rc, skipped.err) == (0, "")
    assert " late_seconds=" in ok(cli("run", "skipper")).err
