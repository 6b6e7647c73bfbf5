"""Least-privilege roles on PostgreSQL: what the admin, runner and reader roles may do.

The plan is data: a test holds it to every table in tables.py, so a new table cannot be left
out. `schedctl db grant` turns it into SQL (schema.py runs it); the refusal of a statement a
role may not run names the role it needs (dberrors.py, through `needed_role`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ROLE_KINDS = ("admin", "runner", "reader")

_ALL = "SELECT, INSERT, UPDATE, DELETE"

# What a runner writes of a run: the run path's claim, start, heartbeat, finish, spooled
# result, reconciliation and re-owning. Never its job, slot, host, attempt or claim time.
RUN_UPDATE_COLUMNS = (
    "status",
    "exit_code",
    "signal",
    "started_at",
    "finished_at",
    "heartbeat_at",
    "duration_seconds",
    "output_tail",
    "output_bytes",
    "output_truncated",
    "db_backend_pid",
)
# What a new notification is given, by the trigger on runs or `notify` adding a missed slot.
NOTIFICATION_INSERT_COLUMNS = (
    "job_id",
    "job_name",
    "run_id",
    "slot",
    "event",
    "target",
    "state",
    "attempts",
    "created_at",
    "next_attempt_at",
)
# What the delivery step writes of a notification: its claim and its outcome.
NOTIFICATION_UPDATE_COLUMNS = (
    "state",
    "attempts",
    "next_attempt_at",
    "claimed_by",
    "claimed_until",
    "done_at",
    "last_error",
)

# Table: privileges of each role kind ("" = none). Column lists are GRANT syntax.
PLAN: dict[str, dict[str, str]] = {
    "alembic_version": {"admin": "SELECT", "runner": "SELECT", "reader": "SELECT"},
    # Only operators change what hosts run.
    "jobs": {"admin": _ALL, "runner": "SELECT", "reader": "SELECT"},
    "job_changes": {"admin": _ALL, "runner": "SELECT", "reader": "SELECT"},
    # The change log (`history --changes`): written only by its trigger, as the owner, so no
    # role (an admin included) can forge or erase what it records. A host reads no more there
    # than `jobs` shows it: it may run the reader's commands.
    "job_audit": {"admin": "SELECT", "runner": "SELECT", "reader": "SELECT"},
    "prune_marks": {"admin": _ALL, "runner": "SELECT", "reader": "SELECT"},
    # A runner claims and records runs but deletes none; row security keeps it (and every
    # other role but the owner) off finished runs.
    "runs": {
        "admin": _ALL,
        "runner": f"SELECT, INSERT, UPDATE ({', '.join(RUN_UPDATE_COLUMNS)})",
        "reader": "SELECT",
    },
    # Written only by the counting trigger, which runs as the tables' owner (SECURITY DEFINER).
    "run_counts": {"admin": "SELECT", "runner": "SELECT", "reader": "SELECT"},
    # The outbox: rows come from the trigger on runs (as the role finishing the run) and from
    # `notify` finding missed slots; the delivery step claims, settles and tidies them. Row
    # security (below) holds every new row to a target its job lists and keeps pending rows.
    "notifications": {
        "admin": _ALL,
        "runner": (
            f"SELECT, INSERT ({', '.join(NOTIFICATION_INSERT_COLUMNS)}), "
            f"UPDATE ({', '.join(NOTIFICATION_UPDATE_COLUMNS)}), DELETE"
        ),
        "reader": "SELECT",
    },
    # Hosts register themselves; only operators forget one.
    "hosts": {"admin": _ALL, "runner": "SELECT, INSERT, UPDATE", "reader": "SELECT"},
    # A host records the jobs it refuses to run (signature, host policy) and clears its own
    # refusal once it would run the job; `check` reads them.
    "refusals": {"admin": _ALL, "runner": "SELECT, INSERT, UPDATE, DELETE", "reader": "SELECT"},
}

# Sequences behind the serial ids: whoever inserts rows draws from them.
SEQUENCES: dict[str, tuple[str, ...]] = {
    "jobs_id_seq": ("admin",),
    "job_changes_id_seq": ("admin",),
    "runs_id_seq": ("admin", "runner"),
    "notifications_id_seq": ("admin", "runner"),
    "job_audit_id_seq": (),  # only the change log's trigger inserts, as the owner
}

# Trigger functions that write tables the invoking role may not: they run as their owner.
# (schedctl_audit_job(), the change log's, is created SECURITY DEFINER by its migration.)
# Their bodies name every relation by its schema (migration 0010).
DEFINER_FUNCTIONS = ("schedctl_count_run()",)

# Row security on runs, for every role but the owner (who bypasses it): anyone granted it may
# read, claim (a new row is `running`) and delete; updates touch only unfinished rows, a
# `lost` one included, since a runner cut off from the database flushes its real result
# over it. Table grants still decide who may do each of these at all.
POLICIES = (
    ("schedctl_runs_read", "FOR SELECT USING (true)"),
    ("schedctl_runs_claim", "FOR INSERT WITH CHECK (status = 'running' AND finished_at IS NULL)"),
    (
        "schedctl_runs_unfinished",
        "FOR UPDATE USING (status IN ('running', 'lost')) WITH CHECK (true)",
    ),
    ("schedctl_runs_delete", "FOR DELETE USING (true)"),
)
# Row security on the outbox, for every role but the owner: a new row is a pending, untried
# notification to a target its job lists (what the trigger on runs and `notify` add), so
# whoever may add rows cannot choose where hosts deliver; only settled rows are deleted, so
# no alert is made to vanish before it is tried. Hosts check the target again at delivery.
NOTIFICATION_POLICIES = (
    ("schedctl_notifications_read", "FOR SELECT USING (true)"),
    (
        "schedctl_notifications_add",
        "FOR INSERT WITH CHECK (state = 'pending' AND attempts = 0"
        " AND event IN ('failure', 'recovery', 'missed') AND EXISTS (SELECT 1 FROM jobs j"
        " WHERE j.id = notifications.job_id"
        " AND j.notify @> jsonb_build_array(notifications.target)))",
    ),
    ("schedctl_notifications_settle", "FOR UPDATE USING (true) WITH CHECK (true)"),
    ("schedctl_notifications_tidy", "FOR DELETE USING (state <> 'pending')"),
)


def quote_ident(name: str) -> str:
    """Quote a role name as PostgreSQL does for identifiers."""
    return '"' + name.replace('"', '""') + '"'


def login_hint(role: str) -> str:
    """Say how to let a role created without a login connect (no password on a command line)."""
    return (
        f"to connect as it, give it a login in psql: ALTER ROLE {quote_ident(role)} LOGIN; "
        f"then \\password {quote_ident(role)}"
    )


@dataclass(frozen=True)
class Grant:
    """Which role gets which kind; `create` lists the roles not there yet."""

    roles: dict[str, str]  # kind -> role name
    schema: str
    create: tuple[str, ...] = ()


def statements(grant: Grant) -> list[str]:
    """Return the SQL that gives each role exactly its kind's privileges, idempotently."""
    sql = [f"CREATE ROLE {quote_ident(r)} NOLOGIN" for r in grant.create]
    schema = quote_ident(grant.schema)
    tables = [t if t in _PLAIN else quote_ident(t) for t in PLAN]
    for kind, role in grant.roles.items():
        who = quote_ident(role)
        sql.append(f"GRANT USAGE ON SCHEMA {schema} TO {who}")
        # What the role had before is taken back first: it ends with its kind's grants alone.
        sql.append(f"REVOKE ALL ON {', '.join(tables)} FROM {who}")
        for table, privileges in PLAN.items():
            if privileges[kind]:
                sql.append(f"GRANT {privileges[kind]} ON {table} TO {who}")
        sql.append(f"REVOKE ALL ON SEQUENCE {', '.join(SEQUENCES)} FROM {who}")
        seqs = [s for s, kinds in SEQUENCES.items() if kind in kinds]
        if seqs:
            sql.append(f"GRANT USAGE ON SEQUENCE {', '.join(seqs)} TO {who}")
    for function in DEFINER_FUNCTIONS:
        # A fixed search_path: the function runs with the owner's rights, so it must not
        # find a caller's table of the same name first (pg_temp comes first unless named).
        sql.append(
            f"ALTER FUNCTION {schema}.{function} SECURITY DEFINER"
            " SET search_path = pg_catalog, pg_temp"
        )
    for table, policies in (("runs", POLICIES), ("notifications", NOTIFICATION_POLICIES)):
        for name, rule in policies:
            sql.append(f"DROP POLICY IF EXISTS {name} ON {table}")
            sql.append(f"CREATE POLICY {name} ON {table} {rule}")
        sql.append(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    return sql


_PLAIN = frozenset(PLAN)

# What a statement does, by its verb and table, and the role kind it takes: for the one line
# that says why a role was refused.
# (`FOR UPDATE` locks rows it reads: no write.)
_WRITE = re.compile(r"(?<!FOR )\b(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(\w+)", re.IGNORECASE)
_NEEDS: dict[tuple[str, str], tuple[str, str]] = {
    ("insert", "jobs"): ("change jobs", "admin"),
    ("update", "jobs"): ("change jobs", "admin"),
    ("delete", "jobs"): ("change jobs", "admin"),
    ("insert", "job_changes"): ("change jobs", "admin"),
    ("insert", "prune_marks"): ("prune runs", "admin"),
    ("delete", "runs"): ("delete runs", "admin"),
    ("insert", "runs"): ("record runs", "runner"),
    ("update", "runs"): ("record runs", "runner"),
    ("insert", "hosts"): ("register hosts", "runner"),
    ("delete", "hosts"): ("forget hosts", "admin"),
    ("insert", "notifications"): ("deliver notifications", "runner"),
    ("update", "notifications"): ("deliver notifications", "runner"),
    ("delete", "notifications"): ("deliver notifications", "runner"),
    ("insert", "refusals"): ("record refusals of jobs", "runner"),
    ("update", "refusals"): ("record refusals of jobs", "runner"),
    ("delete", "refusals"): ("record refusals of jobs", "runner"),
}


def needed_role(sql: str) -> tuple[str, str]:
    """Return (what the statement does, the role kind that may) for a statement's text."""
    found = _WRITE.search(sql)
    if found is None:
        return "read schedctl's tables", "reader"
    verb = found.group(1).split()[0].lower()
    return _NEEDS.get((verb, found.group(2).lower()), ("write schedctl's tables", "admin"))
