"""`schedctl run` through PgBouncer: a session pool keeps the lock, a transaction pool is refused.

PgBouncer runs as `nobody` on a free port in front of the suite's PostgreSQL server.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from cli_helpers import BIN, cli_env, make_cli, ok, one_line_error, run_rows
from pgserver import PgServer, free_port

PGBOUNCER = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")


@pytest.fixture
def bouncer_bin() -> str:
    if PGBOUNCER is None:
        assert not os.environ.get("CI"), "pgbouncer missing: .ci/run should have installed it"
        pytest.skip("pgbouncer not installed (apt-get install pgbouncer)")
    return PGBOUNCER


@contextmanager
def pgbouncer(
    binary: str, pg: PgServer, mode: str, *, ignore_options: bool = True, round_robin: int = 0
) -> Iterator[Callable[[str], str]]:
    """Run PgBouncer in `mode` in front of `pg`; yield a function giving a database's URL."""
    root = Path(tempfile.mkdtemp(prefix="schedctl-pgbouncer-"))
    port = free_port()
    (root / "users.txt").write_text(f'"{pg.user}" "{pg.password}"\n')
    ignore = "ignore_startup_parameters = options" if ignore_options else ""
    (root / "pgbouncer.ini").write_text(
        f"[databases]\n* = host=127.0.0.1 port={pg.port}\n"
        f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = scram-sha-256\nauth_file = {root / 'users.txt'}\n"
        f"pool_mode = {mode}\nserver_round_robin = {round_robin}\n{ignore}\n"
        f"logfile = {root / 'log'}\n"
    )
    argv = [binary, "-q", str(root / "pgbouncer.ini")]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        nobody = pwd.getpwnam("nobody")
        for p in (root, *root.iterdir()):
            os.chown(p, nobody.pw_uid, nobody.pw_gid)
        argv = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", "nobody", "--", *argv]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, (root / "log").read_text()
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "pgbouncer did not start listening"
            time.sleep(0.05)
        yield lambda db: f"postgresql://{pg.user}:{pg.password}@127.0.0.1:{port}/{db}"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        shutil.rmtree(root, ignore_errors=True)


def define(pg: PgServer, tmp_path: Path, *job: str) -> tuple[str, str]:
    """Create a database with the schema and `job`, directly; return (name, direct URL)."""
    name = pg.create_database()
    direct = pg.url(name)
    (tmp_path / "direct").mkdir()
    cli = make_cli(tmp_path / "direct", SCHEDCTL_DATABASE_URL=direct)
    ok(cli("db", "upgrade"))
    ok(cli("add", *job))
    return name, direct


@pytest.mark.parametrize("round_robin", [0, 1])
def test_transaction_pooling_is_refused_before_anything_runs(
    pg: PgServer, tmp_path: Path, bouncer_bin: str, round_robin: int
) -> None:
    side = tmp_path / "side"
    db, direct = define(pg, tmp_path, "guarded", "-s", "@daily", "--shell", "--",
                        f"echo ran >> {side}")  # fmt: skip
    with pgbouncer(bouncer_bin, pg, "transaction", round_robin=round_robin) as url:
        # Several idle server connections, so that PgBouncer has a choice of backends.
        held = [psycopg.connect(url(db), autocommit=True) for _ in range(3)]
        for conn in held:
            conn.execute("BEGIN")
            conn.execute("SELECT 1")
        for conn in held:
            conn.execute("COMMIT")
            conn.close()
        cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url(db))
        for _ in range(3):
            result = cli("run", "guarded", "--now")
            one_line_error(result, 78, "transaction-pooling proxy")
            assert "pool_mode = session" in result.err
    assert not side.exists()
    assert run_rows(direct) == []  # refused before the claim: nothing recorded either


def test_session_pooling_keeps_forbid_and_its_live_runs(
    pg: PgServer, tmp_path: Path, bouncer_bin: str
) -> None:
    db, direct = define(pg, tmp_path, "single", "-s", "@daily", "--", "sleep", "4")
    with pgbouncer(bouncer_bin, pg, "session") as url:
        env = cli_env(tmp_path, SCHEDCTL_DATABASE_URL=url(db))
        racers = [
            subprocess.Popen(
                [str(BIN), "run", "single", "--now"],
                env={**env, "SCHEDCTL_HOST": f"host-{i}"},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(4)
        ]
        try:
            deadline = time.monotonic() + 30
            while not any(r["started_at"] for r in run_rows(direct)):
                assert time.monotonic() < deadline, run_rows(direct)
                time.sleep(0.1)
            # Any command reconciles dead runners first; through the pool it must still see
            # the live run's session as alive.
            ok(make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url(db))("history", "single"))
            live = [r for r in run_rows(direct) if r["started_at"]]
            assert [r["status"] for r in live] == ["running"]
            results = [(p.wait(timeout=60), p.stderr.read() if p.stderr else "") for p in racers]
        finally:
            for p in racers:
                p.kill()
    assert [rc for rc, _ in results] == [0] * 4, results
    assert sum("event=run.lock.busy" in err for _, err in results) == 3
    statuses = sorted(r["status"] for r in run_rows(direct))
    assert statuses == ["skipped_overlap"] * 3 + ["succeeded"]


def test_a_pooler_refusing_the_options_parameter_says_how_to_fix_it(
    pg: PgServer, tmp_path: Path, bouncer_bin: str
) -> None:
    db, _ = define(pg, tmp_path, "any", "-s", "@daily", "--", "true")
    with pgbouncer(bouncer_bin, pg, "session", ignore_options=False) as url:
        cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url(db))
        for args in (("run", "any", "--now"), ("list",)):
            result = cli(*args)
            one_line_error(result, 78, "ignore_startup_parameters = options")
            assert "options" in result.err and pg.password not in result.err
