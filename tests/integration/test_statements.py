"""Every statement of queries.sql is accepted by each real database it is written for."""

from __future__ import annotations

from typing import Any

from schedctl.clock import SystemClock
from schedctl.db import queries
from schedctl.db.connector import PgConnector, SqliteConnector
from schedctl.db.repository import Repository


class _Nulls(dict[str, Any]):
    def __missing__(self, key: str) -> None:
        return None


def test_every_statement_prepares_on_its_database(store: Repository) -> None:
    conn = store.conn
    names = sorted(queries.names(store.backend))
    assert len(names) > 40
    for name in names:
        q = queries.get(name, store.backend)
        if isinstance(conn, PgConnector):
            # The server parses, resolves and types every parameter, executing nothing.
            conn.session.execute(f"PREPARE check_{name} AS {q.sql}")
            conn.session.execute(f"DEALLOCATE check_{name}")
        else:
            assert isinstance(conn, SqliteConnector)
            conn.conn.execute(f"EXPLAIN {q.sql}", _Nulls())


def test_the_repository_reads_what_it_writes(store: Repository) -> None:
    # Both drivers hand back the same Python values for the same stored job.
    from schedctl import services
    from schedctl.models import JobSpec

    spec = JobSpec(name="same", schedule="*/5 * * * *", timezone="Europe/Berlin",
                   command=("/bin/echo", "ü \"q\" %s $1 :x"), env=(("K", "v:%s"),),
                   tags=("a", "b"), description="it's :name -- not a comment")  # fmt: skip
    added = services.add_job(store, spec, SystemClock())
    assert store.load_job("same") == added
    assert [j for j in store.list_jobs() if j.name == "same"] == [added]
