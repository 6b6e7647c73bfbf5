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
