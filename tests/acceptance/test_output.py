"""Stored text on its way out: spreadsheets get no formulas, terminals no escape sequences."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from pathlib import Path

from cli_helpers import (
    BIN,
    cli_env,
    host_as_older_versions_stored,
    make_cli,
    ok,
    store_as_older_versions_did,
    tty_run,
)

# Host names reach history as the runner reported them (SCHEDCTL_HOST, or the host's name);
# those with control characters only as older versions stored them.
FORMULA_HOSTS = [
    '=HYPERLINK("http://evil.example/x","click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
]
ESCAPES_HOST = "web\x1b]0;pwned\x07\x1b[2J1"


def test_csv_neutralises_formulas_and_json_stays_raw(tmp_path: Path) -> None:
    ok(make_cli(tmp_path)("add", "j", "-s", "@daily", "--", "true"))
    url = f"sqlite:///{tmp_path / 'data' / 'schedctl.db'}"
    for n, host in enumerate([*FORMULA_HOSTS, "web-1"]):
        ok(make_cli(tmp_path, SCHEDCTL_HOST=f"placeholder-{n}")("run", "j", "--now"))
        host_as_older_versions_stored(url, f"placeholder-{n}", host)
    cli = make_cli(tmp_path)
    raw = subprocess.run(
        [str(BIN), "history", "--csv"], env=cli_env(tmp_path), capture_output=True, check=True
    ).stdout.decode()
    assert raw.startswith("id,job,slot,") and raw.endswith("\r\n")  # RFC 4180
    rows = list(csv.DictReader(io.StringIO(raw, newline="")))
    hosts = [r["host"] for r in reversed(rows)]
    assert hosts == ["'" + h for h in FORMULA_HOSTS] + ["web-1"]  # OWASP: a leading '
    assert all(r["exit_code"] == "0" and r["status"] == "succeeded" for r in rows)
    # A line break inside a value is quoted: it cannot start a row (and a formula) of its own.
    ok(make_cli(tmp_path, SCHEDCTL_HOST="placeholder-cr")("run", "j", "--now"))
    host_as_older_versions_stored(url, "placeholder-cr", "x\r=1+1")
    raw = subprocess.run(
        [str(BIN), "history", "--csv", "--limit", "1"], env=cli_env(tmp_path),
        capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    assert '"x\r=1+1"' in raw
    [row] = list(csv.DictReader(io.StringIO(raw, newline="")))
    assert row["host"] == "x\r=1+1"
    runs = json.loads(ok(cli("history", "--json")).out)
    assert [r["host"] for r in reversed(runs)] == [*FORMULA_HOSTS, "web-1", "x\r=1+1"]  # raw


def test_tables_show_control_characters_as_escapes_and_no_markup(tmp_path: Path) -> None:
    cli = make_cli(tmp_path)
    # `[/]` used to be read as rich markup: `list` and `show` failed with an internal error.
    ok(cli("add", "j", "-s", "@daily", "--description", "[bold]x[/bold]", "--", "echo", "[/]"))
    url = f"sqlite:///{tmp_path / 'data' / 'schedctl.db'}"
    ok(make_cli(tmp_path, SCHEDCTL_HOST="placeholder")("run", "j", "--now"))
    host_as_older_versions_stored(url, "placeholder", ESCAPES_HOST)
    # A description stored before validation refused escape sequences.
    store_as_older_versions_did(url, "j", description="a\x1b[31mred\x9bb")
    listed = ok(cli("list")).out
    assert "echo '[/]'" in listed
    shown = ok(cli("show", "j")).out
    assert "a\\x1b[31mred\\x9bb" in shown and "echo '[/]'" in shown
    history = ok(cli("history")).out
    assert "web\\x1b]0;pwned\\x07\\x1b[2J1" in history
    for out in (listed, shown, history, ok(cli("report")).out):
        assert not any(c in out for c in "\x1b\x07\x9b"), out
    assert json.loads(ok(cli("history", "--json")).out)[0]["host"] == ESCAPES_HOST


def test_logs_escape_controls_on_a_terminal_and_keep_bytes_when_piped(tmp_path: Path) -> None:
    cli = make_cli(tmp_path)
    printed = "\x1b[31mred\x1b[0m\x1b]0;pwned\x07\tcol\r\nover\rwrite\u009b2J\n"
    # printf turns the octal escapes into the bytes (arguments cannot hold controls).
    escaped = r"\033[31mred\033[0m\033]0;pwned\007\tcol\r\nover\rwrite\302\2332J\n"
    ok(cli("add", "noisy", "-s", "@daily", "--", "printf", escaped))
    ok(cli("run", "noisy", "--now"))
    run_id = json.loads(ok(cli("history", "noisy", "--json")).out)[0]["id"]
    # Piped or redirected: exactly what the job printed, for files, grep and `less -R`.
    env = cli_env(tmp_path)
    piped = subprocess.run(
        [str(BIN), "logs", str(run_id)], env=env, capture_output=True, check=False
    )
    assert piped.returncode == 0 and piped.stdout == printed.encode()
    # On a terminal: nothing the terminal would obey; newlines and tabs kept.
    rc, shown = tty_run(["logs", str(run_id)], env)
    assert rc == 0
    for raw in (b"\x1b", b"\x07", "\u009b".encode(), b"over\rwrite"):
        assert raw not in shown, shown
    text = shown.decode().replace("\r\n", "\n")  # the terminal turns \n into \r\n
    # CRLF stays a line end; a lone CR (which would overwrite the line) is shown.
    assert text == ("\\x1b[31mred\\x1b[0m\\x1b]0;pwned\\x07\tcol\r\nover\\x0dwrite\\x9b2J\n"), text
    rc, raw_out = tty_run(["logs", str(run_id), "--raw"], env)
    assert rc == 0 and b"\x1b[31mred" in raw_out


def test_csv_on_a_terminal_escapes_stored_controls_and_stays_exact_when_piped(
    tmp_path: Path,
) -> None:
    import sqlite3

    cli = make_cli(tmp_path)
    ok(cli("add", "hh", "-s", "@daily", "--", "true"))
    ok(cli("run", "hh", "--now"))
    # A host name stored by a schedctl that did not check them, written straight to the row.
    host = "\x1b]0;PWN\x07\x1b[2J\u009b31m\u2028"
    with sqlite3.connect(tmp_path / "data" / "schedctl.db") as db:
        assert db.execute("UPDATE runs SET host = ?", (host,)).rowcount == 1
    env = cli_env(tmp_path)
    shown_as = "\\x1b]0;PWN\\x07\\x1b[2J\\x9b31m\\u2028"
    for args in (["history", "hh", "--csv"], ["history", "hh"]):
        rc, shown = tty_run(args, env)
        assert rc == 0, shown
        text = shown.decode()
        # (A table on a terminal is styled: ESC [1m and [0m are rich's own.)
        for raw in ("\x1b]", "\x1b[2J", "\x07", "\u009b", "\u2028"):
            assert raw not in text, (args, shown)
        assert shown_as in text, (args, shown)
    piped = subprocess.run(
        [str(BIN), "history", "hh", "--csv"], env=env, capture_output=True, check=True
    ).stdout.decode()
    [row] = list(csv.DictReader(io.StringIO(piped, newline="")))
    assert row["host"] == host  # exact for programs
