"""What `schedctl` says of a server that is not open, and of URL settings that cannot work."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from cli_helpers import BIN, cli_env, make_cli, ok, one_line_error
from pgserver import PgServer, destroy, free_port, start_server

UNAVAILABLE, CONFIG = 75, 78


@pytest.fixture
def own_pg() -> Iterator[PgServer]:
    """A server of the test's own: the test stops it."""
    server = start_server()
    try:
        yield server
    finally:
        destroy(server)


def test_a_server_shutting_down_is_not_blamed_on_connection_slots(
    own_pg: PgServer, tmp_path: Path
) -> None:
    db = own_pg.create_database()
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=own_pg.url(db), SCHEDCTL_CONNECT_RETRY="2")
    ok(cli("db", "upgrade"))
    # A smart shutdown waits for open sessions to end and refuses new ones meanwhile.
    with psycopg.connect(own_pg.url(db)) as held:
        pg_ctl = str(own_pg.bindir / "pg_ctl")
        own_pg._run(pg_ctl, "-D", str(own_pg.data), "-m", "smart", "-W", "stop")
        time.sleep(0.5)
        done = cli("list")
        one_line_error(done, UNAVAILABLE, "(the database system is shutting down); the server")
        assert "max_connections" not in done.err and "PgBouncer" not in done.err
        assert "pg_isready" in done.err
        held.close()


def test_an_unknown_target_session_attrs_is_a_settings_error(pg_url: str, tmp_path: Path) -> None:
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url + "?target_session_attrs=bogus")
    for command in (["list"], ["db", "status"], ["db", "upgrade"]):
        one_line_error(cli(*command), CONFIG, "target_session_attrs='bogus', which libpq does not")


@pytest.mark.parametrize("attrs", ["read-only", "standby"])
def test_a_url_asking_for_a_standby_says_schedctl_needs_a_primary(
    pg_url: str, tmp_path: Path, attrs: str
) -> None:
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=f"{pg_url}?target_session_attrs={attrs}")
    one_line_error(
        cli("list"), CONFIG, f"asks for a read-only server (target_session_attrs={attrs})"
    )
    ok(make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url)("db", "upgrade"))
    run = cli("run", "nothing")  # the run path connects through its own session
    one_line_error(run, CONFIG, "schedctl needs one that accepts writes")


def test_a_parameter_in_upper_case_is_named(pg_url: str, tmp_path: Path) -> None:
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url + "?TARGET_SESSION_ATTRS=any")
    done = cli("list")
    one_line_error(done, CONFIG, "write 'target_session_attrs'")
    assert "percent-encode" not in done.err


def test_an_empty_first_host_is_shown(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    url = f"postgres://u:pw@,127.0.0.1:{port}/sched"
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url, SCHEDCTL_CONNECT_RETRY="0")
    one_line_error(cli("list"), UNAVAILABLE, f"postgresql://u:***@,127.0.0.1:{port}/sched")


def test_an_immediate_stop_prints_no_raw_server_warning(own_pg: PgServer, tmp_path: Path) -> None:
    # The server's goodbye to each session (WARNING: terminating connection due to immediate
    # shutdown command) went to stderr through libpq's default notice processor, before the
    # one error line, from sessions caught while connecting.
    db = own_pg.create_database()
    env = cli_env(tmp_path, SCHEDCTL_DATABASE_URL=own_pg.url(db), SCHEDCTL_CONNECT_RETRY="1")
    cli = make_cli(tmp_path, **{k: v for k, v in env.items() if k.startswith("SCHEDCTL_")})
    ok(cli("db", "upgrade"))
    marks = tmp_path / "marks"
    marks.mkdir()
    job = f"touch {marks}/$SCHEDCTL_RUN_ID; sleep 30"
    ok(cli("add", "many", "-s", "@daily", "--concurrency", "allow", "--shell", "--", job))
    argv = [str(BIN), "run", "many", "--now"]
    pipe = subprocess.PIPE
    runs = [subprocess.Popen(argv, env=env, stdout=pipe, stderr=pipe, text=True) for _ in range(30)]
    try:
        deadline = time.monotonic() + 60
        while len(list(marks.iterdir())) < 5:
            assert time.monotonic() < deadline, "no run started its job"
            time.sleep(0.02)
        own_pg.stop("immediate")
        errs = [p.communicate(timeout=120)[1] for p in runs]
    finally:
        for p in runs:
            if p.poll() is None:
                p.kill()
                p.wait()
    raw = [line for err in errs for line in err.splitlines() if "terminating connection" in line]
    assert [line for line in raw if not line.startswith(("schedctl: ", "timestamp="))] == []
    assert sum(p.returncode != 0 for p in runs) >= 5  # the stop did catch runs
