"""Tables printed without rich must read exactly as rich prints them."""

from __future__ import annotations

import io
import random
import sys
from typing import Any

import pytest
from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from schedctl.cli import output
from schedctl.cli.output import Cell, Table, print_table

# Cells the commands print, and cells that must send the table to rich: wide and combining
# characters, markup, emoji codes, control escapes, long text that wraps.
_WORDS = [
    "", "-", "job-01", "succeeded", "2026-11-22 21:00:00 CET", "30 2 * * *", "Europe/Berlin",
    "100%", "0.02s", "7m20s ago", "/usr/bin/backup --full", "a,b", "r\\x1b[2J",
]  # fmt: skip
_ODD = ["héllo", "日本語", "e\u0301", "[red]x[/]", "[bold]", ":thumbs_up:", "a:100:b", "x" * 90]


def _rich(table: Table, width: int | None) -> str:
    """What the commands printed before: the same table through rich's console."""
    buf = io.StringIO()
    console = Console(file=buf, highlight=False, soft_wrap=True, width=width)
    rich_table = RichTable(box=None, **table.options)
    for header, options in table.columns:
        rich_table.add_column(header, **options)
    for row in table.rows:
        rich_table.add_row(*(Text(c.text, c.style) if isinstance(c, Cell) else c for c in row))
    console.print(rich_table)
    return buf.getvalue()


def _ours(table: Table, monkeypatch: pytest.MonkeyPatch) -> tuple[str, bool]:
    """Print through print_table; return the text and whether rich was used."""
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stdout", buf)
    output.out.cache_clear()
    output._plain_width.cache_clear()
    print_table(table)
    return buf.getvalue(), output.out.cache_info().currsize > 0


def _random_table(rng: random.Random) -> Table:
    table_options: list[dict[str, Any]] = [{"header_style": "bold"}, {"show_header": False}, {}]
    column_options: list[dict[str, Any]] = [
        {"no_wrap": True}, {"overflow": "fold"}, {"style": "bold"}, {},
    ]  # fmt: skip
    table = Table(**rng.choice(table_options))
    columns = rng.randint(1, 6)
    for _ in range(columns):
        header = rng.choice(["NAME", "NEXT RUN", "UTC", "", "Europe/Berlin"])
        table.add_column(header, **rng.choice(column_options))
    words = _WORDS + (_ODD if rng.random() < 0.3 else [])
    for _ in range(rng.randint(0, 8)):
        table.add_row(*(
            Cell(rng.choice(words), rng.choice(["", "red", "bold"])) if rng.random() < 0.5
            else rng.choice(words)
            for _ in range(columns)
        ))  # fmt: skip
    return table


@pytest.mark.parametrize("columns", [None, "200", "60", "25", "wide"])
def test_plain_tables_match_rich(monkeypatch: pytest.MonkeyPatch, columns: str | None) -> None:
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    for var in ("FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(var, raising=False)
    # As the console for piped output: 1,000 columns unless COLUMNS says otherwise.
    width = 1000 if columns is None else None
    rng = random.Random(f"tables-{columns}")
    plain = 0
    for _ in range(400):
        table = _random_table(rng)
        text, used_rich = _ours(table, monkeypatch)
        assert text == _rich(table, width), (table.options, table.columns, table.rows)
        plain += not used_rich
    # Both ways were exercised (a non-digit COLUMNS always leaves the table to rich).
    if columns == "wide":
        assert plain == 0
    else:
        assert 0 < plain < 400


def test_a_table_to_a_terminal_is_left_to_rich(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich then styles, as on a terminal
    table = Table(header_style="bold")
    table.add_column("STATE")
    table.add_row(Cell("failed", "red"))
    text, used_rich = _ours(table, monkeypatch)
    assert used_rich and "\x1b[31m" in text
