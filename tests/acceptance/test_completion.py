"""Shell completion as the shell asks for it: commands, options and job names from the database."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from cli_helpers import BIN, cli_env, make_cli, ok


def _complete(env: dict[str, str], words: str, cword: int) -> tuple[list[str], str, float]:
    """Ask as bash's script does; return (values, stderr, seconds)."""
    started = time.monotonic()
    p = subprocess.run(
        [str(BIN)],
        env={**env, "_SCHEDCTL_COMPLETE": "bash_complete", "COMP_WORDS": words,
             "COMP_CWORD": str(cword)},
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert p.returncode == 0, p
    values = [line.split(",", 1)[1] for line in p.stdout.splitlines() if line]
    return values, p.stderr, time.monotonic() - started


def test_bash_completes_commands_options_and_job_names(tmp_path: Path) -> None:
    cli = make_cli(tmp_path)
    for name in ("nightly-backup", "nightly-vacuum", "report-mail"):
        ok(cli("add", name, "-s", "@daily", "--", "true"))
    env = cli_env(tmp_path)
    assert _complete(env, "schedctl li", 1)[0] == ["list"]
    assert "completion" in _complete(env, "schedctl ", 1)[0]
    assert _complete(env, "schedctl add x --time", 3)[0] == ["--timeout"]
    assert _complete(env, "schedctl run --n", 2)[0] == ["--now"]
    commands = ("show", "edit", "remove", "enable", "disable", "next", "history", "logs", "run",
                "check")  # fmt: skip
    for command in commands:
        names, err, _ = _complete(env, f"schedctl {command} nightly-", 2)
        assert names == ["nightly-backup", "nightly-vacuum"], (command, names)
        assert err == ""
    assert _complete(env, "schedctl show ", 2)[0] == [
        "nightly-backup", "nightly-vacuum", "report-mail",
    ]  # fmt: skip


def test_completion_is_silent_when_the_database_is_down(tmp_path: Path) -> None:
    env = cli_env(tmp_path, SCHEDCTL_DATABASE_URL="postgresql://u@127.0.0.1:1/none")
    names, err, seconds = _complete(env, "schedctl show ", 2)
    assert names == [] and err == ""
    assert seconds < 10
    # A bad URL, too: no suggestion, no message between the prompt and the cursor.
    env = cli_env(tmp_path, SCHEDCTL_DATABASE_URL="nonsense://")
    assert _complete(env, "schedctl show ", 2)[:2] == ([], "")
    # Completing never creates the embedded database.
    assert _complete(cli_env(tmp_path), "schedctl show ", 2)[:2] == ([], "")
    assert not (tmp_path / "data" / "schedctl.db").exists()


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_the_printed_scripts_are_valid(tmp_path: Path, shell: str) -> None:
    binary = shutil.which(shell)
    if binary is None:
        assert not os.environ.get("CI"), f"{shell} missing: .ci/run should have installed it"
        pytest.skip(f"{shell} not installed (apt-get install {shell})")
    script = ok(make_cli(tmp_path)("completion", shell)).out
    assert "_SCHEDCTL_COMPLETE" in script
    path = tmp_path / f"schedctl.{shell}"
    path.write_text(script)
    p = subprocess.run([binary, "-n", str(path)], capture_output=True, text=True, check=False)
    assert p.returncode == 0 and p.stderr == "", p.stderr


def test_bash_runs_the_script_and_gets_job_names(tmp_path: Path) -> None:
    cli = make_cli(tmp_path)
    ok(cli("add", "nightly-backup", "-s", "@daily", "--", "true"))
    script = tmp_path / "schedctl.bash"
    script.write_text(ok(cli("completion", "bash")).out)
    # What bash does on TAB: the completion function with COMP_WORDS and COMP_CWORD set.
    probe = (
        f"source {script}; COMP_WORDS=(schedctl enable nig); COMP_CWORD=2; "
        "_schedctl_completion schedctl; printf '%s\\n' \"${COMPREPLY[@]}\""
    )
    env = {**cli_env(tmp_path), "PATH": f"{BIN.parent}:/usr/bin:/bin"}
    p = subprocess.run(["bash", "--norc", "-c", probe], env=env, capture_output=True, text=True,
                       check=False)  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["nightly-backup"]


def test_an_unknown_shell_is_one_line(tmp_path: Path) -> None:
    result = make_cli(tmp_path)("completion", "tcsh")
    assert result.rc == 2 and result.err.count("\n") == 1
    assert "use one of bash, zsh, fish" in result.err
