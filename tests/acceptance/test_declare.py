"""Jobs as files through the installed binary: `export`, `apply -f`, on both backends."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import BIN, Cli, ok, one_line_error

from schedctl.errors import ExitCode

Backend = tuple[Cli, str, dict[str, str]]
HOOK = "webhook:https://hooks.example.com/T0/B1/s3cr3tToken"
EVERY_FIELD = (
    "add", "full", "-s", "30 2 * * 1-5", "--tz", "Europe/Berlin", "--timeout", "1h",
    "--concurrency", "queue", "--catch-up", "skip", "--retries", "2", "--retry-delay", "1m",
    "--jitter", "30s", "-e", "A=1", "-e", "B=x y", "--workdir", "/srv", "--user", "www-data",
    "--description", 'nightly "dump" [bold]x[/bold]', "-t", "t1", "-t", "t2", "--disabled",
    "--output-limit", "2048", "--keep", "30d", "--notify", HOOK, "--notify",
    "mailto:ops@example.com", "--notify-on", "failure,missed", "--on", "role=db", "--shell",
    "--", "tar c /srv | gzip > /backup/x.tgz",
)  # fmt: skip


def revisions(cli: Cli) -> dict[str, int]:
    return {j["name"]: j["revision"] for j in json.loads(ok(cli("list", "--json")).out)}


def two_jobs(cli: Cli) -> None:
    ok(cli(*EVERY_FIELD))
    ok(cli("add", "plain", "-s", "@daily", "--tz", "UTC", "--", "/bin/echo", "hi"))


def test_export_writes_every_field_set_and_no_default(backend: Backend, tmp_path: Path) -> None:
    cli, _, _ = backend
    two_jobs(cli)
    text = ok(cli("export")).out
    jobs = {j["name"]: j for j in tomllib.loads(text)["job"]}
    assert list(jobs["plain"]) == ["name", "schedule", "tz", "command"]
    assert jobs["plain"]["command"] == ["/bin/echo", "hi"]
    full = jobs["full"]
    assert set(full) == {
        "name", "description", "schedule", "tz", "shell", "enabled", "on", "user", "workdir",
        "env", "timeout", "concurrency", "catch-up", "jitter", "retries", "retry-delay",
        "output-limit", "keep", "notify", "notify-on", "tags",
    }  # fmt: skip
    assert full["shell"] == "tar c /srv | gzip > /backup/x.tgz"
    assert full["env"] == {"A": "1", "B": "x y"}
    assert (full["timeout"], full["retry-delay"], full["keep"]) == ("1h", "1m", "30d")
    assert full["description"] == 'nightly "dump" [bold]x[/bold]'
    # The webhook's URL is its credential: only a placeholder is written, unless asked.
    assert full["notify"] == ["webhook:https://hooks.example.com/***", "mailto:ops@example.com"]
    assert "s3cr3tToken" not in text
    # Stable: the same text every time, jobs in name order.
    assert ok(cli("export")).out == text
    assert [j["name"] for j in tomllib.loads(text)["job"]] == ["full", "plain"]
    assert tomllib.loads(ok(cli("export", "plain")).out)["job"] == [jobs["plain"]]
    one_line_error(cli("export", "nope"), ExitCode.NOT_FOUND, "no job named 'nope'")

    out = tmp_path / "jobs.toml"
    ok(cli("export", "-o", str(out)))
    assert out.read_text() == text and out.stat().st_mode & 0o777 == 0o644
    secret = tmp_path / "secret.toml"
    ok(cli("export", "--with-secrets", "-o", str(secret)))
    assert secret.stat().st_mode & 0o777 == 0o600
    assert HOOK in secret.read_text()


def test_export_then_apply_changes_nothing(backend: Backend) -> None:
    cli, _, _ = backend
    two_jobs(cli)
    before, text = revisions(cli), ok(cli("export")).out
    done = ok(cli("apply", "-f", "-", stdin=text))
    assert done.out.splitlines() == [
        "= unchanged: full",
        "= unchanged: plain",
        "0 created, 0 changed, 2 unchanged, 0 not in file, kept",
    ]
    assert revisions(cli) == before
    assert ok(cli("export")).out == text
    # The stored webhook URL was kept behind its placeholder.
    assert HOOK in ok(cli("export", "--with-secrets")).out


def test_apply_shows_old_and_new_and_bumps_the_revision(backend: Backend, tmp_path: Path) -> None:
    cli, _, _ = backend
    two_jobs(cli)
    ok(cli("add", "other", "-s", "@hourly", "--tz", "UTC", "--", "/bin/true"))
    text = ok(cli("export", "full", "plain")).out
    edited = text.replace('schedule = "@daily"', 'schedule = "0 4 * * *"').replace(
        "retries = 2", "retries = 3"
    )
    edited += (
        '\n[[job]]\nname = "fresh"\nschedule = "@weekly"\ntz = "UTC"\ncommand = ["/bin/true"]\n'
    )
    path = tmp_path / "jobs.toml"
    path.write_text(edited)
    before = revisions(cli)

    dry = ok(cli("apply", "-f", str(path), "--dry-run"))
    assert dry.out.splitlines() == [
        "~ would change: full",
        "    retries: 2 -> 3",
        "~ would change: plain",
        '    schedule: "@daily" -> "0 4 * * *"',
        "+ would create: fresh",
        "! not in file, kept: other",
        "dry run, nothing changed: 1 created, 2 changed, 0 unchanged, 1 not in file, kept",
    ]
    assert revisions(cli) == before
    plan = json.loads(ok(cli("apply", "-f", str(path), "--dry-run", "--json")).out)
    assert plan["dry_run"] is True
    assert plan["counts"] == {"create": 1, "change": 2, "unchanged": 0, "remove": 0, "keep": 1}
    assert plan["jobs"][1]["changes"] == [
        {"field": "schedule", "old": '"@daily"', "new": '"0 4 * * *"'}
    ]
    assert revisions(cli) == before

    done = ok(cli("apply", "-f", str(path)))
    assert "~ changed: plain (revision 1 -> 2)" in done.out
    assert "! not in file, kept: other" in done.out
    after = revisions(cli)
    assert after == {"full": 2, "plain": 2, "fresh": 1, "other": 1}
    shown = json.loads(ok(cli("show", "plain", "--json")).out)
    assert shown["schedule"] == "0 4 * * *"
    # The same file again: nothing left to do.
    again = ok(cli("apply", "-f", str(path))).out
    assert "0 created, 0 changed, 3 unchanged, 1 not in file, kept" in again
    assert revisions(cli) == after

    # --prune removes what the file does not name; --dry-run only says so.
    assert "- would remove: other" in ok(cli("apply", "-f", str(path), "--prune", "--dry-run")).out
    assert "other" in revisions(cli)
    pruned = ok(cli("apply", "-f", str(path), "--prune")).out
    assert "- removed: other" in pruned
    assert set(revisions(cli)) == {"full", "plain", "fresh"}


# (what is wrong, the edit of the exported file, the line and field named)
BAD = [
    ("syntax", ('retries = 2', 'retries = = 2'), "not valid TOML"),
    ("unknown key", ('retries = 2', 'retires = 2'), "retires: unknown key"),
    ("wrong type", ('retries = 2', 'retries = "two"'), "retries: must be a whole number"),
    ("bad cron", ('"@daily"', '"61 * * * *"'), "schedule: bad cron expression"),
    ("bad zone", ('tz = "UTC"', 'tz = "Mars/Olympus"'), "tz: unknown time zone"),
    ("duplicate", ('name = "plain"', 'name = "full"'), "name: job 'full' is defined twice"),
    ("control", ('description = "nightly', 'description = "\\u001b[31mnightly'),
     "description: description contains control character"),
    ("bad duration", ('timeout = "1h"', 'timeout = "soon"'), "timeout: bad timeout 'soon'"),
    ("masked new", ('name = "full"', 'name = "copy"'), "notify: webhook:https://hooks"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "edit", "fragment"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_file_names_line_and_field_and_changes_nothing(
    backend: Backend, tmp_path: Path, what: str, edit: tuple[str, str], fragment: str
) -> None:
    cli, _, _ = backend
    two_jobs(cli)
    before_text, before = ok(cli("export", "--with-secrets")).out, revisions(cli)
    text = ok(cli("export")).out
    # A change the file also makes: it must not be applied either.
    text = text.replace('"/bin/echo", "hi"', '"/bin/echo", "bye"')
    old, new = edit
    assert old in text
    bad = text.replace(old, new, 1)
    path = tmp_path / "bad.toml"
    path.write_text(bad)
    changed_line = next(
        i for i, (a, b) in enumerate(zip(text.splitlines(), bad.splitlines(), strict=True), 1)
        if a != b
    )  # fmt: skip
    for args in (("-f", str(path)), ("-f", str(path), "--dry-run"), ("-f", str(path), "--prune")):
        result = cli("apply", *args)
        one_line_error(result, ExitCode.USAGE, fragment)
        line = f"{path}:{changed_line}: "
        if what == "masked new":  # the error is at the copied job's notify line
            notify_line = (
                bad.splitlines().index(
                    next(ln for ln in bad.splitlines() if ln.startswith("notify ="))
                )
                + 1
            )
            line = f"{path}:{notify_line}: "
        assert result.err.startswith(f"schedctl: error: {line}"), result.err
    assert ok(cli("export", "--with-secrets")).out == before_text
    assert revisions(cli) == before


def test_one_invalid_job_of_three_applies_none(backend: Backend) -> None:
    cli, _, _ = backend
    jobs = "".join(
        f'\n[[job]]\nname = "j{i}"\nschedule = "{cron}"\ncommand = ["/bin/true"]\n'
        for i, cron in ((1, "@daily"), (2, "@hourly"), (3, "* * * * 8"))
    )
    result = cli("apply", "-f", "-", stdin=jobs)
    one_line_error(result, ExitCode.USAGE, "<stdin>:14: schedule: bad cron expression")
    assert revisions(cli) == {}


def _pg_waiting(url: str, marker: str) -> bool:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query NOT LIKE %s",
            (f"%{marker}%",),
        ).fetchone()
    return bool(row and row[0])


def _cpu_still(pid: int) -> bool:
    """Return whether `pid` used no CPU for a while: it waits (here: for the write lock)."""

    def used() -> int:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    first = used()
    time.sleep(0.5)
    return used() == first


def test_an_edit_between_plan_and_apply_is_a_conflict(backend: Backend, tmp_path: Path) -> None:
    cli, url, env = backend
    two_jobs(cli)
    text = ok(cli("export")).out.replace('"/bin/echo", "hi"', '"/bin/echo", "bye"')
    text += '\n[[job]]\nname = "fresh"\nschedule = "@weekly"\ncommand = ["/bin/true"]\n'
    before = revisions(cli)
    marker = "schedctl-test-edit-meanwhile"
    # Someone else's edit of `plain`, not yet committed: apply reads the plan, then waits for
    # the row (PostgreSQL) or the write lock (SQLite); the edit commits; apply must refuse.
    if url.startswith("postgresql"):
        import psycopg

        other: Any = psycopg.connect(url)
        other.execute(
            f"UPDATE jobs SET revision = revision + 1, description = 'x' WHERE name = 'plain' "
            f"/* {marker} */"
        )
    else:
        other = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        other.execute("UPDATE jobs SET revision = revision + 1, description = 'x' "
                      "WHERE name = 'plain'")  # fmt: skip
    path = tmp_path / "jobs.toml"
    path.write_text(text)
    proc = subprocess.Popen(
        [str(BIN), "apply", "-f", str(path)], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "apply never waited for the edit"
            if url.startswith("postgresql"):
                if _pg_waiting(url, marker):
                    break
                time.sleep(0.05)
            elif _cpu_still(proc.pid):
                break
        other.commit() if url.startswith("postgresql") else other.execute("COMMIT")
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        other.close()
    assert proc.returncode == ExitCode.CONFLICT, (out, err)
    assert err.startswith("schedctl: error: job 'plain' was changed or removed by someone else")
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    # Nothing applied: not the new job, not the other job's change; only the edit made meanwhile.
    assert revisions(cli) == {**before, "plain": before["plain"] + 1}
    assert '"hi"' in ok(cli("export", "plain")).out


def test_prune_with_an_empty_file_removes_nothing(backend: Backend) -> None:
    cli, _, _ = backend
    two_jobs(cli)
    # What a pipe gives when `export` failed upstream: no job at all.
    one_line_error(cli("apply", "-f", "-", "--prune", stdin=""), ExitCode.USAGE,
                   "<stdin> defines no job, and --prune would remove every stored job")  # fmt: skip
    assert revisions(cli) == {"full": 1, "plain": 1}
