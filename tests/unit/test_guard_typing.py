"""The in-app lock API type-checks in a user's module: mypy --strict on the installed package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SAMPLE = """\
from schedctl import advisory_lock, single_instance


@single_instance("cleanup_old_events")
def cleanup_old_events(days: int) -> int:
    return days


deleted: int | None = cleanup_old_events(30)


def cleanup() -> None:
    with advisory_lock("cleanup_old_events", wait=5) as locked:
        got: bool = locked
        if not got:
            return
"""

MISUSE = """\
from schedctl import advisory_lock, single_instance


@single_instance("cleanup_old_events")
def cleanup_old_events(days: int) -> int:
    return days


deleted: int = cleanup_old_events(30)
cleanup_old_events("30")
with advisory_lock("x", wait="soon") as locked:
    pass
"""


def _mypy(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    module = tmp_path / "jobs.py"
    module.write_text(text)
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(module)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_user_module_type_checks_strictly(tmp_path: Path) -> None:
    done = _mypy(tmp_path, SAMPLE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_misuse_is_caught_by_the_types(tmp_path: Path) -> None:
    done = _mypy(tmp_path, MISUSE)
    errors = [ln for ln in done.stdout.splitlines() if ": error:" in ln]
    assert done.returncode == 1, done.stdout + done.stderr
    # The skipped call's None, the wrapped function's own parameter, and `wait`'s type.
    assert len(errors) == 3, errors
    assert "jobs.py:9:" in errors[0] and "int | None" in errors[0]
    assert "jobs.py:10:" in errors[1] and '"str"' in errors[1]
    assert "jobs.py:11:" in errors[2] and "wait" in errors[2]
