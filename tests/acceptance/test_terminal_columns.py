"""The CLI on an operator's terminal of 80 columns: what fits, what is left out, nothing cut."""

from __future__ import annotations

import json
import os
import re
import subprocess
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import click
import pytest
import typer
from cli_helpers import (
    BIN,
    Cli,
    Result,
    faketime,
    ok,
    one_line_error,
    store_as_older_versions_did,
    tty_run,
)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
NAME = "nightly-backup-of-the-customers"  # 31 characters, a typical long name
LONGEST = "x" * 63
# Where each command goes to a terminal of 80 columns: the first line, the most it may hold.
SAMPLE = os.environ.get("SCHEDCTL_TEST_80COLS_OUT")


def _term(env: dict[str, str], *args: str) -> list[str]:
    """Run `schedctl ARGS` with stdout on a pty of 80 columns; return its lines, unstyled."""
    rc, out = tty_run(list(args), {**env, "COLUMNS": "80", "LINES": "50"})
    text = _ANSI.sub("", out.decode()).replace("\r\n", "\n")
    assert rc == 0, text
    if SAMPLE:
        with open(SAMPLE, "a") as f:
            f.write(f"$ schedctl {' '.join(args)}\n{text}\n")
    return text.splitlines()


def _fits(lines: list[str]) -> None:
    assert lines and all(len(line.rstrip()) <= 80 for line in lines), "\n".join(lines)
    assert not any("…" in line for line in lines), "\n".join(lines)  # nothing ellipsized


def _headers(lines: list[str]) -> list[str]:
    return re.split(r"\s{2,}", lines[0].strip())


@pytest.fixture
def fleet(backend: tuple[Cli, str, dict[str, str]]) -> tuple[Cli, str, dict[str, str]]:
    """Jobs with long names and commands, each run once (one of them failed)."""
    cli, url, env = backend
    ok(cli("add", NAME, "-s", "30 2 * * *", "--tz", "Europe/Berlin", "-t", "backup",
           "--", "/usr/local/bin/backup", "--full", "--target", "/srv/backups/customers"))  # fmt: skip
    ok(cli("add", "py-list", "-s", "*/15 * * * *", "--", "python3", "-c", "[print(i) for i in x]"))
    ok(cli("add", LONGEST, "-s", "@daily", "--", "false"))
    for job in (NAME, "py-list", LONGEST):
        cli("run", job, "--now")
    return cli, url, env


def test_list_history_report_fit_80_columns_with_names_and_ids_whole(
    fleet: tuple[Cli, str, dict[str, str]],
) -> None:
    cli, _, env = fleet
    listed = _term(env, "list")
    _fits(listed)
    assert _headers(listed)[:2] == ["NAME", "COMMAND"]  # the command is never the one left out
    assert any(line.split()[0] == NAME for line in listed[1:])
    assert any(line.split()[0] == LONGEST for line in listed[1:])
    assert any("/usr/local/" in line for line in listed)
    runs = json.loads(ok(cli("history", "--json")).out)
    history = _term(env, "history")
    _fits(history)
    assert _headers(history)[:2] == ["ID", "JOB"]
    shown = {(line.split()[0], line.split()[1]) for line in history[1:]}
    assert {(str(r["id"]), r["job"]) for r in runs} <= shown  # every id and name whole
    for r in runs:  # and `logs` takes the id as shown
        assert cli("logs", str(r["id"])).rc == 0
    report = _term(env, "report")
    _fits(report)
    assert _headers(report)[:2] == ["JOB", "STATE"]
    assert {line.split()[0] for line in report[1:]} == {NAME, "py-list", LONGEST}
    for lines in (_term(env, "hosts"), _term(env, "upcoming")):
        _fits(lines)
    # Beside typical names, the next run too.
    assert _headers(_term(env, "list", "-t", "backup")) == ["NAME", "NEXT RUN", "COMMAND"]
    # -o wide: every column, each row one line, names whole.
    wide = _term(env, "list", "-o", "wide")
    assert _headers(wide) == ["NAME", "SCHEDULE", "TIMEZONE", "NEXT RUN", "STATE", "TAGS",
                              "NOTIFY", "ON", "COMMAND"]  # fmt: skip
    assert len(wide) == 4 and any(LONGEST in line for line in wide)
    assert len(_headers(_term(env, "report", "-o", "wide"))) == 16
    assert len(_headers(_term(env, "history", "-o", "wide"))) == 10


def test_piped_tables_keep_every_column_one_row_per_line(
    fleet: tuple[Cli, str, dict[str, str]],
) -> None:
    _, _, env = fleet
    piped = {k: v for k, v in env.items() if k != "COLUMNS"}

    def cli(*args: str) -> Result:
        done = subprocess.run(
            [str(BIN), *args], env=piped, capture_output=True, text=True, check=False
        )
        return Result(done.returncode, done.stdout, done.stderr)

    listed = ok(cli("list")).out.splitlines()
    assert len(listed) == 4 and len(_headers(listed)) == 9
    assert any(line.rstrip().endswith("python3 -c '[print(i) for i in x]'") for line in listed)
    assert len(_headers(ok(cli("report")).out.splitlines())) == 16
    history = ok(cli("history")).out.splitlines()
    assert len(history) == 4 and len(_headers(history)) == 10


def test_locks_fit_80_columns(tmp_path: Path, backend: tuple[Cli, str, dict[str, str]]) -> None:
    cli, _, env = backend
    started = tmp_path / "started"
    ok(cli("add", LONGEST, "-s", "@daily", "--", "sh", "-c", f"touch {started}; sleep 30"))
    runner = subprocess.Popen([str(BIN), "run", LONGEST, "--now"], env=env)
    try:
        for _ in range(300):
            if started.exists():
                break
            subprocess.run(["sleep", "0.1"], check=True)
        lines = _term(env, "locks")
        _fits(lines)
        assert _headers(lines)[:2] == ["JOB", "RUN"] and LONGEST in lines[1]
    finally:
        runner.kill()
        runner.wait()


def test_user_text_is_never_markup_at_80_columns(backend: tuple[Cli, str, dict[str, str]]) -> None:
    cli, _, env = backend
    ok(cli("add", "py", "-s", "@daily", "--description", "[bold]x[/bold]",
           "--", "python3", "-c", "[print(i) for i in x]"))  # fmt: skip
    ok(cli("add", "done", "-s", "@daily", "--description", "ends [/done]", "--", "ls", "[/tmp]"))
    listed = "\n".join(_term(env, "list"))
    assert "python3 -c" in listed and "'[print(i)" in listed and "[/tmp]" in listed
    for job, texts in (("py", ["[bold]x[/bold]", "python3 -c '[print(i) for i in x]'"]),
                       ("done", ["ends [/done]", "ls '[/tmp]'"])):  # fmt: skip
        rc, raw = tty_run(["show", job], {**env, "COLUMNS": "80"})
        shown = raw.decode()
        assert rc == 0 and all(t in _ANSI.sub("", shown) for t in texts), shown
        assert "\x1b[1mx" not in shown  # the description is not bold
    wide = "\n".join(_term(env, "list", "-o", "wide"))
    assert "python3 -c '[print(i) for i in x]'" in wide and "ls '[/tmp]'" in wide


def _help_hints() -> list[tuple[tuple[str, ...], str]]:
    """Return (command path, `[default...]` hint) for every hint written in a help text."""
    from schedctl.cli.app import app

    found: list[tuple[tuple[str, ...], str]] = []

    def walk(command: click.Command, path: tuple[str, ...]) -> None:
        texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        found.extend((path, h) for t in texts for h in re.findall(r"\[default[^\]]*\]", t))
        if isinstance(command, click.Group):
            ctx = click.Context(command)
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None
                walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return found


def test_help_shows_every_default_hint(tmp_path: Path) -> None:
    hints = _help_hints()
    assert len(hints) >= 13, hints
    missing = []
    for path, hint in hints:
        done = subprocess.run(
            [str(BIN), *path, "--help"], capture_output=True, text=True, check=True,
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "80",
                 "TERMINAL_WIDTH": "80", "NO_COLOR": "1"},
        )  # fmt: skip
        flat = " ".join(done.stdout.replace("│", " ").split())
        if " ".join(hint.split()) not in flat:
            missing.append((path, hint))
    assert not missing
    # Shell completion shows the same help texts as written, with no markup escapes.
    completion = subprocess.run(
        [str(BIN)], capture_output=True, text=True, check=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "_SCHEDCTL_COMPLETE": "zsh_complete",
             "COMP_WORDS": "schedctl add --con", "COMP_CWORD": "2"},
    ).stdout  # fmt: skip
    assert "the lock [default: forbid]." in completion and "\\[" not in completion


def test_upcoming_lists_fire_times_soonest_first_across_dst(
    backend: tuple[Cli, str, dict[str, str]],
) -> None:
    cli, url, env = backend
    ok(cli("add", "hourly", "-s", "0 * * * *", "--tz", "UTC", "--", "true"))
    ok(cli("add", "berlin-noon", "-s", "0 12 1 * *", "--tz", "Europe/Berlin", "--on", "role=db",
           "--", "true"))  # fmt: skip
    ok(cli("add", "off", "-s", "* * * * *", "--disabled", "--", "true"))
    ok(cli("add", "hostile", "-s", "0 0 1 1 *", "--", "true"))
    store_as_older_versions_did(url, "hostile", name="[/done]x\x1b[2J")
    ok(cli("run", "hourly", "--now"))
    rows = json.loads(ok(cli("upcoming", "--json")).out)
    # The default window, an hour: the hourly job once, every other enabled job its next time.
    assert sorted(r["job"] for r in rows) == ["[/done]x\x1b[2J", "berlin-noon", "hourly"]
    times = [datetime.fromisoformat(r["next"]) for r in rows]
    assert times == sorted(times)
    [hourly] = [r for r in rows if r["job"] == "hourly"]
    assert 0 < hourly["left_seconds"] <= 3600 and hourly["last_result"] == "succeeded"
    # 400 days: thirteen or fourteen first-of-the-month noons, in winter and summer time.
    year = json.loads(ok(cli("upcoming", "--within", "400d", "--json")).out)
    noons = [datetime.fromisoformat(r["next"]) for r in year if r["job"] == "berlin-noon"]
    assert len(noons) in (13, 14)
    berlin = ZoneInfo("Europe/Berlin")
    assert all(n.astimezone(berlin).strftime("%d %H:%M") == "01 12:00" for n in noons)
    assert {n.utcoffset() for n in noons} == {timedelta(hours=1), timedelta(hours=2)}
    assert len([r for r in year if r["job"] == "hourly"]) == 1000  # at most, per job
    everything = json.loads(ok(cli("upcoming", "--all", "--json")).out)
    assert [r["enabled"] for r in everything if r["job"] == "off"][:1] == [False]
    lines = _term(env, "upcoming")
    _fits(lines)
    assert _headers(lines)[0] == "NEXT" and "LEFT" in _headers(lines) and "JOB" in lines[0]
    text = "\n".join(lines)
    assert "[/done]x\\x1b[2J" in text and "\x1b[2J" not in text
    assert re.search(r"in \d+(s| min)\s+succeeded\s+hourly", text), text
    assert len(_headers(_term(env, "upcoming", "-o", "wide"))) == 6
    one_line_error(cli("upcoming", "--within", "5x"), 2, "--within")


def test_upcoming_goes_by_the_database_clock(
    backend: tuple[Cli, str, dict[str, str]],
) -> None:
    cli, url, env = backend
    if not url.startswith("postgresql"):
        pytest.skip("SQLite's clock is this host's")
    ok(cli("add", "hourly", "-s", "0 * * * *", "--tz", "UTC", "--", "true"))
    ahead = {**env, "LD_PRELOAD": faketime(), "FAKETIME": "+3h", "TZ": "UTC"}
    done = subprocess.run([str(BIN), "upcoming", "--json"], env=ahead, capture_output=True,
                          text=True, check=True)  # fmt: skip
    [row] = json.loads(done.stdout)
    assert 0 < row["left_seconds"] <= 3600  # by the host's clock it would be 3 hours off
