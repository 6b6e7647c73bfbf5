"""The change log cannot be diverted, keeps no webhook credential, and sees signature changes.

On PostgreSQL the roles are real LOGIN roles granted by `db grant`; every check reads the log
as the owner sees it (the real table), besides what `history --changes` prints.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
import sqlalchemy as sa
from cli_helpers import Cli, make_cli, ok
from pgserver import PgServer

Backend = tuple[Cli, str, dict[str, str]]


def changes(cli: Cli, *args: str) -> list[dict[str, Any]]:
    """Return `history --changes --json` (newest first)."""
    return list(json.loads(ok(cli("history", "--changes", "--json", *args)).out))


def revision(cli: Cli, job: str) -> int:
    return int(json.loads(ok(cli("show", job, "--json")).out)["revision"])


def sql(url: str, statement: str, *params: object) -> None:
    """Run one statement as the URL's owner (PostgreSQL) or on the file (SQLite)."""
    if url.startswith("postgresql"):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(statement.replace("?", "%s"), params)
        return
    with sqlite3.connect(url.removeprefix("sqlite:///")) as lite:
        lite.execute(statement, params)
    lite.close()


def logged(url: str) -> str:
    """Return every stored change record, all columns, as one text."""
    if url.startswith("postgresql"):
        with psycopg.connect(url) as conn:
            return str(conn.execute("SELECT job_audit::text FROM job_audit").fetchall())
    with sqlite3.connect(url.removeprefix("sqlite:///")) as lite:
        found = str(lite.execute("SELECT * FROM job_audit").fetchall())
    lite.close()
    return found


class Editor:
    """A second LOGIN role, granted admin by `db grant` on the schema the URL names."""

    def __init__(self, pg: PgServer, owner_url: str, options: str) -> None:
        self.name = f"sc_edit_{secrets.token_hex(4)}"
        password = secrets.token_hex(12)
        dbname = owner_url.split("?", maxsplit=1)[0].rsplit("/", 1)[1]
        with pg.admin() as admin:
            admin.execute(f"CREATE ROLE {self.name} LOGIN PASSWORD '{password}'")
        self.url = f"postgresql://{self.name}:{password}@127.0.0.1:{pg.port}/{dbname}{options}"


@pytest.fixture(params=["public", "team_jobs"])
def owned(
    request: pytest.FixtureRequest, pg: PgServer, pg_url: str, tmp_path: Path
) -> Iterator[tuple[Cli, str, str, Editor, Editor]]:
    """An upgraded database in `public` or in a schema the URL's search_path names, with an
    admin and a runner role: (owner cli, owner URL, schema, admin, runner)."""
    schema = str(request.param)
    options = "" if schema == "public" else "?options=" + quote(f"-csearch_path={schema}")
    if schema != "public":
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
    owner_url = pg_url + options
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=owner_url)
    ok(cli("db", "upgrade"))
    admin, runner = Editor(pg, owner_url, options), Editor(pg, owner_url, options)
    ok(cli("db", "grant", "--admin", admin.name, "--runner", runner.name))
    try:
        yield cli, owner_url, schema, admin, runner
    finally:
        for role in (admin.name, runner.name):
            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute(f"DROP OWNED BY {role}")
            with pg.admin() as a:
                a.execute(f"DROP ROLE {role}")


def test_a_temporary_job_audit_does_not_divert_the_change_log(
    owned: tuple[Cli, str, str, Editor, Editor],
) -> None:
    cli, owner_url, schema, admin, _ = owned
    ok(cli("add", "hideme", "-s", "@daily", "--tz", "UTC", "--user", "nobody", "--", "/bin/true"))
    with psycopg.connect(admin.url, autocommit=True) as conn:
        conn.execute(f"CREATE TEMP TABLE job_audit (LIKE {schema}.job_audit INCLUDING DEFAULTS)")
        conn.execute("GRANT ALL ON pg_temp.job_audit TO PUBLIC")
        conn.execute(
            """UPDATE jobs SET command = '["/bin/sh", "-c", "echo owned"]', run_as_user = NULL"""
            " WHERE name = 'hideme'"
        )
        conn.execute("DELETE FROM jobs WHERE name = 'hideme'")
        diverted = conn.execute("SELECT count(*) FROM pg_temp.job_audit").fetchone()
    assert diverted == (0,)
    found = changes(cli, "hideme")
    assert [(c["action"], c["who"]) for c in found] == [
        ("delete", admin.name),
        ("update", admin.name),
        ("create", "postgres"),
    ]
    assert found[1]["changes"]["command"]["new"] == ["/bin/sh", "-c", "echo owned"]
    with psycopg.connect(owner_url) as conn:
        (config,) = conn.execute(
            "SELECT proconfig FROM pg_proc WHERE proname = 'schedctl_audit_job'"
        ).fetchone() or (None,)
    assert config == ["search_path=pg_catalog, pg_temp"]


def test_a_temporary_run_counts_does_not_divert_or_forge_counts(
    owned: tuple[Cli, str, str, Editor, Editor],
) -> None:
    cli, owner_url, schema, _, runner = owned
    ok(cli("add", "counted", "-s", "@daily", "--tz", "UTC", "--", "/bin/true"))
    with psycopg.connect(runner.url, autocommit=True) as conn:
        # The runner may not read the counts: its copy is made by hand, key and all.
        conn.execute(
            "CREATE TEMP TABLE run_counts (job_name text, status text, total bigint,"
            " PRIMARY KEY (job_name, status))"
        )
        conn.execute("GRANT ALL ON pg_temp.run_counts TO PUBLIC")
        # The run path's claim and finish, as the runner writes them.
        (run_id,) = conn.execute(
            "INSERT INTO runs (job_id, job_name, trigger, attempt, status, host, claimed_at,"
            " output_bytes, output_truncated, schedctl_version) SELECT id, name, 'manual', 1,"
            " 'running', 'h1', now(), 0, false, 'test' FROM jobs WHERE name = 'counted'"
            " RETURNING id"
        ).fetchone() or (None,)
        conn.execute(
            "UPDATE runs SET status = 'succeeded', finished_at = now() WHERE id = %s", (run_id,)
        )
        diverted = conn.execute("SELECT count(*) FROM pg_temp.run_counts").fetchone()
        # Nor may it write the counts itself.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"INSERT INTO {schema}.run_counts VALUES ('counted', 'succeeded', 1000)")
    assert diverted == (0,)
    with psycopg.connect(owner_url) as conn:
        counts = conn.execute(f"SELECT job_name, status, total FROM {schema}.run_counts").fetchall()
        (config,) = conn.execute(
            "SELECT proconfig FROM pg_proc WHERE proname = 'schedctl_count_run'"
        ).fetchone() or (None,)
    assert counts == [("counted", "succeeded", 1)]
    assert config == ["search_path=pg_catalog, pg_temp"]


TOKEN, ROTATED, PASSWORD = "SECRETTOKEN999", "ROTATEDTOKEN777", "PASSW0RD"


def test_webhook_credentials_are_never_logged_nor_shown(backend: Backend) -> None:
    cli, url, _ = backend
    hook = f"webhook:https://hooks.example.com/T000/{TOKEN}?key={TOKEN}"
    ok(cli("add", "wh", "-s", "@daily", "--tz", "UTC", "--notify", hook,
           "--notify", "mailto:ops@example.com", "--", "/bin/true"))  # fmt: skip
    ok(cli("edit", "wh", "--notify", f"webhook:https://hooks.example.com/T000/{ROTATED}",
           "--notify", "mailto:ops@example.com"))  # fmt: skip
    # The same by SQL, with a password in the URL: the trigger masks it too.
    cast = "::jsonb" if url.startswith("postgresql") else ""
    sql(url, f"UPDATE jobs SET notify = ?{cast} WHERE name = 'wh'",
        json.dumps([f"webhook:http://bot:{PASSWORD}@chat.example.org:8443/hook/{TOKEN}"]))  # fmt: skip
    ok(cli("remove", "wh", "--yes"))

    outputs = [ok(cli("history", "--changes", *o)).out for o in ([], ["-o", "wide"], ["--json"])]
    stored = logged(url)
    for text in (*outputs, stored):
        for secret in (TOKEN, ROTATED, PASSWORD, "T000", "bot:"):
            assert secret not in text, (secret, text)
    found = changes(cli, "wh")
    assert [c["action"] for c in found] == ["delete", "update", "update", "create"]
    deleted, by_sql, rotated, created = found
    masked = "webhook:https://hooks.example.com/***"
    assert created["definition"]["notify"] == [masked, "mailto:ops@example.com"]
    assert rotated["changes"]["notify"] == {
        "old": [masked, "mailto:ops@example.com"],
        "new": [masked, "mailto:ops@example.com"],
    }
    assert by_sql["changes"]["notify"]["new"] == ["webhook:http://chat.example.org:8443/***"]
    assert deleted["definition"]["notify"] == ["webhook:http://chat.example.org:8443/***"]
    assert masked in outputs[1]


def test_upgrade_masks_webhook_credentials_logged_before(db_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    from schedctl.config import parse_database_url
    from schedctl.db import schema

    url = parse_database_url(db_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(schema.MIGRATIONS))
    pg = db_url.startswith("postgresql")

    def js(param: str) -> str:
        return f"CAST(:{param} AS jsonb)" if pg else f":{param}"

    engine = schema.make_engine(url)
    try:
        with engine.begin() as conn:  # a log written by the schedctl before revision 0010
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0009")
            row = {
                "name": "old", "command": '["/bin/true"]', "shell": False, "schedule": "@daily",
                "timezone": "UTC", "concurrency": "forbid", "catch_up": "skip",
                "jitter_seconds": 0, "retries": 0, "retry_delay_seconds": 0, "env": "{}",
                "description": "", "tags": "[]", "enabled": True, "output_limit_bytes": 1,
                "revision": 1,
                "notify": json.dumps([f"webhook:https://u:{PASSWORD}@h.example.com/{TOKEN}"]),
            }  # fmt: skip
            conn.execute(
                sa.text(
                    "INSERT INTO jobs (name, command, shell, schedule, timezone, concurrency,"
                    " catch_up, jitter_seconds, retries, retry_delay_seconds, env, description,"
                    " tags, enabled, output_limit_bytes, revision, notify, created_at,"
                    f" updated_at) VALUES (:name, {js('command')}, :shell, :schedule, :timezone,"
                    " :concurrency, :catch_up, :jitter_seconds, :retries, :retry_delay_seconds,"
                    f" {js('env')}, :description, {js('tags')}, :enabled, :output_limit_bytes,"
                    f" :revision, {js('notify')}, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                row,
            )
            conn.execute(
                sa.text(f"UPDATE jobs SET notify = {js('n')}"),
                {"n": json.dumps([f"webhook:https://h.example.com/{ROTATED}"])},
            )
            before = str(conn.execute(sa.text("SELECT changes FROM job_audit")).all())
        assert TOKEN in before and ROTATED in before  # as 0009 logged them
        schema.upgrade(url)
        with engine.connect() as conn:
            after = [
                json.loads(c) if isinstance(c, str) else c
                for (c,) in conn.execute(sa.text("SELECT changes FROM job_audit ORDER BY id"))
            ]
        text = json.dumps(after)
        assert TOKEN not in text and ROTATED not in text and PASSWORD not in text
        assert after[0]["notify"] == ["webhook:https://h.example.com/***"]
        assert after[1]["notify"] == [
            ["webhook:https://h.example.com/***"],
            ["webhook:https://h.example.com/***"],
        ]
        assert after[0]["command"] == ["/bin/true"]  # the rest as it was
    finally:
        engine.dispose()


def test_signature_changes_by_sql_are_recorded_without_a_new_revision(backend: Backend) -> None:
    cli, url, _ = backend
    ok(cli("add", "pgs", "-s", "@daily", "--tz", "UTC", "--", "/bin/true"))
    forged = "-----BEGIN SSH SIGNATURE-----\nforged\n-----END SSH SIGNATURE-----"
    sql(url, "UPDATE jobs SET signature = ?, signer = ?, signing_key = ? WHERE name = 'pgs'",
        forged, "alice@ex", "SHA256:Fake")  # fmt: skip
    sql(url, "UPDATE jobs SET signing_key = ? WHERE name = 'pgs'", "SHA256:Other")
    sql(url, "UPDATE jobs SET signature = NULL, signer = NULL, signing_key = NULL"
        " WHERE name = 'pgs'")  # fmt: skip
    assert revision(cli, "pgs") == 1  # the signature signs a definition, it is none
    found = changes(cli, "pgs")
    assert [c["action"] for c in found] == ["update", "update", "update", "create"]
    assert {c["revision"] for c in found} == {1}
    stripped, rekeyed, signed, _ = found
    claim = {"signer": "alice@ex", "key": "SHA256:Fake"}
    assert signed["changes"] == {"signature": {"old": None, "new": claim}}
    assert signed["signer_claimed"] == "alice@ex" and "signer" not in signed
    assert rekeyed["changes"] == {
        "signature": {"old": claim, "new": {**claim, "key": "SHA256:Other"}}
    }
    assert stripped["changes"] == {
        "signature": {"old": {**claim, "key": "SHA256:Other"}, "new": None}
    }
    wide = ok(cli("history", "--changes", "pgs", "-o", "wide")).out
    assert "SIGNED AS (claimed)" in wide
    assert "signature removed" in wide
    assert 'signed (claimed by "alice@ex", key "SHA256:Fake")' in wide
    assert 're-signed (claimed by "alice@ex", key "SHA256:Other")' in wide
    assert "signature" in ok(cli("history", "--changes", "pgs")).out
    # A definition change beside the signature: one record, one new revision.
    sql(
        url, "UPDATE jobs SET description = 'x', signature = 's', signer = 'bob' WHERE name = 'pgs'"
    )
    (both,) = changes(cli, "pgs", "-n", "1")
    assert both["revision"] == 2 and set(both["changes"]) == {"description", "signature"}
    assert both["signer_claimed"] == "bob"


def test_downgrade_to_0009_and_back_keeps_a_working_log(db_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    from schedctl.config import parse_database_url
    from schedctl.db import schema

    url = parse_database_url(db_url)
    schema.upgrade(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(schema.MIGRATIONS))
    engine = schema.make_engine(url)
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0009")
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0010")
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO jobs (name, command, shell, schedule, timezone, concurrency,"
                    " catch_up, jitter_seconds, retries, retry_delay_seconds, env, description,"
                    " tags, enabled, output_limit_bytes, revision, notify, created_at,"
                    " updated_at) VALUES ('j', '[\"/bin/true\"]', false, '@daily', 'UTC',"
                    " 'forbid', 'skip', 0, 0, 0, '{}', '', '[]', true, 1, 1,"
                    f" '[\"webhook:https://h.example.com/{TOKEN}\"]',"
                    " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
            logged_now = str(conn.execute(sa.text("SELECT changes FROM job_audit")).all())
        assert "webhook:https://h.example.com/***" in logged_now and TOKEN not in logged_now
    finally:
        engine.dispose()
