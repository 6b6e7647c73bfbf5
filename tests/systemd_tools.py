"""Run systemd's own tools on rendered units: the calendar oracle and `verify`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cli_helpers import BIN

_INSTANT = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC")


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (apt-get install systemd)")
    return path


def calendar(lines: list[str], base: datetime, n: int) -> list[datetime]:
    """Return the first `n` elapses after `base` of the union of OnCalendar= values."""
    out = subprocess.run(
        [need("systemd-analyze"), "calendar", f"--base-time=@{int(base.timestamp())}",
         f"--iterations={n}", *lines],
        capture_output=True, text=True, env={**os.environ, "TZ": "UTC"}, check=False,
    )  # fmt: skip
    assert out.returncode == 0, f"systemd-analyze calendar refused {lines}: {out.stderr}"
    assert out.stdout.count("Normalized form:") == len(lines), out.stdout
    found: set[datetime] = set()
    for line in out.stdout.splitlines():
        if line.strip().startswith(("Next elapse:", "Iter. #")):
            m = _INSTANT.search(line)
            if m:
                found.add(datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC))
    return sorted(found)[:n]


def verify(unit_dir: Path, user: bool = False, binary: Path = BIN) -> str:
    """Return everything `systemd-analyze verify` prints for the units in `unit_dir`.

    With `user`, as units of a user's own manager (`systemd-analyze --user verify`); `binary`
    is the schedctl the units run.

    It writes temporary directories in /tmp and touches /run/systemd, so it runs in its own
    mount namespace with fresh tmpfs on both (root only).
    """
    need("systemd-analyze")
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("systemd-analyze verify needs root and unshare to keep off the real /tmp")
    # Units under pytest's tmp dir would vanish under the tmpfs on /tmp: copy them to the
    # fresh /run first; a schedctl under /tmp (a venv in a temporary HOME) is bound back over it.
    keep = str(binary.parent.parent)
    script = (
        'mount -n -t tmpfs tmpfs /run && mkdir /run/units /run/keep && cp "$0"/* /run/units/ && '
        'mount -n --bind "$1" /run/keep && mount -n -t tmpfs tmpfs /tmp && '
        'mkdir -p "$1" && mount -n --bind /run/keep "$1" && '
        "cd /run/units && "
        # A user manager keeps its state in $XDG_RUNTIME_DIR: a fresh one on the fresh /run.
        + (
            "mkdir /run/rt && XDG_RUNTIME_DIR=/run/rt exec systemd-analyze --user"
            if user
            else "exec systemd-analyze"
        )
        + " verify --man=no *"
    )
    out = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, str(unit_dir), keep],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return (out.stdout + out.stderr).strip() + (
        "" if out.returncode == 0 else f"\nexit {out.returncode}"
    )
