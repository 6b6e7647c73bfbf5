"""A job row written into the database by hand with a value of the wrong type.

One such row is one clear line naming the job, the field and the repair; it stops neither the
commands that list every job nor the other jobs, and `edit` or `remove` repairs it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import Cli, Result, ok, one_line_error, run_rows

from schedctl.errors import ExitCode

# (field, JSON text stored in place of the field's value)
MALFORMED = [
    ("command", "42"),
    ("command", "null"),
    ("command", "[1, 2]"),
    ("command", '"x"'),
    ("command", "[]"),
    ("env", "[1]"),
    ("env", '"x"'),
    ("env", '{"A": 1}'),
    ("secrets", '["x"]'),
    ("secrets", '{"A": null}'),
    ("tags", '"x"'),
    ("tags", "[1]"),
    ("notify", '{"a": "b"}'),
    ("notify", "[null]"),
    ("notify_on", '"failure"'),
    ("notify_on", '["bogus"]'),
    ("secret_env", '"X"'),
    ("secret_env", "{}"),
]

# Commands that list every job: each leaves the bad one out with a warning, exit 78.
LISTING = [
    ("list",),
    ("list", "--json"),
    ("verify",),
    ("render", "crontab"),
    ("report",),
    ("export",),
    ("upcoming",),
    ("metrics",),
]


def store_raw(url: str, job: str, field: str, text: str) -> None:
    """Write `text` as the stored JSON of `field`, as an UPDATE typed by hand would."""
    import sqlalchemy as sa

    from schedctl.config import parse_database_url
    from schedctl.db.schema import make_engine

    engine = make_engine(parse_database_url(url))
    pg = url.startswith("postgresql")
    value = "CAST(:v AS jsonb)" if pg else ":v"
    try:
        with engine.begin() as conn:
            if pg:  # the change-log trigger reads env as an object: bypass it, as a restore does
                conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
            done = conn.execute(
                sa.text(f"UPDATE jobs SET {field} = {value} WHERE name = :n"), {"v": text, "n": job}
            )
            assert done.rowcount == 1
    finally:
        engine.dispose()


def left_out_warning(result: Result, field: str) -> None:
    """Assert the command ended 78 with exactly one warning line naming the bad job and field."""
    assert result.rc == ExitCode.CONFIG, (result.rc, result.err)
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("schedctl: warning: left out: job 'w1' is malformed"), lines[0]
    assert f"its {field} " in lines[0] and "schedctl remove w1" in lines[0], lines[0]
    assert "Traceback" not in result.err


def add_jobs(cli: Cli, marker: Path) -> None:
    ok(cli("add", "fine", "-s", "@daily", "--tz", "UTC", "--", "/bin/echo", "fine-ran"))
    ok(cli("add", "w1", "-s", "@daily", "--tz", "UTC", "--shell", "--", f"touch {marker}"))


@pytest.mark.parametrize(("field", "text"), [("env", "[1]"), ("command", "null")])
def test_one_malformed_row_leaves_every_other_job_usable(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path, field: str, text: str
) -> None:
    cli, url, _ = backend
    marker = tmp_path / "w1-ran"
    add_jobs(cli, marker)
    store_raw(url, "w1", field, text)

    for args in LISTING:
        result = cli(*args)
        left_out_warning(result, field)
        assert "fine" in result.out, (args, result.out)
        if args == ("metrics",):  # check's verdict stays visible to the alerting
            assert 'schedctl_check_state{job="w1"} 2' in result.out
            continue
        assert "w1" not in result.out, (args, result.out)

    checked = cli("check")
    assert checked.rc == 2, (checked.rc, checked.out, checked.err)
    assert f"CRITICAL w1: job 'w1' is malformed in the database: its {field} " in checked.out
    assert ok(cli("check", "fine")).out.startswith("SCHEDCTL OK")

    # The bad job fails closed: one line, nothing claimed, nothing run.
    for args in (("run", "w1", "--now"), ("run", "w1"), ("show", "w1"), ("next", "w1")):
        one_line_error(cli(*args), ExitCode.CONFIG, f"its {field} ")
    assert not marker.exists()
    assert run_rows(url, "w1") == []
    # Nor does prune delete anything while a job's retention cannot be read.
    one_line_error(cli("prune"), ExitCode.CONFIG, "job 'w1' is malformed")
    # The other job runs as before.
    ran = ok(cli("run", "fine", "--now"))
    assert "fine-ran" in ran.out

    # `edit` repairs it: a dropped command must be given again.
    if field == "command":
        one_line_error(cli("edit", "w1", "--description", "x"), ExitCode.CONFIG, "-- COMMAND")
        repaired = ok(cli("edit", "w1", "--", f"touch {marker}"))  # still a --shell job
    else:
        repaired = ok(cli("edit", "w1", "--env", "A=b"))
    assert f"its stored {field} was malformed and is dropped" in repaired.err
    for args in LISTING:
        assert "w1" in ok(cli(*args)).out, args
    assert ok(cli("check")).out.startswith("SCHEDCTL OK")
    ok(cli("run", "w1", "--now"))
    assert marker.exists()


@pytest.mark.parametrize(("field", "text"), MALFORMED)
def test_each_malformed_field_is_named_and_the_job_can_be_removed(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path, field: str, text: str
) -> None:
    cli, url, _ = backend
    marker = tmp_path / "w1-ran"
    add_jobs(cli, marker)
    store_raw(url, "w1", field, text)

    left_out_warning(cli("list"), field)
    left_out_warning(cli("export"), field)
    one_line_error(cli("run", "w1", "--now"), ExitCode.CONFIG, f"its {field} ")
    assert not marker.exists()
    checked = cli("check")
    assert checked.rc == 2 and "CRITICAL w1: job 'w1' is malformed" in checked.out, checked.out

    ok(cli("remove", "w1", "--yes"))
    assert [j["name"] for j in json.loads(ok(cli("list", "--json")).out)] == ["fine"]
    assert ok(cli("check")).out.startswith("SCHEDCTL OK")
