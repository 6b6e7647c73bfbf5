"""`schedctl db grant`: admin, runner and reader roles on a real PostgreSQL, as each role sees it.

Three LOGIN roles with passwords on a fresh database, granted by the schema owner; then the
installed binary connects as each: every command the role needs works, the rest is refused
with one line naming the role and what to do (exit 78), and nothing is half-written.
"""

from __future__ import annotations

import json
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from cli_helpers import BIN, Cli, age_runs, cli_env, make_cli, ok, one_line_error, run_rows
from pgserver import PgServer

from schedctl.db import queries
from schedctl.db.grants import PLAN, ROLE_KINDS, needed_role

REFUSED = 78  # ExitCode.CONFIG: a role without the privileges a command needs


@dataclass
class Roles:
    owner_url: str
    names: dict[str, str]  # kind -> role name
    urls: dict[str, str]  # kind -> URL that logs in as that role
    tmp: Path

    def cli(self, kind: str, **env: str) -> Cli:
        """The installed binary as `kind`, with a data directory (a host) of its own."""
        home = self.tmp / kind
        home.mkdir(exist_ok=True)
        return make_cli(home, SCHEDCTL_DATABASE_URL=self.urls[kind], **env)

    def owner(self) -> Cli:
        home = self.tmp / "owner"
        home.mkdir(exist_ok=True)
        return make_cli(home, SCHEDCTL_DATABASE_URL=self.owner_url)


def login_roles(pg: PgServer, pg_url: str) -> tuple[dict[str, str], dict[str, str]]:
    """Create one LOGIN role with a password per kind, named uniquely for this test."""
    tag = secrets.token_hex(4)
    names = {kind: f"sc_{kind}_{tag}" for kind in ROLE_KINDS}
    dbname = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for kind, name in names.items():
            conn.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{kind}-pw-{tag}'")
    urls = {
        kind: f"postgresql://{name}:{kind}-pw-{tag}@127.0.0.1:{pg.port}/{dbname}"
        for kind, name in names.items()
    }
    return names, urls


def drop_roles(pg_url: str, names: list[str]) -> None:
    """Roles outlive the database: drop this test's (what they hold in it first)."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for name in names:
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone():
                conn.execute(f"DROP OWNED BY {name}")
                conn.execute(f"DROP ROLE {name}")


@pytest.fixture
def roles(pg: PgServer, pg_url: str, tmp_path: Path) -> Iterator[Roles]:
    names, urls = login_roles(pg, pg_url)
    granted = Roles(pg_url, names, urls, tmp_path)
    owner = granted.owner()
    ok(owner("db", "upgrade"))
    ok(owner("db", "grant", *(f"--{kind}={name}" for kind, name in names.items())))
    try:
        yield granted
    finally:
        drop_roles(pg_url, list(names.values()))


def grants_state(url: str) -> list[tuple[object, ...]]:
    """Every privilege, column privilege, policy and function setting in the schema."""
    from schedctl.db.schema import _FUNCTIONS_STATE, _GRANTS_STATE

    with psycopg.connect(url) as conn:
        tables = conn.execute(
            _GRANTS_STATE.replace(":schema", "%(schema)s"), {"schema": "public"}
        ).fetchall()
        functions = conn.execute(
            _FUNCTIONS_STATE.replace(":schema", "%(schema)s"), {"schema": "public"}
        ).fetchall()
        roles = conn.execute("SELECT rolname FROM pg_roles ORDER BY rolname").fetchall()
    return [*tables, *functions, *roles]


def job_row(url: str, name: str) -> tuple[object, ...]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT command, run_as_user, revision, description, enabled FROM jobs WHERE name = %s",
            (name,),
        ).fetchone()
    assert row is not None, name
    return tuple(row)


def refused(result_cli: Cli, args: tuple[str, ...], role: str, fragment: str) -> None:
    result = result_cli(*args)
    one_line_error(result, REFUSED, f"the database role '{role}' may not {fragment}")


# -- runner -----------------------------------------------------------------------------------


def test_a_runner_runs_records_registers_flushes_and_delivers_but_changes_no_job(
    roles: Roles, tmp_path: Path
) -> None:
    from test_spool import SPOOLED, claim_runs, spool_file

    admin = roles.cli("admin")
    hook = tmp_path / "page"
    hook.write_text(f"#!/bin/sh\ncat >> {tmp_path}/paged.json\n")
    hook.chmod(0o755)
    ok(admin("add", "fine", "-s", "@daily", "--shell", "--", "echo fine"))
    ok(admin("add", "broken", "-s", "@daily", "--notify", f"exec:{hook}", "--shell", "--",
             "echo broke; exit 3"))  # fmt: skip
    host = "runner-host-" + secrets.token_hex(3)
    runner = roles.cli("runner", SCHEDCTL_HOST=host)

    # A real run to success and one to failure, recorded as each ended.
    assert ok(runner("run", "fine", "--now")).rc == 0
    assert runner("run", "broken", "--now").rc == 3
    statuses = {r["job_name"]: (r["status"], r["exit_code"], r["host"]) for r in
                run_rows(roles.owner_url)}  # fmt: skip
    assert statuses == {"fine": ("succeeded", 0, host), "broken": ("failed", 3, host)}

    # The failure's notification, written by the trigger as the runner, is delivered by it.
    ok(runner("notify"))
    with psycopg.connect(roles.owner_url) as conn:
        outbox = conn.execute("SELECT event, state FROM notifications").fetchall()
    assert outbox == [("failure", "sent")]
    assert '"event": "failure"' in (tmp_path / "paged.json").read_text()

    # A result spooled while the database was away lands when the runner next connects.
    (run_id,) = claim_runs(roles.owner_url, "fine", 1)
    spool_file(tmp_path / "runner" / "data", run_id).chmod(0o600)
    ok(runner("notify"))
    (landed,) = [r for r in run_rows(roles.owner_url) if r["id"] == run_id]
    assert (landed["status"], landed["exit_code"], landed["output_tail"]) == (
        "failed",
        3,
        f"{SPOOLED}{run_id}",
    )
    assert list((tmp_path / "runner" / "data" / "spool").glob("run-*.json")) == []

    # sync registers the host as a cron host and writes its crontab.
    crontab = tmp_path / "cron.d" / "schedctl"
    crontab.parent.mkdir()
    ok(runner("sync", "crontab", "--file", str(crontab), "--cron-zone", "UTC"))
    assert "--at-slot fine\n" in crontab.read_text()
    seen = {h["name"]: h for h in json.loads(ok(roles.cli("reader")("hosts", "--json")).out)}
    assert seen[host]["scheduler"] == "cron", seen

    # Everything that changes what hosts run is refused, one line, nothing written.
    role = roles.names["runner"]
    before = {name: job_row(roles.owner_url, name) for name in ("fine", "broken")}
    refused(runner, ("add", "new", "-s", "@daily", "--", "true"), role, "change jobs")
    refused(runner, ("edit", "fine", "--", "id"), role, "change jobs")
    refused(runner, ("disable", "fine"), role, "change jobs")
    refused(runner, ("remove", "fine", "--yes"), role, "change jobs")
    refused(runner, ("remove", "broken", "--purge", "--yes"), role, "delete runs")
    refused(runner, ("hosts", "--forget", host), role, "forget hosts")
    # What the reader may run, a host may too (security.md): the change log and the counters.
    assert "broken" in ok(runner("history", "--changes")).out
    assert "schedctl_" in ok(runner("metrics")).out
    age_runs(roles.owner_url, "fine", 400 * 86400)
    refused(runner, ("prune", "--older-than", "1d", "--keep-failed", "1d"), role, "prune runs")
    assert {name: job_row(roles.owner_url, name) for name in before} == before
    assert len(run_rows(roles.owner_url)) == 3
    assert "new" not in ok(admin("list")).out


def test_a_runner_cannot_rewrite_jobs_or_finished_runs_in_sql(roles: Roles) -> None:
    admin, runner = roles.cli("admin"), roles.cli("runner")
    ok(admin("add", "target", "-s", "@daily", "--", "true"))
    ok(runner("run", "target", "--now"))
    before = job_row(roles.owner_url, "target")
    (finished,) = run_rows(roles.owner_url)
    with psycopg.connect(roles.urls["runner"], autocommit=True) as conn:
        for statement in (
            "UPDATE jobs SET command = '[\"id\"]', run_as_user = NULL",
            "INSERT INTO jobs (name) VALUES ('forged')",
            "DELETE FROM jobs",
            "DELETE FROM runs",
            "UPDATE runs SET job_name = 'other'",  # a column the run path never writes
            "INSERT INTO run_counts VALUES ('target', 'succeeded', 99)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
        # Row security: a finished run is out of reach, and no run is born finished.
        changed = conn.execute(
            "UPDATE runs SET status = 'failed', exit_code = 1 WHERE id = %s", (finished["id"],)
        )
        assert changed.rowcount == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute(
                "INSERT INTO runs (job_id, job_name, trigger, attempt, status, host, claimed_at,"
                " output_bytes, output_truncated, schedctl_version) SELECT id, name, 'manual',"
                " 1, 'succeeded', 'x', now(), 0, false, '0' FROM jobs"
            )
    assert job_row(roles.owner_url, "target") == before
    assert run_rows(roles.owner_url) == [finished]


def test_a_runner_runs_the_daemon(roles: Roles, tmp_path: Path) -> None:
    ok(roles.cli("admin")("add", "every", "-s", "* * * * *", "--", "true"))
    host = "daemon-host-" + secrets.token_hex(3)
    home = tmp_path / "runner"
    home.mkdir(exist_ok=True)
    env = cli_env(home, SCHEDCTL_DATABASE_URL=roles.urls["runner"], SCHEDCTL_HOST=host)
    daemon = subprocess.Popen(
        [str(BIN), "daemon"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        reader = roles.cli("reader")
        deadline = time.monotonic() + 30
        while True:
            hosts = {h["name"]: h for h in json.loads(ok(reader("hosts", "--json")).out)}
            if host in hosts:
                break
            assert daemon.poll() is None, daemon.communicate()
            assert time.monotonic() < deadline, "the daemon never registered"
            time.sleep(0.2)
        assert hosts[host]["scheduler"] == "daemon"
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=60)
    assert daemon.returncode == 0, err
    assert "Traceback" not in err


# -- reader -----------------------------------------------------------------------------------


def test_a_reader_reads_everything_and_writes_nothing(roles: Roles, tmp_path: Path) -> None:
    admin, runner, reader = roles.cli("admin"), roles.cli("runner"), roles.cli("reader")
    ok(admin("add", "seen", "-s", "@daily", "--shell", "--", "echo seen"))
    ok(runner("run", "seen", "--now"))
    for args in (
        ("list",),
        ("show", "seen"),
        ("history",),
        ("history", "seen"),
        ("history", "--changes"),
        ("logs", "seen"),
        ("report",),
        ("metrics",),
        ("upcoming",),
        ("hosts",),
        ("locks",),
        ("db", "status"),
    ):
        result = reader(*args)
        assert result.rc == 0, (args, result.err)
        assert "error" not in result.err, (args, result.err)
    assert "echo seen" in ok(reader("show", "seen")).out
    assert "seen" in ok(reader("logs", "seen")).out
    check = reader("check")
    assert check.rc == 0, (check.out, check.err)
    assert check.out.startswith("SCHEDCTL OK"), check.out

    role = roles.names["reader"]
    before = job_row(roles.owner_url, "seen")
    refused(reader, ("run", "seen", "--now"), role, "record runs")
    refused(reader, ("add", "new", "-s", "@daily", "--", "true"), role, "change jobs")
    refused(reader, ("edit", "seen", "--description", "x"), role, "change jobs")
    refused(reader, ("notify",), role, "deliver notifications")
    age_runs(roles.owner_url, "seen", 400 * 86400)
    refused(reader, ("prune", "--older-than", "1d"), role, "prune runs")
    assert job_row(roles.owner_url, "seen") == before
    assert len(run_rows(roles.owner_url)) == 1
    with (
        psycopg.connect(roles.urls["reader"], autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("UPDATE jobs SET enabled = false")


# -- admin ------------------------------------------------------------------------------------


def test_an_admin_operates_every_command(roles: Roles, tmp_path: Path) -> None:
    admin = roles.cli("admin")
    ok(admin("add", "op", "-s", "@daily", "--", "true"))
    ok(admin("edit", "op", "--description", "edited"))
    ok(admin("disable", "op"))
    ok(admin("enable", "op"))
    ok(admin("run", "op", "--now"))
    exported = tmp_path / "jobs.toml"
    exported.write_text(ok(admin("export")).out.replace("edited", "applied"))
    ok(admin("apply", "-f", str(exported)))
    crontab = tmp_path / "legacy.cron"
    crontab.write_text("15 3 * * * /usr/bin/true\n")
    ok(admin("import", "crontab", str(crontab)))
    age_runs(roles.owner_url, "op", 400 * 86400)
    ok(admin("prune", "--older-than", "1d", "--keep-failed", "1d"))
    assert run_rows(roles.owner_url) == []
    ok(admin("hosts", "--forget", next(iter(json.loads(ok(admin("hosts", "--json")).out)))["name"]))
    ok(admin("notify"))
    ok(admin("remove", "op", "--purge", "--yes"))
    assert "op" not in [j["name"] for j in json.loads(ok(admin("list", "--json")).out)]
    # The change log's trigger records each change as the admin role that made it.
    assert roles.names["admin"] in ok(admin("history", "--changes", "op")).out
    with psycopg.connect(roles.owner_url) as conn:
        recorded = conn.execute("SELECT DISTINCT db_role FROM job_audit").fetchall()
    assert recorded == [(roles.names["admin"],)]


# -- every statement, role by role ------------------------------------------------------------


def may(kind: str, sql: str) -> bool:
    """Whether `kind` may run `sql`: its own writes (admins: all), and reads of what it may read."""
    if kind != "admin" and needed_role(sql)[1] not in (kind, "reader"):
        return False
    return all("SELECT" in PLAN[t][kind] for t in PLAN if re.search(rf"\b{t}\b", sql))


def test_each_role_may_run_exactly_the_statements_of_its_kind(roles: Roles) -> None:
    """EXPLAIN checks privileges as running would: every named statement, as each role."""
    names = sorted(queries.names("postgresql"))
    for kind in ROLE_KINDS:
        allowed, denied = [], []
        with psycopg.connect(roles.urls[kind], autocommit=True) as conn:
            for name in names:
                q = queries.get(name, "postgresql")
                conn.execute(f"PREPARE s_{name} AS {q.sql}")
                nulls = ", ".join("NULL" for _ in q.params)
                try:
                    conn.execute(f"EXPLAIN EXECUTE s_{name}" + (f"({nulls})" if nulls else ""))
                    allowed.append(name)
                except psycopg.errors.InsufficientPrivilege:
                    denied.append(name)
                conn.execute(f"DEALLOCATE s_{name}")
        expected = {name for name in names if may(kind, queries.get(name, "postgresql").sql)}
        assert set(allowed) == expected, (kind, sorted(set(allowed) ^ expected))
        if kind != "admin":
            assert denied, kind


# -- the grant itself -------------------------------------------------------------------------


def test_db_grant_twice_changes_nothing_and_takes_back_what_is_extra(roles: Roles) -> None:
    owner = roles.owner()
    flags = [f"--{kind}={name}" for kind, name in roles.names.items()]
    before = grants_state(roles.owner_url)
    again = ok(owner("db", "grant", *flags))
    assert again.out.startswith("grants already in place"), again.out
    assert grants_state(roles.owner_url) == before
    runner = roles.names["runner"]
    with psycopg.connect(roles.owner_url, autocommit=True) as conn:
        conn.execute(f"GRANT ALL ON jobs TO {runner}")
    assert "granted" in ok(owner("db", "grant", "--runner", runner)).out
    assert grants_state(roles.owner_url) == before
    with (
        psycopg.connect(roles.urls["runner"], autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("UPDATE jobs SET enabled = false")


def test_db_grant_creates_missing_roles_without_login_and_dry_run_changes_nothing(
    pg_url: str, tmp_path: Path
) -> None:
    owner = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url)
    ok(owner("db", "upgrade"))
    name = "sc_new_" + secrets.token_hex(4)
    try:
        before = grants_state(pg_url)
        dry = ok(owner("db", "grant", "--runner", name, "--dry-run"))
        lines = dry.out.splitlines()
        assert lines[0] == f'CREATE ROLE "{name}" NOLOGIN;'
        assert f'GRANT SELECT ON jobs TO "{name}";' in lines
        assert "ALTER TABLE runs ENABLE ROW LEVEL SECURITY;" in lines
        assert grants_state(pg_url) == before

        made = ok(owner("db", "grant", "--runner", name))
        assert f"created role {name} without a login" in made.out
        assert f'ALTER ROLE "{name}" LOGIN' in made.out
        with psycopg.connect(pg_url) as conn:
            row = conn.execute(
                "SELECT rolcanlogin, has_table_privilege(%s, 'runs', 'INSERT'),"
                " has_table_privilege(%s, 'jobs', 'UPDATE') FROM pg_roles WHERE rolname = %s",
                (name, name, name),
            ).fetchone()
        assert row == (False, True, False)
    finally:
        drop_roles(pg_url, [name])


def test_db_grant_refuses_sqlite_no_role_the_owner_and_a_role_twice(
    pg_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    lite = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=sqlite_url)
    ok(lite("db", "upgrade"))
    one_line_error(lite("db", "grant", "--reader", "dash"), 78, "`db grant` needs PostgreSQL")
    owner = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url)
    one_line_error(owner("db", "grant"), 2, "give at least one of --admin")
    one_line_error(owner("db", "grant", "--admin", "a", "--reader", "a"), 2, "a role of its own")
    one_line_error(owner("db", "grant", "--reader", "x"), 5, "db upgrade")
    ok(owner("db", "upgrade"))
    with psycopg.connect(pg_url) as conn:
        me = conn.execute("SELECT current_user").fetchone()
    assert me is not None
    one_line_error(owner("db", "grant", "--reader", str(me[0])), 2, "owns schedctl's tables")


def test_a_role_that_may_not_grant_is_told_who_may(roles: Roles) -> None:
    one_line_error(
        roles.cli("admin")("db", "grant", "--reader", roles.names["reader"]),
        78,
        "run it as the owner of schedctl's tables",
    )
