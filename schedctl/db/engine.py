"""Engine creation and translation of driver errors into one-line, actionable errors."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import Engine

from schedctl.config import DatabaseURL
from schedctl.db.dberrors import translate
from schedctl.db.rundb import PG_CONNECT_ARGS
from schedctl.errors import DatabaseUnavailableError

SQLITE_BUSY_TIMEOUT_MS = 10_000


def make_engine(url: DatabaseURL) -> Engine:
    """Create an engine for `url` with the session settings schedctl relies on."""
    if url.backend == "sqlite":
        assert url.sqlite_path is not None
        _prepare_sqlite_file(url)
        engine = sa.create_engine(url.sqlalchemy_url)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # The URL's keywords as libpq parsed them (config.py); schedctl's own on top.
    return sa.create_engine(
        url.sqlalchemy_url,
        connect_args={**PG_CONNECT_ARGS, "application_name": "schedctl"},
        pool_pre_ping=False,
    )


def _prepare_sqlite_file(url: DatabaseURL) -> None:
    path = url.sqlite_path
    assert path is not None
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            # Job definitions can hold secrets in env: create the file private.
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    except OSError as e:
        raise DatabaseUnavailableError(
            f"cannot create the SQLite database {path}: {e.strerror}; make its directory "
            f"writable or point SCHEDCTL_DATABASE_URL elsewhere"
        ) from None


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.close()


@contextmanager
def translated(url: DatabaseURL) -> Iterator[None]:
    """Turn connection-level driver errors inside the block into schedctl errors."""
    try:
        yield
    except (exc.OperationalError, exc.InterfaceError) as e:
        raise translate(e, url) from e
