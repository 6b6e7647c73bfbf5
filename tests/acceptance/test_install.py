"""`install.sh`: a world-usable system install with the database URL kept private; a second
copy in a virtualenv of its own leaves the `schedctl` on PATH alone."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import binary_for_others

ROOT = Path(__file__).resolve().parents[2]
ENV_FILE = Path("/etc/schedctl/schedctl.env")

system_install = pytest.mark.skipif(
    os.environ.get("SCHEDCTL_TEST_SYSTEM_INSTALL") != "1" or os.geteuid() != 0,
    reason="changes /opt, /usr/local/bin and /etc: set SCHEDCTL_TEST_SYSTEM_INSTALL=1 and run "
    "as root (.ci/run does)",
)
# The machine's own /opt, /usr/local/bin and /etc: never two of these at once, whichever
# workers run them (a lock on the machine, beside the group that keeps them on one worker).
one_at_a_time = pytest.mark.xdist_group("system-install")


@pytest.fixture(autouse=True)
def machine_wide_turn(request: pytest.FixtureRequest) -> None:
    """Hold the machine's system-install lock for a test that changes /opt, /usr/local, /etc."""
    if request.node.get_closest_marker("xdist_group") is not None:
        request.getfixturevalue("machine_settings_turn")


def sh(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env or {"PATH": "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"},
    )


@pytest.fixture
def saved_env_file() -> Iterator[None]:
    """Put back whatever /etc/schedctl/schedctl.env held before the test."""
    backup = ENV_FILE.read_bytes() if ENV_FILE.exists() else None
    try:
        yield
    finally:
        if backup is None:
            ENV_FILE.unlink(missing_ok=True)
        else:
            ENV_FILE.write_bytes(backup)


@system_install
@one_at_a_time
@pytest.mark.usefixtures("saved_env_file")
def test_system_install_is_usable_by_other_users(pg_url: str) -> None:
    ENV_FILE.unlink(missing_ok=True)
    first = sh(str(ROOT / "install.sh"), "--system", "--db", pg_url)
    assert first.returncode == 0, first.stderr
    assert "/usr/local/bin/schedctl -> /opt/schedctl/venv/bin/schedctl" in first.stdout
    password = pg_url.split(":")[2].split("@", maxsplit=1)[0]
    assert password not in first.stdout + first.stderr

    assert stat.S_IMODE(ENV_FILE.stat().st_mode) == 0o600
    # The sync, prune and notify timers ship with it (enabled only where systemd is PID 1).
    assert "schedctl-sync.timer schedctl-prune.timer schedctl-notify.timer" in first.stdout
    for unit in ("schedctl-sync.timer", "schedctl-sync.service", "schedctl-prune.timer",
                 "schedctl-prune.service", "schedctl-notify.timer",
                 "schedctl-notify.service"):  # fmt: skip
        installed = Path("/etc/systemd/system") / unit
        assert installed.read_text() == (ROOT / "units" / unit).read_text()
    assert ENV_FILE.stat().st_uid == 0
    assert f"SCHEDCTL_DATABASE_URL={pg_url}" in ENV_FILE.read_text()

    # Root's schedctl finds the database through the environment file.
    assert sh("schedctl", "db", "upgrade").returncode == 0
    status = sh("schedctl", "db", "status")
    assert status.returncode == 0, status.stderr
    assert str(ENV_FILE) in status.stdout
    assert password not in status.stdout

    # Another user (jobs may run as nobody) can execute the install.
    home = Path(tempfile.mkdtemp(prefix="schedctl-nobody-"))  # pytest's tmp dirs are 0700
    shutil.chown(home, "nobody", "nogroup")
    try:
        as_nobody = sh(
            "runuser",
            "-u",
            "nobody",
            "--",
            "/usr/local/bin/schedctl",
            "--db",
            f"sqlite:///{home / 'jobs.db'}",
            "quickstart",
        )
    finally:
        shutil.rmtree(home)
    assert as_nobody.returncode == 0, as_nobody.stderr
    assert "added sample job hello" in as_nobody.stdout

    # Re-running upgrades in place and keeps the configured URL.
    again = sh(str(ROOT / "install.sh"), "--system")
    assert again.returncode == 0, again.stderr
    assert "upgraded schedctl" in again.stdout
    assert f"SCHEDCTL_DATABASE_URL={pg_url}" in ENV_FILE.read_text()


def test_a_virtualenv_of_its_own_is_linked_only_where_asked(tmp_path: Path) -> None:
    home = tmp_path / "home"
    default_link = home / ".local" / "bin" / "schedctl"
    default_link.parent.mkdir(parents=True)
    default_link.symlink_to("/opt/elsewhere/bin/schedctl")  # the copy in use
    venv = tmp_path / "second"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "SCHEDCTL_VENV": str(venv)}
    first = sh(str(ROOT / "install.sh"), env=env)
    assert first.returncode == 0, first.stderr
    assert os.readlink(default_link) == "/opt/elsewhere/bin/schedctl"  # left alone
    assert f"run it as {venv}/bin/schedctl" in first.stdout
    assert sh(str(venv / "bin" / "schedctl"), "--version", env=env).returncode == 0
    # Asked for a link: there, and only there.
    bin_dir = tmp_path / "bin"
    again = sh(str(ROOT / "install.sh"), env={**env, "SCHEDCTL_BIN_DIR": str(bin_dir)})
    assert again.returncode == 0, again.stderr
    assert os.readlink(bin_dir / "schedctl") == str(venv / "bin" / "schedctl")
    assert os.readlink(default_link) == "/opt/elsewhere/bin/schedctl"


@system_install
@one_at_a_time
@pytest.mark.usefixtures("saved_env_file")
def test_a_database_url_that_does_not_work_is_not_written() -> None:
    ENV_FILE.parent.mkdir(parents=True, exist_ok=True)
    ENV_FILE.write_text("SCHEDCTL_DATABASE_URL=sqlite:////var/lib/schedctl/before.db\n")
    url = "postgresql://schedctl:s3cret-pw@127.0.0.1:1/schedctl"
    result = sh(str(ROOT / "install.sh"), "--system", "--db", url)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("install.sh: error: --db does not work"), lines
    assert "cannot reach the database" in lines[0] and "nothing written" in lines[0]
    assert "s3cret-pw" not in result.stdout + result.stderr
    assert ENV_FILE.read_text() == "SCHEDCTL_DATABASE_URL=sqlite:////var/lib/schedctl/before.db\n"


@system_install
@one_at_a_time
@pytest.mark.usefixtures("saved_env_file")
def test_a_user_who_cannot_read_the_system_settings_is_told_which_database() -> None:
    ENV_FILE.parent.mkdir(parents=True, exist_ok=True)
    ENV_FILE.write_text("SCHEDCTL_DATABASE_URL=postgresql://schedctl@db.example/schedctl\n")
    ENV_FILE.chmod(0o600)
    home = Path(tempfile.mkdtemp(prefix="schedctl-nobody-"))  # pytest's tmp dirs are 0700
    shutil.chown(home, "nobody", "nogroup")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(home), "NO_COLOR": "1"}
    binary = str(binary_for_others())

    def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
        return sh("runuser", "-u", "nobody", "--", "env", f"HOME={home}", binary, *argv, env=env)

    try:
        first = as_nobody("list")
        again = as_nobody("list", "--json")
        status = as_nobody("db", "status", "--json")
    finally:
        shutil.rmtree(home)
    assert first.returncode == 0, first.stderr
    [warning] = first.stderr.splitlines()
    assert warning.startswith("schedctl: warning: using your own SQLite database ")
    assert f"{home}/.local/share/schedctl/schedctl.db" in warning
    assert str(ENV_FILE) in warning and "not readable" in warning
    # Once: scripts that run it again see a quiet stderr and unchanged stdout.
    assert again.returncode == 0 and again.stderr == "" and json.loads(again.stdout) == []
    info = json.loads(status.stdout)
    assert info["source"] == "default" and "not readable" in info["source_note"]
