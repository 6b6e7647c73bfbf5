"""Signed job definitions, and hosts' refusals of jobs they will not run.

The change log (0007, 0008) records the signer of a change that wrote a signature; the key's
fingerprint, like the signature, signs a definition rather than defining it.

Revision ID: 0009
Revises: 0008
"""

import importlib.util
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _migration(file: str) -> ModuleType:
    """Load an earlier migration, whose trigger texts this one extends."""
    path = Path(__file__).with_name(file)
    spec = importlib.util.spec_from_file_location(f"schedctl_migration_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _change_log() -> ModuleType:
    """Load migration 0007: the change log's PostgreSQL functions."""
    return _migration("0007_change_log.py")


def _secrets() -> ModuleType:
    """Load migration 0008: the change log's SQLite triggers as they stand, with secrets."""
    return _migration("0008_secrets.py")


_NOT_DEFINITION = (
    "'{id,created_at,updated_at,revision,signature,signer,signed_at,signing_key}'::text[]"
)


def _pg_functions(m: ModuleType, not_definition: str) -> list[str]:
    return [
        text.replace(m._NOT_DEFINITION, not_definition).replace(
            "CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1
        )
        for text in (m._PG_REVISION, m._PG_AUDIT)
    ]


def _sqlite_columns(m: ModuleType) -> tuple[str, ...]:
    return (*m._BEFORE, "secrets", "secret_env")


def _sqlite_triggers(m: ModuleType) -> list[str]:
    """Return 0008's insert and update triggers, recording the signer of a signed change."""
    insert = (
        "INSERT INTO job_audit (job_id, job_name, action, at, revision, signer, changes) VALUES "
    )
    columns = _sqlite_columns(m)
    return [
        f"CREATE TRIGGER tr_jobs_audit_insert AFTER INSERT ON jobs BEGIN {insert}"
        f"(NEW.id, NEW.name, 'insert', {m._NOW}, NEW.revision, NEW.signer, "
        f"{m._definition('NEW', columns)}); END",
        "CREATE TRIGGER tr_jobs_audit_update AFTER UPDATE ON jobs WHEN "
        + " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in columns)
        + " BEGIN UPDATE jobs SET revision = OLD.revision + 1"
        " WHERE id = NEW.id AND NEW.revision = OLD.revision; "
        f"{insert}(NEW.id, NEW.name, 'update', {m._NOW},"
        " (SELECT revision FROM jobs WHERE id = NEW.id),"
        " CASE WHEN NEW.signature IS NOT OLD.signature THEN NEW.signer END,"
        f" {m._diff(columns)}); END",
    ]


def upgrade() -> None:
    # Existing jobs stay unsigned: hosts that require signatures refuse them until signed.
    op.add_column("jobs", sa.Column("signature", sa.Text, nullable=True))
    op.add_column("jobs", sa.Column("signer", sa.Text, nullable=True))
    op.add_column("jobs", sa.Column("signing_key", sa.Text, nullable=True))
    op.create_table(
        "refusals",
        sa.Column(
            "job_id",
            sa.Integer,
            sa.ForeignKey("jobs.id", ondelete="CASCADE", name="fk_refusals_job_id"),
            nullable=False,
        ),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("job_name", sa.String(63), nullable=False),
        sa.Column("job_revision", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("slot", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("job_id", "host", name="pk_refusals"),
        sa.CheckConstraint("kind IN ('signature', 'policy')", name="ck_kind"),
    )
    if op.get_bind().dialect.name == "postgresql":
        for text in _pg_functions(_change_log(), _NOT_DEFINITION):
            op.execute(text)
    else:
        op.execute("DROP TRIGGER tr_jobs_audit_insert")
        op.execute("DROP TRIGGER tr_jobs_audit_update")
        for ddl in _sqlite_triggers(_secrets()):
            op.execute(ddl)


def downgrade() -> None:
    op.drop_table("refusals")
    if op.get_bind().dialect.name == "postgresql":
        m = _change_log()
        for text in _pg_functions(m, m._NOT_DEFINITION):
            op.execute(text)
        for column in ("signing_key", "signer", "signature"):
            op.drop_column("jobs", column)
        return
    # Rebuilding the table drops its triggers: 0008's come back afterwards.
    for name in ("insert", "update", "delete"):
        op.execute(f"DROP TRIGGER IF EXISTS tr_jobs_audit_{name}")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("signing_key")
        batch.drop_column("signer")
        batch.drop_column("signature")
    s = _secrets()
    for ddl in s._sqlite_triggers(_sqlite_columns(s)):
        op.execute(ddl)
