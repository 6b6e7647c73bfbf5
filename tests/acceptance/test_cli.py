"""The installed `schedctl` binary, driven in a subprocess as a user would."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cli_helpers import Cli, make_cli, ok, one_line_error
from cron_oracle import COUNTS, cron_exprs, oracle_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pgserver import PgServer, free_port


@pytest.fixture(params=["sqlite", "postgresql"])
def cli(request: pytest.FixtureRequest, tmp_path: Path) -> Cli:
    """The CLI on the embedded default, then on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return make_cli(tmp_path)
    run = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=request.getfixturevalue("pg_url"))
    assert run("db", "upgrade").rc == 0
    return run


def test_quickstart_on_the_embedded_default(tmp_path: Path) -> None:
    run = make_cli(tmp_path)
    first = ok(run("quickstart"))
    assert "added sample job hello" in first.out
    assert first.out.count("(20") == 5  # five next fire times, each with its UTC form
    db = tmp_path / "data" / "schedctl.db"
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    again = ok(run("quickstart"))
    assert "already present" in again.out
    assert [j["name"] for j in json.loads(ok(run("list", "--json")).out)] == ["hello"]


def test_job_lifecycle(cli: Cli) -> None:
    added = ok(
        cli(
            "add",
            "nightly-backup",
            "--schedule",
            "30 2 * * *",
            "--timeout",
            "1h30m",
            "--concurrency",
            "queue",
            "--retries",
            "2",
            "--retry-delay",
            "5m",
            "--jitter",
            "90s",
            "--env",
            "LEVEL=full",
            "--env",
            "LANG=C.UTF-8",
            "--workdir",
            "/srv",
            "--user",
            "backup",
            "--description",
            "Full backup",
            "--tag",
            "backup",
            "--tag",
            "nightly",
            "--",
            "/usr/local/bin/backup",
            "--to",
            "/mnt/backup dir",
            "100%",
        )
    )
    assert "added job nightly-backup (enabled)" in added.out
    ok(cli("add", "cleanup", "-s", "@hourly", "--tz", "UTC", "--shell", "--", "rm -f /tmp/x-*"))

    jobs = json.loads(ok(cli("list", "--json")).out)
    assert [j["name"] for j in jobs] == ["cleanup", "nightly-backup"]
    job = jobs[1]
    assert job["command"] == ["/usr/local/bin/backup", "--to", "/mnt/backup dir", "100%"]
    assert job["timezone"] == "Europe/Berlin"  # the host's default (TZ), stored explicitly
    assert job["timeout_seconds"] == 5400
    assert job["concurrency"] == "queue"
    assert job["enabled"] is True
    assert job["revision"] == 1
    assert job["env"] == {"LANG": "C.UTF-8", "LEVEL": "full"}
    assert job["retry_delay_seconds"] == 300 and job["jitter_seconds"] == 90
    assert job["next_run"].endswith(("+01:00", "+02:00"))
    assert jobs[0]["shell"] is True and jobs[0]["command"] == ["rm -f /tmp/x-*"]

    assert [j["name"] for j in json.loads(ok(cli("list", "--tag", "backup", "--json")).out)] == [
        "nightly-backup"
    ]
    table = ok(cli("list")).out
    assert "nightly-backup" in table and "30 2 * * *" in table

    shown = json.loads(ok(cli("show", "nightly-backup", "--json")).out)
    assert len(shown["next_runs"]) == 5
    assert all("T02:30:00+0" in t for t in shown["next_runs"])
    text = ok(cli("show", "nightly-backup")).out
    assert "UTC" in text and "Europe/Berlin" in text and "1h30m" in text

    nxt = json.loads(ok(cli("next", "nightly-backup", "--count", "3", "--json")).out)
    assert nxt["job"] == "nightly-backup" and len(nxt["next"]) == 3

    assert "revision 2" in ok(cli("edit", "nightly-backup", "--schedule", "0 3 * * *")).out
    assert "unchanged" in ok(cli("edit", "nightly-backup", "--schedule", "0 3 * * *")).out
    ok(
        cli(
            "edit",
            "nightly-backup",
            "--unset-env",
            "LEVEL",
            "--untag",
            "nightly",
            "--",
            "/bin/true",
        )
    )
    edited = json.loads(ok(cli("show", "nightly-backup", "--json")).out)
    assert edited["revision"] == 3
    assert edited["command"] == ["/bin/true"]
    assert edited["env"] == {"LANG": "C.UTF-8"}
    assert edited["tags"] == ["backup"]

    assert "disabled" in ok(cli("disable", "nightly-backup")).out
    assert json.loads(ok(cli("show", "nightly-backup", "--json")).out)["enabled"] is False
    assert "enabled" in ok(cli("enable", "nightly-backup")).out

    assert "removed job cleanup" in ok(cli("remove", "cleanup", "--yes")).out
    one_line_error(cli("show", "cleanup"), 3, "no job named 'cleanup'")


def test_next_follows_debian_cron_across_dst(cli: Cli) -> None:
    ok(cli("add", "dst", "-s", "30 2 * * *", "--tz", "Europe/Berlin", "--", "true"))
    got = ok(cli("next", "dst", "--count", "3", "--after", "2026-03-28T12:00:00+01:00")).out
    assert got.split() == [
        "2026-03-29T03:00:00+02:00",  # 02:30 does not exist that night: right after the gap
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]
    ok(cli("add", "or-rule", "-s", "0 12 13 * 5", "--tz", "UTC", "--", "true"))
    got = ok(cli("next", "or-rule", "-n", "2", "--after", "2026-02-01T00:00:00+00:00")).out
    assert got.split() == ["2026-02-06T12:00:00+00:00", "2026-02-13T12:00:00+00:00"]


BAD_INPUT = [
    (["add", "Bad_Name", "-s", "@daily", "--", "true"], 2, "invalid job name 'Bad_Name'"),
    (["add", "existing", "-s", "@daily", "--", "true"], 4, "already exists"),
    (["add", "x", "-s", "61 * * * *", "--", "true"], 2, "minute value 61 is out of range"),
    (["add", "x", "-s", "* * * JANUARY *", "--", "true"], 2, "month field has 'JANUARY'"),
    (["add", "x", "-s", "0 0 30 2 *", "--", "true"], 2, "can never fire"),
    (["add", "x", "-s", "@reboot", "--", "true"], 2, "@reboot is not supported"),
    (["add", "x", "-s", "@daily", "--tz", "Mars/Base", "--", "true"], 2, "unknown time zone"),
    (["add", "x", "-s", "@daily", "--timeout", "5 minutes", "--", "true"], 2, "bad timeout"),
    (["add", "x", "-s", "@daily", "--env", "NOVALUE", "--", "true"], 2, "bad --env"),
    (["add", "x", "-s", "@daily"], 2, "empty command"),
    (["add", "x", "--", "true"], 2, "missing --schedule"),
    (["add", "x", "-s", "@daily", "--", "echo", "a\nb"], 2, "contains a newline"),
    (["add", "x", "-s", "@daily", "--description", "a\rb", "--", "true"], 2, "carriage return"),
    (["add", "x", "-s", "@daily", "--concurrency", "sometimes", "--", "true"], 2, "sometimes"),
    (["add", "x", "-s", "@daily", "--bogus", "--", "true"], 2, "No such option"),
    (["edit", "existing", "--schedule", "* * *"], 2, "needs 5"),
    (["edit", "ghost", "--schedule", "@daily"], 3, "no job named 'ghost'"),
    (["show", "ghost"], 3, "no job named 'ghost'"),
    (["remove", "ghost", "--yes"], 3, "no job named 'ghost'"),
    (["remove", "existing"], 2, "pass --yes"),
    (["next", "existing", "--after", "tomorrow"], 2, "bad --after"),
    (["next", "existing", "--count", "0"], 2, "--count must be between 1 and 10000"),
    # Schedules are ASCII: other scripts' digits passed str.isdigit(); superscripts were exit 1.
    (["add", "x", "-s", "\uff13 \uff14 * * *", "--", "true"], 2, "schedules are ASCII"),
    (["add", "x", "-s", "\u0663 * * * *", "--", "true"], 2, "schedules are ASCII"),
    (["add", "x", "-s", "\u00b9 * * * *", "--", "true"], 2, "schedules are ASCII"),
    (["edit", "existing", "-s", "* \u00b9 * * *"], 2, "schedules are ASCII"),
    (
        ["add", "x", "-s", "*/99999999999999999999 * * * *", "--", "true"],
        2,
        "minute step '99999999999999999999' must be a whole number from 1 to 59",
    ),
    # Numbers out of bounds: exit 2 and one line, never an internal error.
    (
        ["add", "x", "-s", "@daily", "--timeout", "0", "--", "true"],
        2,
        "timeout must be at least 1s",
    ),
    (["edit", "existing", "--timeout", "0"], 2, "timeout must be at least 1s"),
    (["add", "x", "-s", "@daily", "--timeout", "\u00b9", "--", "true"], 2, "bad timeout"),
    (["add", "x", "-s", "@daily", "--retries", "9" * 23, "--", "true"], 2, "retries must be"),
    (["edit", "existing", "--retries", "9" * 23], 2, "retries must be"),
    (["add", "x", "-s", "@daily", "--output-limit", "9" * 23, "--", "true"], 2, "output limit"),
    (["add", "x", "-s", "@daily", "--jitter", "9" * 23, "--", "true"], 2, "at most 10 years"),
    (["add", "x", "-s", "@daily", "--keep", "9" * 5000, "--", "true"], 2, "at most 10 years"),
    (["next", "existing", "--count", "9" * 23], 2, "--count must be between 1 and 10000"),
    (["history", "--limit", "9" * 20], 2, "--limit must be between 1 and 1000000000"),
    (["logs", "9" * 20], 3, "no run with id"),
    (["daemon", "--health-port", "70000"], 2, "--health-port 70000 is not a TCP port"),
    (["daemon", "--health-port", "9" * 20], 2, "is not a TCP port"),
    # What a unit line cannot carry exactly (systemd joined `/tmp/a\` with the next line).
    (
        ["add", "x", "-s", "@daily", "--workdir", "/tmp/a\\", "--", "true"],
        2,
        "ends with a backslash, space or tab",
    ),
    (
        ["add", "x", "-s", "@daily", "--workdir", "/tmp//a", "--", "true"],
        2,
        "has an empty, . or ..",
    ),
    (
        ["add", "x", "-s", "@daily", "--workdir", "/tmp/a\u2028b", "--", "true"],
        2,
        "workdir contains line separator",
    ),
    (
        ["add", "x", "-s", "@daily", "--workdir", "/tmp/a\x85b", "--", "true"],
        2,
        "workdir contains control character",
    ),
    (["edit", "existing", "--workdir", "/tmp/a "], 2, "ends with a backslash, space or tab"),
    (
        ["add", "x", "-s", "@daily", "--description", "a\x1b[2Jb", "--", "true"],
        2,
        "description contains control character",
    ),
    (["add", "x", "-s", "@daily", "--env", "A=\x9b31m", "--", "true"], 2, "--env A contains"),
    (["add", "x", "-s", "@daily", "--user", "machine$", "--", "true"], 2, "invalid user name"),
]


def test_bad_input_is_one_line_and_changes_nothing(cli: Cli) -> None:
    ok(cli("add", "existing", "-s", "@hourly", "--", "true"))

    def stored() -> list[dict[str, object]]:
        # next_run is computed from the clock, not stored: the test may cross an hour.
        jobs = json.loads(ok(cli("list", "--json")).out)
        return [{k: v for k, v in job.items() if k != "next_run"} for job in jobs]

    before = stored()
    for args, code, fragment in BAD_INPUT:
        one_line_error(cli(*args, stdin=""), code, fragment)
    # One check at the end suffices: no bad input may have written anything.
    assert stored() == before


def test_unreachable_database(tmp_path: Path) -> None:
    url = f"postgresql://schedctl:hunter2secret@127.0.0.1:{free_port()}/schedctl"
    result = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url)("list")
    one_line_error(result, 75, "cannot reach the database")
    assert "hunter2secret" not in result.out + result.err
    assert "postgresql://schedctl:***@127.0.0.1" in result.err


def test_wrong_password(tmp_path: Path, pg: PgServer, pg_url: str) -> None:
    dbname = pg_url.rsplit("/", 1)[1]
    wrong = pg.url(dbname, password="not-the-password-42")
    run = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=wrong)
    one_line_error(run("list"), 77, "fix the user or password")
    debug = run("--debug", "list")
    assert debug.rc == 77
    assert "Traceback" in debug.err  # --debug shows where it failed...
    assert debug.err.rstrip().splitlines()[-1].startswith("schedctl: error: ")
    assert "not-the-password-42" not in debug.out + debug.err  # ...but never the password


def test_unsupported_url_kind(tmp_path: Path) -> None:
    result = make_cli(tmp_path)("--db", "mysql://root:topsecret@db/jobs", "list")
    one_line_error(result, 78, "unsupported database URL kind 'mysql'")
    assert "topsecret" not in result.err


def test_postgres_schema_missing_then_upgraded(tmp_path: Path, pg_url: str) -> None:
    run = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url)
    one_line_error(run("list"), 5, "run `schedctl db upgrade`")
    status = run("db", "status", "--json")
    assert status.rc == 5
    assert json.loads(status.out)["schema_state"] == "missing"
    assert "upgraded from empty to revision" in ok(run("db", "upgrade")).out
    assert "already at revision" in ok(run("db", "upgrade")).out
    info = json.loads(ok(run("db", "status", "--json")).out)
    assert info["schema_state"] == "current"
    assert info["backend"] == "postgresql"
    assert info["server"].startswith("1")
    assert ":***@" in info["url"]
    assert "no jobs" in ok(run("list")).out


@pytest.mark.parametrize(
    "command", ["add", "edit", "remove", "enable", "disable", "list", "show", "next", "quickstart"]
)
def test_every_command_has_help_with_an_example(tmp_path: Path, command: str) -> None:
    result = ok(make_cli(tmp_path)(command, "--help"))
    assert "Example" in result.out
    assert not (tmp_path / "data").exists()  # --help touches no database


def test_version(tmp_path: Path) -> None:
    assert ok(make_cli(tmp_path)("--version")).out.startswith("schedctl ")


_TOKENS = ["*", "*/", "-", ",", " ", "/", "0", "1", "5", "7", "59", "60", "mon", "JAN", "@",
           "hourly", "\uff13", "\u0663", "\u00b9", "\u00b2", "\u2028", "\x85", "\t",
           "99999999999999999999"]  # fmt: skip
_SCHEDULES = st.one_of(
    cron_exprs,
    st.builds(lambda e, at, junk: e[:at] + junk + e[at:], cron_exprs, st.integers(0, 30),
              st.sampled_from(_TOKENS) | st.text(min_size=1, max_size=2)),
    st.lists(st.sampled_from(_TOKENS), min_size=1, max_size=12).map("".join),
    st.text(min_size=1, max_size=20),
)  # fmt: skip


@settings(oracle_settings(4), suppress_health_check=list(HealthCheck))
@given(schedules=st.lists(_SCHEDULES, min_size=8, max_size=8))
def test_any_schedule_is_accepted_or_refused_in_one_line(
    tmp_path_factory: pytest.TempPathFactory, schedules: list[str]
) -> None:
    # Through the installed binary: exit 0 or 2, never 1 or a traceback; whatever is accepted
    # renders crontab lines Debian cron's parser takes (the same rules, checked against
    # `crontab -n` in tests/integration/test_cron_syntax.py).
    cli = make_cli(tmp_path_factory.mktemp("prop"))
    for i, schedule in enumerate(schedules):
        if "\x00" in schedule or any(0xD800 <= ord(c) < 0xE000 for c in schedule):
            continue  # cannot be a command-line argument at all
        added = cli("add", f"j{i}", "-s", schedule, "--tz", "UTC", "--", "true")
        assert added.rc in (0, 2), (schedule, added.rc, added.err)
        if added.rc == 2:
            one_line_error(added, 2, "")
            COUNTS["cli schedules refused"] += 1
            continue
        COUNTS["cli schedules accepted"] += 1
        from schedctl.render.cronsyntax import entry_problem

        for zone in ("UTC", "Europe/Berlin"):
            block = ok(cli("render", "crontab", f"j{i}", "--cron-zone", zone)).out
            for line in block.splitlines():
                assert entry_problem(line, system=True) is None, (schedule, line)


def test_a_session_ended_right_after_a_statement_is_still_one_line(
    tmp_path: Path, pg_url: str
) -> None:
    """The server's goodbye read along with a reply is no stray stderr line (libpq notice)."""
    import signal
    import subprocess
    import time

    import psycopg
    from cli_helpers import BIN, cli_env

    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url)
    ok(cli("db", "upgrade"))
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(
            "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN PERFORM pg_sleep(1); RETURN NEW; END $$"
        )
        admin.execute(
            "CREATE TRIGGER slow BEFORE INSERT ON job_changes FOR EACH ROW EXECUTE FUNCTION slow()"
        )

        def session(state: str) -> int | None:
            row = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'schedctl'"
                " AND state = %s AND query LIKE 'INSERT INTO job_changes%%'",
                (state,),
            ).fetchone()
            return None if row is None else int(row[0])

        def wait_for(state: str) -> int:
            for _ in range(400):
                pid = session(state)
                if pid is not None:
                    return pid
                time.sleep(0.01)
            raise AssertionError(f"no schedctl session {state}")

        adding = subprocess.Popen(
            [str(BIN), "add", "cut", "-s", "@daily", "--", "true"],
            env=cli_env(tmp_path, SCHEDCTL_DATABASE_URL=pg_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for("active")
            # Paused while it waits for the reply: the reply and the server's goodbye then
            # arrive together.
            adding.send_signal(signal.SIGSTOP)
            pid = wait_for("idle in transaction")
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            for _ in range(400):
                if not admin.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)
                ).fetchone():
                    break
                time.sleep(0.01)
        finally:
            adding.send_signal(signal.SIGCONT)
        out, err = adding.communicate(timeout=60)
        admin.execute("DROP TRIGGER slow ON job_changes")
    from cli_helpers import Result

    one_line_error(
        Result(adding.returncode, out, err), 75, "terminating connection due to administrator"
    )
    assert "cut" not in ok(cli("list")).out


def test_a_read_only_server_or_a_role_without_grants_is_no_internal_error(
    tmp_path: Path, pg: PgServer, pg_url: str
) -> None:
    """A standby (read-only) is exit 75 and a role lacking grants exit 78, one line each."""
    import secrets

    import psycopg

    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url)
    ok(cli("db", "upgrade"))
    ok(cli("add", "kept", "-s", "@daily", "--", "true"))
    read_only = make_cli(
        tmp_path, SCHEDCTL_DATABASE_URL=pg_url + "?options=-cdefault_transaction_read_only%3Don"
    )
    for args in (
        ("add", "new", "-s", "@daily", "--", "true"),
        ("edit", "kept", "--description", "changed"),
        ("remove", "kept", "--yes"),
        ("prune",),
        ("run", "kept", "--now"),
    ):
        one_line_error(read_only(*args), 75, "is read-only")
    role = "viewer_" + secrets.token_hex(4)
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'viewer-pw'")
        admin.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    dbname = pg_url.rsplit("/", 1)[1]
    viewer = make_cli(
        tmp_path,
        SCHEDCTL_DATABASE_URL=f"postgresql://{role}:viewer-pw@127.0.0.1:{pg.port}/{dbname}",
    )
    ok(viewer("list"))
    for args in (
        ("add", "new", "-s", "@daily", "--", "true"),
        ("edit", "kept", "--description", "changed"),
        ("run", "kept", "--now"),
    ):
        one_line_error(viewer(*args), 78, f"the database role '{role}' may not")
    shown = json.loads(ok(cli("show", "kept", "--json")).out)
    assert (shown["description"], shown["revision"]) == ("", 1)
    assert "new" not in ok(cli("list")).out
    assert ok(cli("history", "kept")).out.startswith("no runs")


def test_db_upgrade_into_a_search_path_schema_that_does_not_exist_says_so(
    tmp_path: Path, pg_url: str
) -> None:
    """A URL whose options name a missing schema is a configuration error, then works."""
    import psycopg

    url = pg_url + "?options=-csearch_path%3Dteam_jobs"
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url)
    one_line_error(cli("db", "upgrade"), 78, "create the schema the URL's search_path names")
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("CREATE SCHEMA team_jobs")
    ok(cli("db", "upgrade"))
    ok(cli("add", "scoped", "-s", "@daily", "--", "true"))
    with psycopg.connect(pg_url, autocommit=True) as admin:
        assert admin.execute("SELECT name FROM team_jobs.jobs").fetchall() == [("scoped",)]


def test_a_session_the_server_ended_while_remove_asked_is_replaced(
    tmp_path: Path, pg_url: str
) -> None:
    """An operator who takes a while to answer still gets the job removed (a new session)."""
    import os
    import pty
    import select
    import subprocess
    import time

    import psycopg
    from cli_helpers import BIN, cli_env

    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url)
    ok(cli("db", "upgrade"))
    ok(cli("add", "asked", "-s", "@daily", "--", "true"))
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [str(BIN), "remove", "asked"],
        env=cli_env(tmp_path, SCHEDCTL_DATABASE_URL=pg_url),
        stdin=slave, stdout=slave, stderr=slave,
    )  # fmt: skip
    os.close(slave)

    def read() -> bytes:
        ready, _, _ = select.select([master], [], [], 0.5)
        try:
            return os.read(master, 4096) if ready else b""
        except OSError:  # EIO: the command closed the terminal
            return b""

    try:
        seen = b""
        deadline = time.monotonic() + 30
        while b"Remove job asked?" not in seen:
            assert time.monotonic() < deadline, seen
            seen += read()
        with psycopg.connect(pg_url, autocommit=True) as admin:
            ended = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'schedctl' AND pid <> pg_backend_pid()"
                " AND datname = current_database()"
            ).fetchall()
        assert ended == [(True,)]  # the command's one session, idle at the prompt
        os.write(master, b"y\n")
        while proc.poll() is None:
            assert time.monotonic() < deadline + 60, seen
            seen += read()
        seen += read()
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, seen
    assert b"removed job asked" in seen, seen
    assert [j["name"] for j in json.loads(ok(cli("list", "--json")).out)] == []


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["history", "--json", "--csv"], "--json and --csv"),
        (["history", "j", "--missed", "--status", "failed"], "--status and --host"),
        (["history", "j", "--missed", "--host", "h"], "--status and --host"),
    ],
)
def test_history_refuses_options_that_would_be_ignored(
    tmp_path: Path, args: list[str], says: str
) -> None:
    cli = make_cli(tmp_path)
    ok(cli("add", "j", "-s", "@daily", "--", "true"))
    one_line_error(cli(*args), 2, says)


def test_a_statement_timeout_is_not_called_an_unreachable_database(
    tmp_path: Path, pg_url: str
) -> None:
    from urllib.parse import quote

    import psycopg

    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url)
    ok(cli("db", "upgrade"))
    ok(cli("add", "j", "-s", "@daily", "--", "true"))
    for setting in ("lock_timeout", "statement_timeout"):
        short = pg_url + "?options=" + quote(f"-c{setting}=200")
        with psycopg.connect(pg_url) as holder:
            # `list` waits behind this lock until its own timeout cancels it.
            holder.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
            result = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=short)("list")
        one_line_error(result, 75, "cancelled a statement")
        assert setting.replace("_", " ") in result.err and "cannot reach" not in result.err


@pytest.mark.parametrize("args", [["check"], ["check", "j1"], ["check", "--json"], ["list"]])
def test_a_read_whose_session_the_server_ended_is_retried_once(
    tmp_path: Path, pg_url: str, args: list[str]
) -> None:
    """A plain read cut off by pg_terminate_backend runs again on a new session."""
    import subprocess
    import time

    import psycopg
    from cli_helpers import BIN, Result, cli_env

    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url)
    ok(cli("db", "upgrade"))
    ok(cli("add", "j1", "-s", "@daily", "--", "true"))
    with psycopg.connect(pg_url) as holder, psycopg.connect(pg_url, autocommit=True) as admin:
        # The command's read of the jobs waits behind this lock, and is ended while it waits.
        holder.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
        proc = subprocess.Popen(
            [str(BIN), *args],
            env=cli_env(tmp_path, SCHEDCTL_DATABASE_URL=pg_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            ended: list[tuple[bool]] = []
            deadline = time.monotonic() + 30
            while not ended:
                assert time.monotonic() < deadline and proc.poll() is None, proc.poll()
                time.sleep(0.05)
                ended = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                    " AND application_name LIKE 'schedctl%%'"
                ).fetchall()
            assert ended == [(True,)]
            time.sleep(0.5)  # the retry now waits behind the lock in turn
        finally:
            holder.rollback()
        out, err = proc.communicate(timeout=60)
    result = Result(proc.returncode, out, err)
    assert (result.rc, result.err) == (0, ""), result
    assert "j1" in result.out or "OK - 1 jobs" in result.out, result


@pytest.mark.parametrize("command", [["list"], ["check"], ["run", "j", "--now"]])
def test_a_password_file_libpq_would_refuse_is_one_warning_of_schedctls_own(
    tmp_path: Path, pg: PgServer, pg_url: str, command: list[str]
) -> None:
    """libpq prints its refusal of a group-readable password file itself; schedctl says it."""
    ok(make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url)("db", "upgrade"))
    ok(make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url)("add", "j", "-s", "@daily", "--", "true"))
    dbname = pg_url.rsplit("/", 1)[1]
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"*:*:*:*:{pg.password}\n")
    passfile.chmod(0o644)
    home_pgpass = tmp_path / "home" / ".pgpass"
    home_pgpass.parent.mkdir(exist_ok=True)
    home_pgpass.write_text(f"*:*:*:*:{pg.password}\n")
    home_pgpass.chmod(0o640)
    # Over the Unix socket the server trusts: no password needed, only the warning at stake.
    socket_url = f"postgresql://postgres@/{dbname}?host={pg.sockdir}&port={pg.port}"

    def stderr_lines(url: str) -> list[str]:
        r = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url)(*command)
        assert r.rc == 0, r
        return [ln for ln in r.err.splitlines() if not ln.startswith("timestamp=")]

    advice = "so it is not read: make it the connecting user's own with `chmod 0600"
    (line,) = stderr_lines(f"{socket_url}&passfile={passfile}")
    assert line.startswith(
        f"schedctl: warning: password file {passfile} has group or world access (mode 0644), "
    ), line
    assert advice in line
    (line,) = stderr_lines(socket_url)  # ~/.pgpass, as libpq finds it
    assert line.startswith(f"schedctl: warning: password file {home_pgpass} has group"), line
    # A password in the URL: libpq reads no file, so there is nothing to say.
    assert stderr_lines(f"{socket_url}&password={pg.password}") == []
    # A private file is read as before: over TCP, its password is the one that logs in.
    passfile.chmod(0o600)
    home_pgpass.chmod(0o600)
    tcp_url = f"postgresql://postgres@127.0.0.1:{pg.port}/{dbname}?passfile={passfile}"
    assert stderr_lines(tcp_url) == []
