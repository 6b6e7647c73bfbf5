"""Keep the canonical definition a signature covers, so what changed after signing is shown.

The column signs nothing and defines nothing: the change log and the revision trigger leave
it out, as they leave out the signature itself.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_FUNCTIONS = ("schedctl_job_revision", "schedctl_audit_job")
_BEFORE = "signing_key}'::text[]"
_AFTER = "signing_key,signed_definition}'::text[]"


def _patch_functions(old: str, new: str) -> None:
    """Rewrite the not-a-definition list in the functions as they stand in this database.

    Read back from the server rather than rebuilt from an earlier migration's text, so that
    whatever else a later release changed in them is kept.
    """
    bind = op.get_bind()
    for name in _FUNCTIONS:
        text = bind.execute(
            sa.text("SELECT pg_get_functiondef(to_regproc(:name))"), {"name": name}
        ).scalar()
        if text is None:
            continue
        if old not in text:
            raise RuntimeError(f"function {name} does not hold {old!r}: cannot update it")
        op.execute(sa.text(text.replace(old, new)))


def upgrade() -> None:
    # Signatures stored before this keep no signed text: `verify` says so.
    op.add_column("jobs", sa.Column("signed_definition", sa.Text, nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        _patch_functions(_BEFORE, _AFTER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _patch_functions(_AFTER, _BEFORE)
        op.drop_column("jobs", "signed_definition")
        return
    # SQLite drops the column in place (3.35+; no trigger names it) and keeps the triggers.
    # Rebuilding the table with its triggers in place failed at the final rename ("error in
    # trigger tr_runs_notify: no such table: main.jobs").
    op.execute("ALTER TABLE jobs DROP COLUMN signed_definition")
