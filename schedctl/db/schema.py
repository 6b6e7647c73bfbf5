"""Schema status through SQLAlchemy, and Alembic upgrades."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from schedctl.db.version import HEAD, SchemaStatus, require_current

MIGRATIONS = Path(__file__).parent / "migrations"
# Serialises concurrent `db upgrade` runs from several hosts (PostgreSQL advisory lock key).
UPGRADE_LOCK_KEY = 0x5C4ED0

__all__ = ["HEAD", "SchemaStatus", "current_revision", "require_current", "status", "upgrade"]


def current_revision(conn: Connection) -> str | None:
    """Return the stamped Alembic revision, or None when the schema was never created."""
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def status(conn: Connection) -> SchemaStatus:
    """Return the schema status seen through `conn`."""
    return SchemaStatus(current_revision(conn), HEAD)


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
