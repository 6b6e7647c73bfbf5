"""A user without root: quickstart says how its sample job fires and never pages; user units."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import (
    BIN,
    Result,
    binary_for_others,
    cli_env,
    faketime,
    make_cli,
    one_line_error,
)
from systemd_tools import verify


@pytest.fixture
def home() -> Iterator[Path]:
    """A home directory of its own for `nobody` (pytest's tmp dirs are 0700 root's)."""
    path = Path(tempfile.mkdtemp(prefix="schedctl-user-"))
    shutil.chown(path, "nobody", "nogroup")
    yield path
    shutil.rmtree(path)


# As a user on a machine without a system install: none of its settings may show through.
pytestmark = pytest.mark.usefixtures("machine_settings_turn")


def as_nobody(home: Path, *args: str, **env: str) -> Result:
    """Run the installed binary as `nobody` with only a HOME: no system configuration."""
    base = {"HOME": str(home), "PATH": "/usr/bin:/bin", "TZ": "UTC", "NO_COLOR": "1"}
    argv = ["runuser", "-u", "nobody", "--", "env", "-i"]
    argv += [f"{k}={v}" for k, v in {**base, "COLUMNS": "200", **env}.items()]
    p = subprocess.run(
        [*argv, str(binary_for_others()), *args],
        capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return Result(p.returncode, p.stdout, p.stderr)


def test_quickstart_as_a_user_says_how_to_fire_the_sample_job_that_never_pages(
    home: Path,
) -> None:
    first = as_nobody(home, "quickstart")
    assert first.rc == 0, first.err
    assert "added sample job hello" in first.out
    assert first.out.count("(20") == 5  # five fire times, each with its UTC form
    assert "schedctl enable hello && schedctl sync crontab" in first.out
    assert "schedctl enable hello && schedctl sync systemd --user" in first.out
    assert (home / ".local/share/schedctl/schedctl.db").is_file()  # the user's own database
    listed = json.loads(as_nobody(home, "list", "--json").out)
    assert [(j["name"], j["enabled"]) for j in listed] == [("hello", False)]
    # Half an hour later nothing installed it: nothing is missed, nothing pages.
    later = {"LD_PRELOAD": faketime(), "FAKETIME": "+30m"}
    check = as_nobody(home, "check", **later)
    assert check.rc == 0, (check.out, check.err)
    assert check.out.startswith("SCHEDCTL OK"), check.out
    report = json.loads(as_nobody(home, "report", "--json", **later).out)
    assert [(j["job"], j["missed"]) for j in report["jobs"]] == [("hello", 0)]


def test_quickstart_install_without_a_user_manager_leaves_nothing_to_page(home: Path) -> None:
    # No session, no lingering: no user manager to talk to (no XDG_RUNTIME_DIR).
    failed = as_nobody(home, "quickstart", "--install", "systemd-user")
    one_line_error(failed, 78, "loginctl enable-linger")
    assert not (home / ".config/systemd").exists()
    listed = json.loads(as_nobody(home, "list", "--json").out)
    assert [(j["name"], j["enabled"]) for j in listed] == [("hello", False)]
    one_line_error(as_nobody(home, "quickstart", "--install", "cron"), 2, "--install")


def test_render_and_sync_systemd_user_write_user_units_only(home: Path) -> None:
    config = home / "cfg"
    env = {"XDG_CONFIG_HOME": str(config)}
    assert as_nobody(home, "add", "mine", "-s", "*/5 * * * *", "--", "true").rc == 0
    other = as_nobody(home, "add", "theirs", "-s", "@daily", "--user", "daemon", "--", "true")
    assert other.rc == 0, other.err
    rendered = as_nobody(home, "render", "systemd", "--user", **env)
    assert rendered.rc == 0, rendered.err
    assert "schedctl-mine.service" in rendered.out and "theirs" not in rendered.out
    assert "job theirs runs as daemon: not in nobody's user units" in rendered.err
    for absent in ("User=", "SCHEDCTL_CONFIG", "/etc/", "network-online"):
        assert absent not in rendered.out, absent
    assert "WantedBy=timers.target" in rendered.out
    # As on main, the system units keep their root runner and the system env file.
    system = as_nobody(home, "render", "systemd", "mine", **env)
    assert "User=root" in system.out and "SCHEDCTL_CONFIG=/etc/schedctl/schedctl.env" in system.out

    refused = as_nobody(home, "sync", "systemd", **env)
    one_line_error(refused, 2, "schedctl sync systemd --user")
    synced = as_nobody(home, "sync", "systemd", "--user", "--no-reload", **env)
    assert synced.rc == 0, synced.err
    assert "synced: 2 written, 0 removed, 0 unchanged" in synced.out
    units = config / "systemd" / "user"
    assert sorted(p.name for p in units.iterdir()) == [
        "schedctl-mine.service",
        "schedctl-mine.timer",
    ]
    assert units.stat().st_uid == (home / ".local").stat().st_uid  # written as the user
    assert verify(units, user=True, binary=binary_for_others()) == ""
    dry = as_nobody(home, "sync", "systemd", "--user", "--dry-run", **env)
    assert "0 unit files would change, 2 unchanged" in dry.out, dry.out


def test_quickstart_asks_on_a_terminal_only(tmp_path: Path) -> None:
    # script(1) gives the command a terminal for stdin and stdout, and types the answer.
    on_tty = subprocess.run(
        ["script", "-qec", f"{BIN} quickstart", "/dev/null"],
        input="none\n", env=cli_env(tmp_path), capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert on_tty.returncode == 0, on_tty.stdout + on_tty.stderr
    assert "crontab (your crontab), systemd-user (your own timers), none" in on_tty.stdout
    assert "schedctl enable hello && schedctl sync" in on_tty.stdout
    # The same command in a script asks nothing and installs nothing.
    piped = make_cli(tmp_path)("quickstart")
    assert piped.rc == 0 and "Make the sample job fire?" not in piped.out + piped.err
    assert "sample job already present" in piped.out
