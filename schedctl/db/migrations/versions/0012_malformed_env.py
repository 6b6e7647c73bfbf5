"""The change log records a change to a job whose stored env is not an object.

A row written by hand (or restored) with env of another JSON type made every later update or
delete of that job fail inside the change-log trigger, so `schedctl edit` and `schedctl remove`
could not repair it. Such an env counts as empty for the log's list of keys.

Revision ID: 0012
Revises: 0011
"""

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_PG_ENV_KEYS = """
CREATE OR REPLACE FUNCTION __S__.schedctl_env_diff(old_env jsonb, new_env jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
SELECT jsonb_build_object(
    'added', (SELECT coalesce(jsonb_agg(k ORDER BY k), '[]') FROM jsonb_object_keys(n) k
              WHERE NOT o ? k),
    'removed', (SELECT coalesce(jsonb_agg(k ORDER BY k), '[]') FROM jsonb_object_keys(o) k
                WHERE NOT n ? k),
    'changed', (SELECT coalesce(jsonb_agg(k ORDER BY k), '[]') FROM jsonb_object_keys(n) k
                WHERE o ? k AND o -> k IS DISTINCT FROM n -> k))
FROM (SELECT CASE WHEN jsonb_typeof(old_env) = 'object' THEN old_env ELSE '{}' END AS o,
             CASE WHEN jsonb_typeof(new_env) = 'object' THEN new_env ELSE '{}' END AS n) env
$$
"""


def _migration(file: str) -> ModuleType:
    """Load an earlier migration, whose texts this one reuses."""
    path = Path(__file__).with_name(file)
    spec = importlib.util.spec_from_file_location(f"schedctl_migration_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        schema = _migration("0010_audit_hardening.py")._pg_schema()
        op.execute(_PG_ENV_KEYS.replace("__S__", schema))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        schema = _migration("0010_audit_hardening.py")._pg_schema()
        old = _migration("0007_change_log.py")._PG_ENV_KEYS
        new_head = f"CREATE OR REPLACE FUNCTION {schema}.schedctl_env_diff"
        op.execute(old.replace("CREATE FUNCTION schedctl_env_diff", new_head, 1))
