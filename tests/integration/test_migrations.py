"""Migrations reproduce exactly the tables the code defines, on both backends."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from dbtools import engine_of

from schedctl.clock import SystemClock
from schedctl.config import parse_database_url
from schedctl.db import schema
from schedctl.db.repository import open_current, open_repository
from schedctl.db.schema import make_engine
from schedctl.db.tables import metadata
from schedctl.errors import SchemaError


def test_head_constant_is_alembic_head() -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(schema.MIGRATIONS))
    assert ScriptDirectory.from_config(cfg).get_current_head() == schema.HEAD


def test_upgrade_empty_database_gives_exactly_the_code_tables(db_url: str) -> None:
    store = open_repository(parse_database_url(db_url), SystemClock())
    assert store.schema_status().state == "missing"
    before, after = store.upgrade()
    assert (before, after) == (None, schema.HEAD)
    with engine_of(store).connect() as conn:
        inspector = sa.inspect(conn)
        assert set(inspector.get_table_names()) == set(metadata.tables) | {"alembic_version"}
        for table in metadata.sorted_tables:
            assert [c["name"] for c in inspector.get_columns(table.name)] == [
                c.name for c in table.columns
            ]
            indexes = inspector.get_indexes(table.name)
            # PostgreSQL also reports the index behind each unique constraint; compare the rest.
            assert {i["name"] for i in indexes if "duplicates_constraint" not in i} == {
                i.name for i in table.indexes
            }
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), metadata
        )
    assert diff == []
    assert store.upgrade() == (schema.HEAD, schema.HEAD)  # idempotent


def test_postgres_schema_missing_or_behind_says_what_to_run(pg_url: str) -> None:
    url = parse_database_url(pg_url)
    with pytest.raises(SchemaError, match="run `schedctl db upgrade`"):
        open_current(url, SystemClock())
    schema.upgrade(url)
    open_current(url, SystemClock()).close()
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0000'"))
    with pytest.raises(SchemaError, match="is at revision 0000, this schedctl needs"):
        open_current(url, SystemClock())
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(SchemaError, match="newer than this schedctl"):
        open_current(url, SystemClock())
    engine.dispose()


def test_sqlite_creates_its_own_schema(sqlite_url: str) -> None:
    store = open_current(parse_database_url(sqlite_url), SystemClock())
    assert store.schema_status().state == "current"


def test_run_counts_are_backfilled_from_history_then_kept_by_the_database(db_url: str) -> None:
    from datetime import UTC, datetime

    from alembic import command

    from schedctl.db.tables import run_counts, runs

    url = parse_database_url(db_url)
    engine = make_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(schema.MIGRATIONS))
    at = datetime(2026, 3, 1, tzinfo=UTC)

    def run(job: str, status: str) -> dict[str, object]:
        return {"job_id": None, "job_name": job, "trigger": "manual", "attempt": 1,
                "status": status, "host": "h", "claimed_at": at, "output_bytes": 0,
                "output_truncated": False, "schedctl_version": "0.0.9"}  # fmt: skip

    def counts() -> dict[tuple[str, str], int]:
        with engine.connect() as conn:
            return {(j, s): n for j, s, n in conn.execute(sa.select(run_counts))}

    try:
        with engine.begin() as conn:  # history written by the schedctl before revision 0004
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0003")
            conn.execute(sa.insert(runs), [run("a", "succeeded")] * 4 + [run("a", "failed")]
                         + [run("b", "lost"), run("b", "running"), run("b", "running")])  # fmt: skip
        schema.upgrade(url)
        assert counts() == {("a", "succeeded"): 4, ("a", "failed"): 1, ("b", "lost"): 1}
        with engine.begin() as conn:  # from now on the database counts as runs finish
            conn.execute(sa.insert(runs), [run("c", "skipped_overlap")])
            conn.execute(sa.update(runs).where(runs.c.status == "running").values(status="failed"))
            conn.execute(sa.update(runs).where(runs.c.job_name == "a").values(exit_code=0))
            conn.execute(sa.delete(runs))  # deletes (prune, purge) never count back
        assert counts() == {("a", "succeeded"): 4, ("a", "failed"): 1, ("b", "lost"): 1,
                            ("b", "failed"): 2, ("c", "skipped_overlap"): 1}  # fmt: skip
    finally:
        engine.dispose()
