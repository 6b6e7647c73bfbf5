"""Schema version bookkeeping without SQLAlchemy, shared by the store and the run path."""

from __future__ import annotations

from typing import NamedTuple

from schedctl.errors import SchemaError

# The newest migration this schedctl ships; a test pins it to Alembic's own head.
HEAD = "0012"


class SchemaStatus(NamedTuple):
    """Where a database's schema stands relative to this schedctl."""

    current: str | None
    head: str = HEAD

    @property
    def state(self) -> str:
        """Return `missing`, `current`, `behind` or `ahead`."""
        if self.current is None:
            return "missing"
        if self.current == self.head:
            return "current"
        return "behind" if self.current < self.head else "ahead"


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
