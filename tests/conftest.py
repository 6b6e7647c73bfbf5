"""Shared fixtures: the throwaway PostgreSQL server and per-test databases on both backends."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

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


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Report how much the oracle tests compared (figures for the README and notes)."""
    counts = getattr(sys.modules.get("cron_oracle"), "COUNTS", None)
    if counts:
        terminalreporter.write_line(
            "oracle counts: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        )
