"""The grant plan covers every table, sequence and role kind, so none can be forgotten."""

from __future__ import annotations

import sqlalchemy as sa

from schedctl.db import grants, tables


def test_the_grant_plan_names_every_table_of_tables_py() -> None:
    # A table added later without a decision for each role fails here, not in production.
    assert set(grants.PLAN) == set(tables.metadata.tables) | {"alembic_version"}
    for table, kinds in grants.PLAN.items():
        assert set(kinds) == set(grants.ROLE_KINDS), table


def test_every_serial_id_has_its_sequence_granted_to_whoever_inserts() -> None:
    serial = {
        f"{t.name}_id_seq"
        for t in tables.metadata.tables.values()
        for c in t.primary_key.columns
        if c.autoincrement is True
        or (
            c.autoincrement == "auto"
            and len(t.primary_key) == 1
            and isinstance(c.type, sa.Integer)
            and not c.foreign_keys
        )
    }
    assert serial == {s for s in grants.SEQUENCES}
    for seq, users in grants.SEQUENCES.items():
        table = seq.removesuffix("_id_seq")
        for kind in users:
            assert "INSERT" in grants.PLAN[table][kind], (seq, kind)
    for table, plan in grants.PLAN.items():
        for kind, privileges in plan.items():
            if "INSERT" in privileges and f"{table}_id_seq" in serial:
                assert kind in grants.SEQUENCES[f"{table}_id_seq"], (table, kind)


def test_a_refused_statement_names_the_role_kind_that_may() -> None:
    assert grants.needed_role("UPDATE jobs SET x = 1") == ("change jobs", "admin")
    assert grants.needed_role("INSERT INTO runs (a) VALUES (1)") == ("record runs", "runner")
    assert grants.needed_role("WITH d AS (SELECT 1) UPDATE notifications SET a = 1")[1] == (
        "runner"
    )
    assert grants.needed_role("SELECT 1 FROM jobs") == ("read schedctl's tables", "reader")
