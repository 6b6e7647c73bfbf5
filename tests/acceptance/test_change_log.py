"""Every change to a job is recorded, however it is made, and `history --changes` shows it."""

from __future__ import annotations

import json
import os
import pwd
import secrets
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cli_helpers import Cli, age_runs, make_cli, ok, one_line_error, run_rows
from pgserver import PgServer

Backend = tuple[Cli, str, dict[str, str]]
ME = pwd.getpwuid(os.geteuid()).pw_name


def changes(cli: Cli, *args: str) -> list[dict[str, Any]]:
    """Return `history --changes --json` (newest first)."""
    return list(json.loads(ok(cli("history", "--changes", "--json", *args)).out))


def revision(cli: Cli, job: str) -> int:
    return int(json.loads(ok(cli("show", job, "--json")).out)["revision"])


def test_every_command_records_who_when_what(backend: Backend, tmp_path: Path) -> None:
    cli, url, _ = backend
    ok(cli("add", "audited", "-s", "0 3 * * *", "--env", "TOKEN=s3cr3t-one", "--env", "KEEP=1",
           "--", "/bin/echo", "hi"))  # fmt: skip
    ok(cli("edit", "audited", "--schedule", "0 4 * * *", "--env", "TOKEN=s3cr3t-two",
           "--env", "NEW=x", "--user", "nobody", "--timeout", "5m"))  # fmt: skip
    ok(cli("disable", "audited"))
    ok(cli("enable", "audited"))
    text = ok(cli("export", "audited")).out.replace('"0 4 * * *"', '"0 5 * * *"')
    path = tmp_path / "jobs.toml"
    path.write_text(text)
    ok(cli("apply", "-f", str(path)))
    ok(cli("remove", "audited", "--yes"))

    found = changes(cli, "audited")
    assert [c["action"] for c in found] == [
        "delete", "update", "update", "update", "update", "create",
    ]  # fmt: skip
    assert [c["revision"] for c in found] == [5, 5, 4, 3, 2, 1]
    assert all(c["job"] == "audited" and c["os_user"] == ME for c in found)
    if url.startswith("postgresql"):
        # The role the session used (the suite's superuser), and schedctl's own client name.
        assert {c["db_role"] for c in found} == {"postgres"}
        assert {c["who"] for c in found} == {"postgres"}
        assert all(c["application_name"].startswith("schedctl") for c in found)
        assert {c["client_addr"] for c in found} == {"127.0.0.1"}
    else:
        assert {c["who"] for c in found} == {ME}
        assert {c["db_role"] for c in found} == {None}
    assert {c["signer_claimed"] for c in found} == {None}

    removed, applied, enabled, disabled, edited, created = found
    assert created["definition"]["command"] == ["/bin/echo", "hi"]
    assert created["definition"]["schedule"] == "0 3 * * *"
    assert created["definition"]["enabled"] is True
    assert created["definition"]["env"] == ["KEEP", "TOKEN"]  # keys only
    assert edited["changes"] == {
        "env": {"added": ["NEW"], "removed": [], "changed": ["TOKEN"]},
        "run_as_user": {"old": None, "new": "nobody"},
        "schedule": {"old": "0 3 * * *", "new": "0 4 * * *"},
        "timeout_seconds": {"old": None, "new": 300},
    }
    assert disabled["changes"] == {"enabled": {"old": True, "new": False}}
    assert enabled["changes"] == {"enabled": {"old": False, "new": True}}
    assert applied["changes"] == {"schedule": {"old": "0 4 * * *", "new": "0 5 * * *"}}
    assert removed["definition"]["schedule"] == "0 5 * * *"
    assert removed["definition"]["run_as_user"] == "nobody"
    assert removed["definition"]["env"] == ["KEEP", "NEW", "TOKEN"]
    assert found[0]["at"] >= found[-1]["at"]

    # Environment values are neither shown nor stored in the log.
    for layout in (["--json"], [], ["-o", "wide"]):
        assert "s3cr3t" not in ok(cli("history", "--changes", *layout)).out
    assert "s3cr3t" not in _dump_log(url)


def _dump_log(url: str) -> str:
    if url.startswith("postgresql"):
        with psycopg.connect(url) as conn:
            return str(conn.execute("SELECT changes::text FROM job_audit").fetchall())
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        return str(conn.execute("SELECT changes FROM job_audit").fetchall())


def test_direct_sql_is_recorded_with_the_role_that_made_it(
    pg: PgServer, pg_url: str, tmp_path: Path
) -> None:
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url)
    ok(cli("db", "upgrade"))
    ok(cli("add", "victim", "-s", "@hourly", "--user", "nobody", "--", "/bin/true"))
    ok(cli("add", "doomed", "-s", "@daily", "--", "/bin/true"))
    role, password = f"editor_{secrets.token_hex(4)}", secrets.token_hex(12)
    dbname = pg_url.rsplit("/", 1)[1]
    with pg.admin() as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    with psycopg.connect(pg_url, autocommit=True) as owner:
        owner.execute(f"GRANT SELECT, UPDATE, DELETE ON jobs TO {role}")
        owner.execute(f"GRANT SELECT ON job_audit TO {role}")
    editor_url = f"postgresql://{role}:{password}@127.0.0.1:{pg.port}/{dbname}"
    try:
        with psycopg.connect(editor_url, autocommit=True) as editor:
            editor.execute(
                """UPDATE jobs SET command = '["/bin/sh", "-c", "id"]', run_as_user = NULL"""
                " WHERE name = 'victim'"
            )
            editor.execute("DELETE FROM jobs WHERE name = 'doomed'")
            # The log is written by the trigger alone: the editor can neither forge nor erase.
            for sql in (
                "DELETE FROM job_audit",
                "UPDATE job_audit SET db_role = 'someone'",
                "INSERT INTO job_audit (job_name, action, at, changes)"
                " VALUES ('victim', 'update', now(), '{}')",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    editor.execute(sql)
        assert revision(cli, "victim") == 2  # bumped although the UPDATE left it alone
        (update, _) = changes(cli, "victim")
        assert update["action"] == "update" and update["revision"] == 2
        assert (update["who"], update["db_role"], update["session_role"]) == (role, role, role)
        assert update["os_user"] is None  # not schedctl: nobody said
        assert update["changes"] == {
            "command": {"old": ["/bin/true"], "new": ["/bin/sh", "-c", "id"]},
            "run_as_user": {"old": "nobody", "new": None},
        }
        (deleted, _) = changes(cli, "doomed")
        assert (deleted["action"], deleted["who"], deleted["revision"]) == ("delete", role, 1)
        assert deleted["definition"]["schedule"] == "@daily"
        # SET ROLE: the role in effect is recorded, the login role beside it.
        with psycopg.connect(pg_url, autocommit=True) as owner:
            owner.execute(f"GRANT {role} TO postgres")
            owner.execute(f"SET ROLE {role}")
            owner.execute("UPDATE jobs SET description = 'x' WHERE name = 'victim'")
        latest = changes(cli, "victim", "-n", "1")[0]
        assert (latest["db_role"], latest["session_role"], latest["revision"]) == (
            role,
            "postgres",
            3,
        )
    finally:
        with pg.admin() as admin:
            admin.execute(f"REASSIGN OWNED BY {role} TO postgres")
        with psycopg.connect(pg_url, autocommit=True) as owner:
            owner.execute(f"DROP OWNED BY {role}")
        with pg.admin() as admin:
            admin.execute(f"DROP ROLE {role}")


def test_direct_sql_on_sqlite_is_recorded_and_bumps_the_revision(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=f"sqlite:///{db}")
    ok(cli("db", "upgrade"))
    ok(cli("add", "victim", "-s", "@hourly", "--user", "nobody", "--", "/bin/true"))
    ok(cli("add", "doomed", "-s", "@daily", "--", "/bin/true"))
    with sqlite3.connect(db) as conn:
        conn.execute(
            """UPDATE jobs SET command = '["/bin/sh", "-c", "id"]', run_as_user = NULL"""
            " WHERE name = 'victim'"
        )
        conn.execute("DELETE FROM jobs WHERE name = 'doomed'")
    conn.close()
    assert revision(cli, "victim") == 2
    (update, created) = changes(cli, "victim")
    assert (update["revision"], update["who"], update["os_user"]) == (2, "?", None)
    assert created["os_user"] == ME
    assert update["changes"] == {
        "command": {"old": ["/bin/true"], "new": ["/bin/sh", "-c", "id"]},
        "run_as_user": {"old": "nobody", "new": None},
    }
    (deleted, _) = changes(cli, "doomed")
    assert (deleted["action"], deleted["who"], deleted["revision"]) == ("delete", "?", 1)


def test_changes_table_fits_80_columns_and_shows_hostile_text_as_text(
    backend: Backend, tmp_path: Path
) -> None:
    cli, url, env = backend
    ok(cli("add", "a-rather-long-job-name-for-the-table", "-s", "@hourly", "--", "/bin/true"))
    ok(cli("edit", "a-rather-long-job-name-for-the-table", "--schedule", "@daily",
           "--retries", "2", "--tag", "x"))  # fmt: skip
    hostile = "[bold]loud[/bold]\n\x1b[31mred\x07 ü"
    if url.startswith("postgresql"):
        with psycopg.connect(url, autocommit=True) as pg_conn:
            pg_conn.execute("UPDATE jobs SET description = %s", (hostile,))
    else:
        with sqlite3.connect(url.removeprefix("sqlite:///")) as lite:
            lite.execute("UPDATE jobs SET description = ?", (hostile,))
        lite.close()
    narrow = make_cli(tmp_path, **{**env, "COLUMNS": "80"})
    table = ok(narrow("history", "--changes")).out
    lines = table.splitlines()
    assert lines[0].split() == ["WHEN", "(UTC)", "JOB", "WHO", "REV", "WHAT"]
    assert max(len(line) for line in lines) <= 80
    assert "\x1b" not in table and "\x07" not in table
    assert "retries, schedule," in table and "description" in table
    assert "created" in table
    wide = ok(narrow("history", "--changes", "-o", "wide")).out
    assert "\x1b" not in wide and "\x07" not in wide
    # Shown as the text it is: the markup stays, controls are visible escapes.
    assert '"" -> "[bold]loud[/bold]\\n\\u001b[31mred\\u0007 ü"' in wide
    assert 'schedule: "@hourly" -> "@daily"' in wide and "retries: 0 -> 2" in wide
    (latest,) = changes(cli, "-n", "1")
    assert latest["changes"] == {"description": {"old": "", "new": hostile}}
    assert latest["revision"] == 3


def test_change_log_outlives_prune_and_purge(backend: Backend) -> None:
    cli, url, _ = backend
    ok(cli("add", "brief", "-s", "* * * * *", "--", "/bin/true"))
    ok(cli("edit", "brief", "--retries", "1"))
    ok(cli("run", "brief", "--now"))
    age_runs(url, "brief", 7200)
    ok(cli("prune", "--older-than", "1m", "--keep-failed", "1m"))
    assert run_rows(url, "brief") == []  # the run went; its job's change log did not
    assert [c["action"] for c in changes(cli, "brief")] == ["update", "create"]
    ok(cli("remove", "brief", "--purge", "--yes"))
    ok(cli("prune", "--older-than", "1m", "--keep-failed", "1m"))
    # A removed job's changes stay, under its name.
    assert [c["action"] for c in changes(cli, "brief")] == ["delete", "update", "create"]
    assert len(changes(cli, "brief", "--since", "1h")) == 3
    assert "brief" in ok(cli("history", "--changes")).out


def test_changes_refuses_options_that_do_not_apply(backend: Backend) -> None:
    cli, _, _ = backend
    one_line_error(cli("history", "--changes", "--csv"), 2, "--changes lists changes")
    one_line_error(cli("history", "--changes", "--status", "failed"), 2, "do not apply")
    assert "no changes recorded" in ok(cli("history", "--changes")).out
