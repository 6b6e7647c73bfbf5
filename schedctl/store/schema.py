"""Schema version checks and Alembic upgrades."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from schedctl.errors import SchemaError

# The newest migration this schedctl ships; a test pins it to Alembic's own head.
HEAD = "0001"
MIGRATIONS = Path(__file__).parent / "migrations"
# Serialises concurrent `db upgrade` runs from several hosts (PostgreSQL advisory lock key).
UPGRADE_LOCK_KEY = 0x5C4ED0


@dataclass(frozen=True)
class SchemaStatus:
    """Where a database's schema stands relative to this schedctl."""

    current: str | None
    head: str

    @property
    def state(self) -> str:
        """Return `missing`, `current`, `behind` or `ahead`."""
        if self.current is None:
            return "missing"
        if self.current == self.head:
            return "current"
        return "behind" if self.current < self.head else "ahead"


def current_revision(conn: Connection) -> str | None:
    """Return the stamped Alembic revision, or None when the schema was never created."""
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def status(conn: Connection) -> SchemaStatus:
    """Return the schema status seen through `conn`."""
    return SchemaStatus(current_revision(conn), HEAD)


def require_current(st: SchemaStatus) -> None:
    """Raise a SchemaError that says what to run unless the schema is at HEAD."""
    if st.state == "missing":
        raise SchemaError(
            "the database has no schedctl schema yet: run `schedctl db upgrade` "
            "(with the same --db / SCHEDCTL_DATABASE_URL)"
        )
    if st.state == "behind":
        raise SchemaError(
            f"the database schema is at revision {st.current}, this schedctl needs {st.head}: "
            f"run `schedctl db upgrade`"
        )
    if st.state == "ahead":
        raise SchemaError(
            f"the database schema revision {st.current} is newer than this schedctl "
            f"(knows up to {st.head}): upgrade schedctl on this host"
        )


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Migrate the database to HEAD; return (before, after) revisions."""
    from alembic import command
    from alembic.config import Config

    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": UPGRADE_LOCK_KEY})
        before = current_revision(conn)
        if before is not None and before > HEAD:
            require_current(SchemaStatus(before, HEAD))
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        after = current_revision(conn)
    return before, after or HEAD
