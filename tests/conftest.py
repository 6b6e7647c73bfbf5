"""Shared fixtures: the throwaway PostgreSQL server and per-test databases on both backends."""

from __future__ import annotations

import fcntl
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from cli_helpers import Cli, cli_env, make_cli, ok
from pgserver import PgServer, destroy, start_server

from schedctl.clock import SystemClock
from schedctl.config import DatabaseURL, parse_database_url
from schedctl.db import schema
from schedctl.db.repository import Repository, open_current


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    """One PostgreSQL server for the whole session."""
    server = start_server()
    try:
        yield server
    finally:
        destroy(server)


@pytest.fixture
def pg_url(pg: PgServer) -> str:
    """URL of a fresh, empty database on the session's server."""
    return pg.url(pg.create_database())


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a fresh SQLite file."""
    return f"sqlite:///{tmp_path / 'schedctl.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """An empty database on each backend in turn (the store contract runs on both)."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Cli, str, dict[str, str]]:
    """The installed binary on each backend: (cli, database URL, its environment).

    SQLite lives in the data directory, where `run` would create it.
    """
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'data' / 'schedctl.db'}"
        env = cli_env(tmp_path)
    else:
        url = str(request.getfixturevalue("pg_url"))
        env = cli_env(tmp_path, SCHEDCTL_DATABASE_URL=url)
    cli = make_cli(tmp_path, **{k: v for k, v in env.items() if k == "SCHEDCTL_DATABASE_URL"})
    ok(cli("db", "upgrade"))
    return cli, url, env


@pytest.fixture
def store(db_url: str) -> Iterator[Repository]:
    """A Repository with the schema at head, on each backend."""
    url: DatabaseURL = parse_database_url(db_url)
    schema.upgrade(url)
    s = open_current(url, SystemClock())
    try:
        yield s
    finally:
        s.close()


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    """Accept the parallel options of pyproject's addopts when xdist is off (`-p no:xdist`)."""
    if pluginmanager.has_plugin("xdist"):
        return
    group = parser.getgroup("xdist", "distributed testing (xdist is not loaded: runs serially)")
    # pytest keeps lowercase short options for itself; xdist registers its -n the same way.
    group._addoption("-n", "--numprocesses", dest="numprocesses", default=None)
    group.addoption("--dist", dest="dist", default="no")


@pytest.fixture
def machine_settings_turn() -> Iterator[None]:
    """Hold the machine-wide lock of the tests that write /opt, /usr/local/bin and /etc/schedctl.

    For a test that needs those as they were: no system install's settings showing through.
    """
    with open(Path(tempfile.gettempdir()) / "schedctl-test-system-install.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In a parallel run, hand out the tests that wait minutes of real time first.

    Started last, one of them would keep the run going long after the other workers finished.
    Every worker sorts the same way, as xdist requires; a serial run keeps the file order.
    """
    if hasattr(config, "workerinput"):
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def _oracle_counts() -> Counter[str]:
    counts = getattr(sys.modules.get("cron_oracle"), "COUNTS", None)
    return Counter(counts or {})


# What the workers compared, added up on the controller as each worker finishes.
_worker_counts: Counter[str] = Counter()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """In an xdist worker, hand this worker's oracle counts to the controller."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["oracle_counts"] = dict(_oracle_counts())


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """On the xdist controller, add up the oracle counts a finished worker sent."""
    _worker_counts.update(getattr(node, "workeroutput", {}).get("oracle_counts", {}))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Report how much the oracle tests compared (figures for the README and notes)."""
    counts = _oracle_counts()
    counts.update(_worker_counts)
    if counts:
        terminalreporter.write_line(
            "oracle counts: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        )
