"""What the everyday commands load at start-up: only what the command being run needs.

Each is a whole process; most of a short command's time is importing. `run` and `check` have
their own checks in test_run.py and test_reports_cli.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import BIN, Cli, ok

# The schema declaration and migrations are the only users of these; no command that reads
# or prints needs them.
ORM_AND_DRIVER = {"sqlalchemy", "alembic", "psycopg", "psycopg_binary"}
# What other commands use: the daemon and its HTTP server, deployment, rendering, the
# schema commands.
OTHER_COMMANDS = {
    "schedctl.cli.daemon", "schedctl.daemon", "http.server", "schedctl.cli.deploy",
    "schedctl.deploy", "schedctl.render", "schedctl.hostfiles", "schedctl.cli.db",
    "schedctl.db.schema", "schedctl.cli.quickstart",
}  # fmt: skip
# Modules loaded, counting Python's own start-up: `import psycopg` alone loads about 270 and
# these commands loaded as many; the command-line framework (click, Typer) takes about 150.
MODULE_BUDGET = 200

COMMANDS = {
    "list": ["list"],
    "show": ["show", "lean"],
    "history": ["history", "lean"],
    "report": ["report"],
    "metrics": ["metrics"],
    "logs": ["logs", "{run_id}"],
    "next": ["next", "lean"],
}


def imported(env: dict[str, str], *args: str) -> list[str]:
    """Run the installed binary under `python -X importtime`; return the modules it loaded."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", str(BIN), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line][
        1:  # the heading
    ]


@pytest.fixture
def history(backend: tuple[Cli, str, dict[str, str]]) -> tuple[str, dict[str, str], str]:
    """A job with a run: (database URL, environment, the run's id)."""
    cli, url, env = backend
    ok(cli("add", "lean", "-s", "@daily", "--", "echo", "hi"))
    ok(cli("run", "lean", "--now"))
    found = re.search(r'"id": (\d+)', ok(cli("history", "lean", "--json")).out)
    assert found
    return url, env, found.group(1)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_command_loads_only_what_it_uses(
    history: tuple[str, dict[str, str], str], command: str
) -> None:
    url, env, run_id = history
    modules = imported(env, *(a.format(run_id=run_id) for a in COMMANDS[command]))
    names = set(modules)
    assert {m for m in names if m.split(".")[0] in ORM_AND_DRIVER} == set()
    assert {m for m in names if m in OTHER_COMMANDS or m.startswith("schedctl.render.")} == set()
    # Piped, a table or a list of instants is written without rich.
    assert {m for m in names if m.split(".")[0] == "rich"} == set()
    # One database driver, the one of the URL.
    assert ("schedctl.db.libpq" in names) == url.startswith("postgresql")
    assert ("sqlite3" in names) == url.startswith("sqlite")
    assert "schedctl.db.repository" in names  # the measurement saw the command read
    assert len(modules) <= MODULE_BUDGET, f"{len(modules)} modules loaded"


def test_version_loads_no_command(backend: tuple[Cli, str, dict[str, str]]) -> None:
    _, _, env = backend
    names = set(imported(env, "--version"))
    assert {m for m in names if m.startswith("schedctl.cli.") and m != "schedctl.cli.app"} == {
        "schedctl.cli.context"
    }
    assert {"schedctl.db.repository", "schedctl.services", "rich"} & names == set()


def test_collector_is_back_on_when_the_command_runs(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    # It is off while the framework and the command load; a long `daemon` or `prune` needs it.
    _, _, env = backend
    probe = (
        "import functools, gc, sys\n"
        "import schedctl.cli.jobs as jobs\n"
        "real = jobs.list_\n"
        "@functools.wraps(real)\n"
        "def spy(*a, **k):\n"
        "    print('collector on:', gc.isenabled(), file=sys.stderr)\n"
        "    return real(*a, **k)\n"
        "jobs.list_ = spy\n"
        "from schedctl.entry import main\n"
        "sys.exit(main(['list']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env=env,
        cwd=tmp_path,  # the installed package, not a checkout in the working directory
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "collector on: True" in done.stderr
