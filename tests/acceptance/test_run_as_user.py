"""A job never gets the database password: not from its environment, its runner, or the config.

`schedctl run` as root starts a `--user` job as that user (with that user's groups and
identity); a job of schedctl's own user cannot read its runner's memory or environment.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import BIN, cli_env, make_cli, ok, run_rows
from pgserver import PgServer

import schedctl

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(os.geteuid() != 0, reason="starting jobs as other users needs root"),
]
PROBE = Path(__file__).resolve().parents[1] / "secret_probe.py"
PYTHON = "/usr/bin/python3"
# What libpq would use to find and log in to the fleet's database, as root's environment
# might hold it (values schedctl's own connection can live with).
LIBPQ_ENV = {
    "PGPASSFILE": "/root/.pgpass",
    "PGSERVICEFILE": "/etc/schedctl/pg_service.conf",
    "PGHOST": "127.0.0.1",
    "PGUSER": "postgres",
    "PGSSLMODE": "prefer",
    "PGCONNECT_TIMEOUT": "7",
}


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user can read (pytest's own are 0700): the probe and its inputs."""
    path = Path(tempfile.mkdtemp(prefix="schedctl-secrets-"))
    path.chmod(0o755)
    shutil.copy(PROBE, path / PROBE.name)
    (path / PROBE.name).chmod(0o644)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def schedctl_for_nobody(runuser: str, shared_dir: Path, env: dict[str, str]) -> list[str]:
    """Return a command that starts the installed schedctl as `nobody`.

    A virtualenv under root's home (CI's) is closed to other users: then run the installed
    package itself (what `run` loads: schedctl and psycopg's libpq) from a copy they can read,
    with the system interpreter the virtualenv was built from.
    """
    probe = [runuser, "-u", "nobody", "--", "test", "-x", str(BIN)]
    if subprocess.run(probe, check=False).returncode == 0:
        return [str(BIN)]
    site = Path(schedctl.__file__).parent.parent
    copy = shared_dir / "site"
    shutil.copytree(Path(schedctl.__file__).parent, copy / "schedctl")
    if (site / "psycopg_binary.libs").is_dir():
        shutil.copytree(site / "psycopg_binary.libs", copy / "psycopg_binary.libs")
    for path in [copy, *copy.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    env["PYTHONPATH"] = str(copy)
    return [PYTHON, "-m", "schedctl"]


def job_user() -> pwd.struct_passwd:
    """A system user with supplementary groups if there is one (Debian's postgres has ssl-cert)."""
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    pytest.skip("neither postgres nor nobody exists on this host")


def probe_lines(output: str) -> dict[str, str]:
    """Split the probe's `key: value` / `key=value` lines."""
    found = {}
    for line in output.splitlines():
        key, sep, value = line.partition(": ") if ": " in line else line.partition("=")
        if sep:
            found[key] = value
    return found


def test_root_starts_a_user_job_as_that_user_without_the_database_secrets(
    pg: PgServer, pg_url: str, tmp_path: Path, shared_dir: Path
) -> None:
    who = job_user()
    config = shared_dir / "schedctl.env"  # like /etc/schedctl/schedctl.env: root's, 0600
    config.write_text(f"SCHEDCTL_DATABASE_URL={pg_url}\n")
    config.chmod(0o600)
    cli = make_cli(
        tmp_path, SCHEDCTL_DATABASE_URL=pg_url, PGPASSWORD=pg.password, SCHEDCTL_CONFIG=str(config),
        **LIBPQ_ENV,
    )  # fmt: skip
    ok(cli("db", "upgrade"))
    ok(cli("add", "peek", "-s", "@daily", "--user", who.pw_name, "-e", "PGAPPNAME=own-setting",
           "--", PYTHON, str(shared_dir / PROBE.name), str(config)))  # fmt: skip
    done = cli("run", "peek", "--now")
    assert done.rc == 0, done.err
    assert "probe done" in done.out, done.out
    (row,) = run_rows(pg_url, "peek")
    for text in (done.out, done.err, row["output_tail"]):
        assert pg.password not in text
    seen = probe_lines(done.out)
    groups = sorted(os.getgrouplist(who.pw_name, who.pw_gid))
    assert seen["uid"] == f"{who.pw_uid} gid={who.pw_gid} groups={groups}"
    assert (seen["HOME"], seen["USER"], seen["LOGNAME"]) == (who.pw_dir, who.pw_name, who.pw_name)
    assert seen["SHELL"] == (who.pw_shell or "/bin/sh")
    assert seen["cwd"] == (who.pw_dir if os.path.isdir(who.pw_dir) else "/")
    # The runner is root's: its environment and memory are closed to the job's user.
    assert seen["parent environ"] == "'unreadable (Permission denied)'"
    assert seen["parent memory"] == "unreadable (Permission denied)"
    assert seen["config file"] == "'unreadable (Permission denied)'"
    # Nothing of libpq's connection environment is handed down; the job's own --env is.
    own = seen["own environ"]
    for key in ("SCHEDCTL_DATABASE_URL", "PGPASSWORD", *LIBPQ_ENV):
        assert f"{key}=" not in own
    assert "PGAPPNAME=own-setting" in own and "SCHEDCTL_JOB=peek" in own


def test_a_job_of_the_runners_own_user_cannot_read_the_runner(
    pg: PgServer, pg_url: str, tmp_path: Path, shared_dir: Path
) -> None:
    ok(make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url)("db", "upgrade"))
    admin = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url)
    ok(admin("add", "peek", "-s", "@daily", "--", PYTHON, str(shared_dir / PROBE.name)))
    home = shared_dir / "home"
    home.mkdir()
    shutil.chown(home, "nobody")
    env = cli_env(home, SCHEDCTL_DATABASE_URL=pg_url, PGPASSWORD=pg.password, HOME=str(home))
    env["SCHEDCTL_CONFIG"] = "/dev/null"
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    done = subprocess.run(
        [runuser, "-u", "nobody", "--", *schedctl_for_nobody(runuser, shared_dir, env),
         "run", "peek", "--now"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "probe done" in done.stdout, done.stdout
    seen = probe_lines(done.stdout)
    assert seen["uid"].startswith(f"{pwd.getpwnam('nobody').pw_uid} ")
    # Same user, yet /proc/PID/environ and /proc/PID/mem of the runner stay closed.
    assert seen["parent environ"] == "'unreadable (Permission denied)'"
    assert seen["parent memory"] == "unreadable (Permission denied)"
    (row,) = run_rows(pg_url, "peek")
    for text in (done.stdout, done.stderr, row["output_tail"]):
        assert pg.password not in text
