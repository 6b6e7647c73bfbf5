"""The advice given for a server that keeps refusing connections."""

from __future__ import annotations

import pytest

from schedctl.config import parse_database_url
from schedctl.db.dberrors import busy_error, refused_as_busy

URL = parse_database_url("postgresql://u:pw@127.0.0.1:5432/db")


@pytest.mark.parametrize(
    ("server_says", "fix"),
    [
        ("the database system is shutting down", "the server is shutting down"),
        ("the database system is starting up", "the server is starting up"),
        ("the database system is not yet accepting connections", "replaying its log"),
        ("the database system is in recovery mode", "recovering after a crash"),
        ("the database system is not accepting connections", "hot_standby = off"),
    ],
)
def test_a_server_not_open_is_not_blamed_on_connection_slots(server_says: str, fix: str) -> None:
    line = refused_as_busy(Exception(f"connection failed: FATAL:  {server_says}"))
    assert line == server_says
    text = str(busy_error(URL, 7, 5.2, line))
    assert fix in text
    assert "max_connections" not in text and "PgBouncer" not in text
    assert text.startswith("the database at postgresql://u:***@127.0.0.1:5432/db refused 7 ")


def test_a_full_server_is_still_blamed_on_connection_slots() -> None:
    line = refused_as_busy(Exception("FATAL:  sorry, too many clients already"))
    assert line is not None
    assert "raise its max_connections" in str(busy_error(URL, 3, 5, line))
