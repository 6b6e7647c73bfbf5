"""queries.sql: how it is read, and that schedctl sends no statement written anywhere else."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from schedctl.db import queries
from schedctl.models import FAILURE_STATUSES

PACKAGE = Path(queries.__file__).resolve().parent.parent
# Schema work stays on SQLAlchemy and Alembic, whose statements are theirs.
# DDL: the schema, and the grants of `db grant`, whose role names are identifiers, not parameters.
SCHEMA_MODULES = {"db/schema.py", "db/tables.py", "db/grants.py"}


def test_named_parameters_become_numbered_outside_quotes_comments_and_casts() -> None:
    sql = (
        "SELECT ':not', \"col:x\", a::int, :a, :b_2, :a -- :c\n"
        "FROM t WHERE x = 'it''s :d' AND y = :b_2"
    )
    text, names = queries.positional(sql)
    assert names == ("a", "b_2")
    assert text == (
        "SELECT ':not', \"col:x\", a::int, $1, $2, $1 -- :c\nFROM t WHERE x = 'it''s :d' AND y = $2"
    )


def test_entries_fragments_and_dialects() -> None:
    entries = queries.parse(
        "-- a comment\n"
        "-- fragment: cols\n"
        "a, b\n"
        "-- name: one\n"
        "-- what it does\n"
        "SELECT {cols} FROM t\n"
        "-- name: one [sqlite]\n"
        "SELECT 1\n"
    )
    assert entries == {("{cols}", None): "a, b", ("one", None): "SELECT {cols} FROM t",
                       ("one", "sqlite"): "SELECT 1"}  # fmt: skip
    with pytest.raises(queries.QueryFileError, match="twice"):
        queries.parse("-- name: x\nSELECT 1\n-- name: x\nSELECT 2\n")


def test_a_dialects_own_version_wins_and_fragments_are_expanded() -> None:
    pg = queries.get("load_job", "postgresql")
    assert "{" not in pg.sql and pg.params == ("name",) and "$1" in pg.sql
    assert queries.get("now", "postgresql").sql == "SELECT clock_timestamp()"
    with pytest.raises(KeyError):
        queries.get("now", "sqlite")  # SQLite's clock is the host's: no statement
    with pytest.raises(KeyError):
        queries.get("{job_columns}", "postgresql")  # a fragment is not a statement


def test_the_failure_fragment_is_the_models_failure_set() -> None:
    with open(queries.PATH, encoding="utf-8") as f:
        fragment = queries.parse(f.read())[("{failed}", None)]
    assert set(re.findall(r"'(\w+)'", fragment)) == FAILURE_STATUSES


def _statement_names_used() -> set[str]:
    """Return every statement name the package passes to a connector's run()."""
    used = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("run", "_q")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                used.add(node.args[0].value)
    return used


def test_every_statement_used_exists_and_every_statement_is_used() -> None:
    used = _statement_names_used() - {"run"}
    # Named by a variable in the repository (e.g. prune_count / prune_count_claimable).
    used |= {"prune_count", "prune_count_removed", "prune_count_claimable", "prune_delete",
             "prune_delete_removed", "history", "history_of_job"}  # fmt: skip
    defined = queries.names("postgresql") | queries.names("sqlite")
    assert used - defined == set()
    assert defined - used == set()


_SQL = re.compile(r"\b(SELECT\s+\S|INSERT INTO|UPDATE \w+ SET|DELETE FROM|CREATE \w|ALTER \w)")


def test_no_statement_is_written_outside_queries_sql() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in SCHEMA_MODULES or rel.startswith("db/migrations/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            text = node.value if isinstance(node, ast.Constant) else None
            if isinstance(text, str) and _SQL.search(text) and not text.startswith("PRAGMA"):
                found.append(f"{rel}: {text[:60]!r}")
    assert found == []


def test_only_plain_reads_count_as_reads() -> None:
    assert queries.reads_only("list_jobs") and queries.reads_only("load_job")
    assert not queries.reads_only("claim_slot")  # an INSERT
    assert not queries.reads_only("try_lock")  # a SELECT that takes a lock
    assert not queries.reads_only("unlock")
    assert not queries.reads_only("no_such_statement")
