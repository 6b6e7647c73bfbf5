"""Test access to the database beside schedctl's own: SQLAlchemy engines as an independent view."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from schedctl.config import DatabaseURL, parse_database_url
from schedctl.db.repository import Repository
from schedctl.db.schema import make_engine

_engines: dict[str, Engine] = {}


def engine_of(where: Repository | DatabaseURL | str) -> Engine:
    """Return a (cached) SQLAlchemy engine on the database of `where`."""
    if isinstance(where, Repository):
        url = where.url
    elif isinstance(where, str):
        url = parse_database_url(where)
    else:
        url = where
    if url.raw not in _engines:
        _engines[url.raw] = make_engine(url)
    return _engines[url.raw]
