"""Multi-host database URLs (a primary and its standby), through the installed binary."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from cli_helpers import BIN, Cli, make_cli, ok, one_line_error
from pgserver import PgServer, destroy, free_port, start_pair, wait_replayed

from schedctl.config import parse_database_url

pytestmark = pytest.mark.xdist_group("pg_pair")


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[PgServer, PgServer]]:
    """A primary and a streaming standby of it."""
    primary, standby = start_pair()
    try:
        yield primary, standby
    finally:
        destroy(standby)
        destroy(primary)


def _url(server: PgServer, dbname: str, *ports: int, query: str = "") -> str:
    hosts = ",".join(f"127.0.0.1:{p}" for p in ports)
    url = f"postgresql://{server.user}:{server.password}@{hosts}/{dbname}"
    return url + (f"?{query}" if query else "")


def _count(server: PgServer, dbname: str, sql: str) -> int:
    with psycopg.connect(server.url(dbname), autocommit=True) as conn:
        row = conn.execute(sql).fetchone()
        assert row is not None
        return int(row[0])


def test_a_url_naming_the_standby_first_works_on_every_command(
    pair: tuple[PgServer, PgServer], tmp_path: Path
) -> None:
    """The URL says nothing of target_session_attrs: schedctl asks libpq for a writable one."""
    primary, standby = pair
    dbname = primary.create_database()
    wait_replayed(primary, standby)
    url = _url(primary, dbname, standby.port, primary.port)
    cli: Cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url, SCHEDCTL_HOST="mh-a")
    ok(cli("db", "upgrade"))
    status = ok(cli("db", "status"))
    assert "schema_state     current" in status.out
    assert primary.password not in status.out
    assert f"127.0.0.1:{standby.port},127.0.0.1:{primary.port}" in status.out
    ok(cli("add", "mh", "-s", "* * * * *", "--", "true"))
    ok(cli("run", "mh", "--now"))
    ok(cli("run", "mh"))  # the current slot: a claim
    ok(cli("check"))
    ok(cli("list"))
    assert _count(primary, dbname, "SELECT count(*) FROM runs WHERE status = 'succeeded'") == 2
    # The in-app lock API on the same URL: held on the primary, where every host looks.
    probe = (
        "import sys, schedctl\n"
        "with schedctl.advisory_lock('mh-guard', url=sys.argv[1]) as held:\n"
        "    assert held\n"
        "    print('held', flush=True)\n"
        "    sys.stdin.readline()\n"
    )
    python = str(Path(BIN).parent / "python")
    holder = subprocess.Popen(
        [python, "-c", probe, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "held"
        locks = _count(primary, dbname, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
        assert locks == 1
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(timeout=30) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
    wait_replayed(primary, standby)
    # What the standby holds is what the primary wrote, and nothing more.
    assert _count(standby, dbname, "SELECT count(*) FROM runs") == 2


def test_the_urls_own_target_session_attrs_wins(
    pair: tuple[PgServer, PgServer], tmp_path: Path
) -> None:
    """`any` is the operator's choice: libpq takes the standby first, which refuses writes."""
    primary, standby = pair
    dbname = primary.create_database()
    ok(make_cli(tmp_path, SCHEDCTL_DATABASE_URL=primary.url(dbname))("db", "upgrade"))
    wait_replayed(primary, standby)
    url = _url(primary, dbname, standby.port, primary.port, query="target_session_attrs=any")
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url)
    one_line_error(cli("add", "mh", "-s", "@daily", "--", "true"), 75, "is read-only")
    assert _count(primary, dbname, "SELECT count(*) FROM jobs") == 0


@pytest.mark.parametrize(
    "argv",
    [
        ("run", "only"),
        ("check",),
        ("add", "other", "-s", "@daily", "--", "true"),
        ("db", "upgrade"),
    ],
    ids=["run", "check", "add", "db-upgrade"],
)
def test_a_url_that_reaches_only_standbys_fails_with_one_line(
    pair: tuple[PgServer, PgServer], tmp_path: Path, argv: tuple[str, ...]
) -> None:
    """The standby answers, the other server is down: one line naming both, nothing written."""
    primary, standby = pair
    dbname = primary.create_database()
    setup = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=primary.url(dbname))
    ok(setup("db", "upgrade"))
    ok(setup("add", "only", "-s", "* * * * *", "--", "touch", str(tmp_path / "ran")))
    wait_replayed(primary, standby)
    down = free_port()
    url = _url(primary, dbname, standby.port, down)
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url, SCHEDCTL_HOST="mh-b")
    result = cli(*argv)
    names = [f"127.0.0.1:{standby.port}: read-only (a standby)", f"127.0.0.1:{down}: "]
    if argv == ("check",):
        assert result.rc == 3, result
        assert result.out.startswith("SCHEDCTL UNKNOWN - no server of the database URL")
        line = result.out
    else:
        one_line_error(result, 75, "no server of the database URL")
        line = result.err
    assert all(name in line for name in names), line
    assert "promote a standby" in line
    assert primary.password not in line + result.err
    assert f"postgres:***@127.0.0.1:{standby.port},127.0.0.1:{down}/" in line
    assert not (tmp_path / "ran").exists()
    assert _count(primary, dbname, "SELECT count(*) FROM runs") == 0
    assert _count(primary, dbname, "SELECT count(*) FROM jobs") == 1


def test_a_url_whose_servers_are_all_down_names_each(tmp_path: Path) -> None:
    """Several servers, none answering: each is named with libpq's reason."""
    first, second = free_port(), free_port()
    cli = make_cli(
        tmp_path,
        SCHEDCTL_DATABASE_URL=f"postgresql://u:sekret@127.0.0.1:{first},127.0.0.1:{second}/d",
    )
    result = cli("list")
    one_line_error(result, 75, "cannot reach any server of the database URL")
    assert f"127.0.0.1:{first}: Connection refused" in result.err
    assert f"127.0.0.1:{second}: Connection refused" in result.err
    assert "sekret" not in result.err


def test_display_masks_the_password_of_a_multi_host_url() -> None:
    """Messages show every host and port, never the password."""
    url = parse_database_url(
        "postgresql://ops:p%40ss@db1:5432,db2:5433,[::1]:5434/sched?target_session_attrs=read-write"
    )
    assert str(url) == (
        "postgresql://ops:***@db1:5432,db2:5433,[::1]:5434/sched?target_session_attrs=read-write"
    )
    assert "p@ss" not in repr(url) and "p%40ss" not in repr(url)
