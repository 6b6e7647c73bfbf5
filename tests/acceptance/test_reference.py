"""docs/reference.md is what the installed binary's `--help` prints, command by command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cli_helpers import BIN

from schedctl.cli import check, run

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "docs" / "gen_reference.py"


def test_reference_matches_the_installed_help() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--check", "--schedctl", str(BIN)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout


def test_run_and_check_pages_are_their_own_parsers_help() -> None:
    text = (ROOT / "docs" / "reference.md").read_text()
    for name, usage in (("run", run.USAGE), ("check", check.USAGE)):
        page = "\n".join(line.rstrip() for line in usage.strip("\n").splitlines())
        assert f"## `schedctl {name}`\n\n```text\n{page}\n```" in text, name


def test_a_stale_reference_is_reported_with_the_command_that_fixes_it(tmp_path: Path) -> None:
    copy = tmp_path / "docs"
    copy.mkdir()
    (copy / "gen_reference.py").write_text(SCRIPT.read_text())
    (copy / "reference.md").write_text((ROOT / "docs" / "reference.md").read_text() + "stale\n")
    done = subprocess.run(
        [sys.executable, str(copy / "gen_reference.py"), "--check", "--schedctl", str(BIN)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert "docs/gen_reference.py" in done.stderr
    assert "regenerate" in done.stderr
