"""`schedctl import crontab`: a real crontab in, the jobs cron would have run out, all or nothing."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import Cli, ok, one_line_error
from cron_oracle import debian_next
from sandbox import Sandbox

from schedctl.schedule import MACROS, Schedule

# A crontab as people write them: env lines (quoted, spaced), CRON_TZ, MAILTO, comments,
# an escaped and an unescaped %, macros, @reboot and lines cron itself refuses.
USER_CRONTAB = """\
# m h  dom mon dow   command
PATH=/usr/local/bin:/usr/bin:/bin
MAILTO=ops@example.com
CRON_TZ=America/New_York
GREETING = "  hello world  "

# Nightly database dump
# keeps 7 days
30 2 * * * pg_dump app > /srv/backup/app-$(date +\\%F).sql
*/15 9-17 * * mon-fri /usr/local/bin/poll-queue --quick
@hourly /usr/bin/find /tmp -mtime +1 -delete
@reboot /usr/local/bin/warm-cache
0 22 * * 1-5 mail -s "It's 10pm" joe%Joe,%%Where are your kids?%
MAILTO=""
SHELL=/bin/bash
0 8 1 * * [[ -d /srv ]] && /usr/local/bin/monthly-report
this is not a cron line
61 * * * * /bin/true
"""

CRON_D = """\
SHELL=/bin/sh
PATH=/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin
# rotate the hourly reports
17 * * * * root cd / && run-parts --report /etc/cron.hourly
25 6 * * * www-data /usr/bin/php /srv/app/cron.php
@daily backup /usr/local/bin/snapshot
"""


def _import(cli: Cli, tmp_path: Path, text: str, *args: str, name: str = "crontab") -> Any:
    path = tmp_path / name
    path.write_text(text)
    return json.loads(ok(cli("import", "crontab", str(path), "--json", *args)).out)


def _jobs(cli: Cli) -> dict[str, dict[str, Any]]:
    return {j["name"]: j for j in json.loads(ok(cli("list", "--json")).out)}


def test_a_user_crontab_becomes_the_jobs_cron_would_run(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    cli, _, _ = backend
    got = _import(cli, tmp_path, USER_CRONTAB, "--user", "alice", "--tz", "Asia/Kolkata")
    created = {c["line"]: c for c in got["created"]}
    assert sorted(created) == [9, 10, 11, 16]
    skipped = {s["line"]: s["reason"] for s in got["skipped"]}
    assert sorted(skipped) == [12, 13, 17, 18]
    assert "@reboot" in skipped[12]
    assert "unescaped %" in skipped[13]
    assert "cron itself refuses" in skipped[17]
    assert "cron itself refuses" in skipped[18]  # minute 61

    jobs = _jobs(cli)
    assert set(jobs) == {c["name"] for c in created.values()}
    dump = jobs[created[9]["name"]]
    assert dump["name"].startswith("pg_dump-")
    assert dump["command"] == ["pg_dump app > /srv/backup/app-$(date +%F).sql"]  # \% is %
    assert dump["shell"] is True  # cron's default SHELL, /bin/sh -c
    assert dump["timezone"] == "America/New_York"  # CRON_TZ, not --tz
    assert dump["user"] == "alice"
    assert dump["description"] == "Nightly database dump keeps 7 days"
    assert dump["notify"] == ["mailto:ops@example.com"]
    assert dump["env"] == {
        "GREETING": "  hello world  ",  # quotes keep the blanks, as cron's env.c does
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "SHELL": "/bin/sh",
    }
    assert jobs[created[11]["name"]]["schedule"] == "@hourly"
    assert jobs[created[10]["name"]]["description"] == ""
    report = jobs[created[16]["name"]]
    # SHELL=/bin/bash: cron runs the line with `bash -c`, and so does the job.
    assert report["command"] == [
        "/bin/bash",
        "-c",
        "[[ -d /srv ]] && /usr/local/bin/monthly-report",
    ]
    assert report["shell"] is False
    assert report["notify"] == []  # MAILTO="" means no mail
    assert report["env"]["SHELL"] == "/bin/bash"
    assert got["retire"] == [
        "crontab -u alice -l | sed -e '9s/^/# moved to schedctl: /' -e '10s/^/# moved to "
        "schedctl: /' -e '11s/^/# moved to schedctl: /' -e '16s/^/# moved to schedctl: /' "
        "| crontab -u alice -"
    ]

    # The same file again changes nothing: every line is reported unchanged.
    again = _import(cli, tmp_path, USER_CRONTAB, "--user", "alice", "--tz", "Asia/Kolkata")
    assert again["created"] == []
    assert [u["line"] for u in again["unchanged"]] == [9, 10, 11, 16]
    assert _jobs(cli) == jobs  # same ids, revisions and times
    text = ok(cli("import", "crontab", str(tmp_path / "crontab"), "-u", "alice")).out
    assert "0 created, 4 unchanged, 4 skipped" in text
    assert "skipped line 12: @reboot" in text


def test_dry_run_and_stdin_store_nothing(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    cli, _, _ = backend
    dry = ok(cli("import", "crontab", "-", "--dry-run", stdin=USER_CRONTAB))
    assert "4 would create, 0 unchanged, 4 skipped (dry run: nothing stored)" in dry.out
    assert "would create pg_dump-" in dry.out
    assert "crontab -l | sed -e '9s/^/# moved to schedctl: /'" in dry.out
    assert _jobs(cli) == {}
    real = json.loads(ok(cli("import", "crontab", "-", "--json", stdin=USER_CRONTAB)).out)
    assert len(real["created"]) == 4
    assert {c["name"] for c in real["created"]} == set(_jobs(cli))
    assert all(c["user"] is None for c in real["created"])


def test_a_cron_d_file_takes_each_line_s_user(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    cli, _, _ = backend
    path = tmp_path / "app"
    path.write_text(CRON_D)
    one_line_error(cli("import", "crontab", str(path), "--system", "--user", "x"), 2, "--user")
    got = json.loads(ok(cli("import", "crontab", str(path), "--system", "--json")).out)
    assert got["syntax"] == "system"
    users = {c["line"]: c["user"] for c in got["created"]}
    assert users == {4: "root", 5: "www-data", 6: "backup"}
    first = next(c for c in got["created"] if c["line"] == 4)
    assert first["command"] == ["cd / && run-parts --report /etc/cron.hourly"]
    assert first["description"] == "rotate the hourly reports"
    assert got["retire"] == [
        f"sed -i -e '4s/^/# moved to schedctl: /' -e '5s/^/# moved to schedctl: /' "
        f"-e '6s/^/# moved to schedctl: /' {path}"
    ]
    # The printed command retires the lines: the file then defines no job at all.
    subprocess.run(got["retire"][0], shell=True, check=True)
    after = json.loads(ok(cli("import", "crontab", str(path), "--system", "--json")).out)
    assert after["created"] == after["unchanged"] == after["skipped"] == []
    # Read as a user crontab, the user field is part of the command: a different job.
    user_syntax = json.loads(
        ok(cli("import", "crontab", "-", "--no-system", "--json", "--dry-run", stdin=CRON_D)).out
    )
    assert user_syntax["created"][0]["command"] == [
        "root cd / && run-parts --report /etc/cron.hourly"
    ]


def test_a_name_taken_by_another_job_imports_nothing(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    cli, _, _ = backend
    plan = _import(cli, tmp_path, USER_CRONTAB, "--dry-run")
    taken = plan["created"][2]["name"]
    ok(cli("add", taken, "-s", "@daily", "--", "/bin/true"))
    before = _jobs(cli)
    failed = cli("import", "crontab", str(tmp_path / "crontab"))
    one_line_error(failed, 4, f"a different job named '{taken}' exists already")
    assert "nothing was imported" in failed.err
    assert _jobs(cli) == before
    # A prefix gives the lines names of their own.
    got = _import(cli, tmp_path, USER_CRONTAB, "--name-prefix", "cron-")
    assert all(c["name"].startswith("cron-") for c in got["created"])
    assert len(_jobs(cli)) == 5


def test_a_changed_line_is_a_new_job_beside_the_old_one(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    cli, _, _ = backend
    first = _import(cli, tmp_path, "0 1 * * * /bin/backup --full\n0 2 * * * /bin/other\n")
    names = [c["name"] for c in first["created"]]
    second = _import(cli, tmp_path, "0 1 * * * /bin/backup --fast\n0 2 * * * /bin/other\n")
    (new,) = second["created"]
    assert new["name"].startswith("backup-") and new["name"] not in names
    assert [u["name"] for u in second["unchanged"]] == names[1:]
    assert set(_jobs(cli)) == {*names, new["name"]}  # the old one stays until removed


def _refuse_third(url: str, name: str) -> None:
    """Make the database refuse inserting the job called `name`, as a constraint would."""
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            db.execute(
                f"CREATE TRIGGER refuse BEFORE INSERT ON jobs WHEN NEW.name = '{name}' "
                "BEGIN SELECT RAISE(ABORT, 'refused by a check'); END"
            )
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        db.execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF NEW.name = '{name}' THEN RAISE check_violation USING MESSAGE = 'refused'; "
            "END IF; RETURN NEW; END $$"
        )
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON jobs FOR EACH ROW EXECUTE FUNCTION refuse()"
        )


def test_a_database_refusing_midway_stores_nothing(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    cli, url, _ = backend
    plan = _import(cli, tmp_path, USER_CRONTAB, "--dry-run")
    _refuse_third(url, plan["created"][2]["name"])  # the first two go in before it
    failed = cli("import", "crontab", str(tmp_path / "crontab"))
    one_line_error(failed, 4, "the database refused a job")
    assert "nothing was imported" in failed.err
    assert _jobs(cli) == {}


def test_hostile_text_is_stored_as_text_or_skipped(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    cli, _, _ = backend
    crontab = (
        "# [bold]x[/bold] and [/done]\n"
        "0 1 * * * python3 -c '[print(i) for i in x]' > [/tmp]\n"
        "# ok\x1b[31mred\n"
        "0 2 * * * /bin/true\n"
        "0 3 * * * echo \x1b]0;title\x07 done\n"
        "0 4 * * * echo \u2028 split\n"
    )
    path = tmp_path / "hostile"
    path.write_text(crontab)
    shown = ok(cli("import", "crontab", str(path)))
    assert "\x1b" not in shown.out and "\x07" not in shown.out and "\u2028" not in shown.out
    assert "1 created, 0 unchanged, 3 skipped" in shown.out
    assert "python3 -c '[print(i) for i in x]' > [/tmp]" in shown.out  # never markup
    assert "skipped line 4: description contains control character" in shown.out
    assert "skipped line 5: command argument 1 contains control character" in shown.out
    assert "skipped line 6: command argument 1 contains line separator" in shown.out
    (job,) = _jobs(cli).values()
    assert job["description"] == "[bold]x[/bold] and [/done]"
    assert job["command"] == ["python3 -c '[print(i) for i in x]' > [/tmp]"]
    assert "[/done]" in ok(cli("show", job["name"])).out


def test_unreadable_input_is_one_line(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    cli, _, _ = backend
    one_line_error(cli("import", "crontab", str(tmp_path / "nope")), 3, "no such file")
    bad = tmp_path / "latin1"
    bad.write_bytes(b"0 1 * * * echo caf\xe9\n")
    one_line_error(cli("import", "crontab", str(bad)), 2, "not UTF-8")
    one_line_error(cli("import", "crontab", "-", "--name-prefix", "Bad/"), 2, "invalid job name")
    assert _jobs(cli) == {}


# -- faithful to Debian cron ----------------------------------------------------------------

FAITHFUL = """\
CRON_TZ=Europe/Berlin
30 2 * * * /bin/a
*/7 9-17 * * mon-fri /bin/b
0 0 1,15 * 5 /bin/c
@weekly /bin/d
@monthly /bin/e
15 3 * jan,jul sun /bin/f
TZ=Australia/Lord_Howe
CRON_TZ=""
*/20 1-3 * * * /bin/g
0 2 29 2 * /bin/h
"""
ENV_LINES = [
    "A=1", "A = 1", "  A=  spaced  ", "A='q'", 'A="q"  ', "'A'=1", "A=", "A=  ", "A='open",
    "A='a' b", "'A=B'=1", "A B=1", "A\t=\t'x'", "=1", "A==1",
]  # fmt: skip


@pytest.fixture(scope="module")
def box() -> Iterator[Sandbox]:
    sandbox = Sandbox("cronimport", "cron", None)
    try:
        yield sandbox
    finally:
        sandbox.close()


def test_env_lines_are_read_as_debian_cron_reads_them(box: Sandbox) -> None:
    from schedctl.cronimport import parse_env_line

    # A one-line crontab loads only if the line is a setting (else it is a bad cron entry).
    verdicts = box.crontab_check(ENV_LINES)
    for line, verdict in zip(ENV_LINES, verdicts, strict=True):
        assert (parse_env_line(line) is not None) == (verdict is None), (line, verdict)
    assert parse_env_line("  A=  spaced  ") == ("A", "spaced")
    assert parse_env_line('A="q"  ') == ("A", "q")
    assert parse_env_line("A\t=\t'x'") == ("A", "x")


def test_imported_schedules_fire_when_cron_would(
    box: Sandbox, backend: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    cli, _, _ = backend
    lines = FAITHFUL.splitlines()
    assert all(v is None for v in box.crontab_check(lines))  # Debian's crontab -n loads each
    got = _import(cli, tmp_path, FAITHFUL)
    assert got["skipped"] == []
    zones = {"Europe/Berlin": 0, "Australia/Lord_Howe": 0}
    start = datetime(2026, 3, 27, 22, 0, tzinfo=UTC)  # before Berlin's spring change
    for job in got["created"]:
        raw = lines[job["line"] - 1].split()
        fields = MACROS[raw[0]] if raw[0].startswith("@") else " ".join(raw[:5])
        # An empty CRON_TZ falls back to TZ.
        zone = "Europe/Berlin" if job["line"] < 8 else "Australia/Lord_Howe"
        assert job["timezone"] == zone
        zones[zone] += 1
        count = 5 if fields.endswith("29 2 *") else 30  # leap days: a few decades is plenty
        theirs = debian_next(Schedule.of(fields, zone), zone, start, count)
        ours = json.loads(
            ok(
                cli("next", job["name"], "-n", str(count), "--after", start.isoformat(), "--json")
            ).out
        )
        assert [datetime.fromisoformat(x) for x in ours["next"]] == theirs, job["name"]
    assert zones == {"Europe/Berlin": 6, "Australia/Lord_Howe": 2}
