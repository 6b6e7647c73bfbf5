"""Printing helpers: rich tables for people, JSON/CSV for programs, times with offsets."""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple
from zoneinfo import ZoneInfo

import typer

from schedctl.cli.text import visible

if TYPE_CHECKING:
    from rich.console import Console


class Layout(StrEnum):
    """What `--output` shows of a table."""

    table = "table"
    wide = "wide"


Output = Annotated[
    Layout,
    typer.Option(
        "--output",
        "-o",
        help="table: on a terminal, the columns that fit its width; wide: every column.",
    ),
]


# rich is loaded on first use: commands that print plain lines or JSON start without it.
@functools.cache
def out() -> Console:
    """Return the console for standard output."""
    from rich.console import Console

    # Piped output is for grep/awk: one line per row instead of wrapping at 80 columns.
    piped_width = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 1000
    return Console(highlight=False, soft_wrap=True, width=piped_width)


@functools.cache
def err() -> Console:
    """Return the console for standard error."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    """Write `data` as indented JSON to stdout."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def iso(dt: datetime | None) -> str | None:
    """Return ISO 8601 with offset, seconds precision."""
    return None if dt is None else dt.isoformat(timespec="seconds")


def local_time(dt: datetime | None, zone: str) -> str:
    """Format `dt` in `zone` as `2026-11-22 21:00:00 CET`."""
    if dt is None:
        return "-"
    return dt.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S %Z")


def utc_time(dt: datetime) -> str:
    """Format `dt` in UTC."""
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def done(message: str) -> None:
    """Report a completed change on stdout."""
    out().print(visible(message), markup=False)


def warn(message: str) -> None:
    """Write one `schedctl: warning:` line on stderr."""
    from schedctl import log

    sys.stderr.write(f"{log.prefix('warning')}schedctl: warning: {visible(message)}\n")


def note(message: str) -> None:
    """Write a note on stderr."""
    err().print(f"note: {visible(message)}", markup=False)


class Cell(NamedTuple):
    """Stored text for a table: shown as it is (never read as markup), in an optional style."""

    text: str
    style: str = ""


def cell(value: object, style: str = "") -> Cell:
    """A table cell for stored text: never read as markup, control characters made visible."""
    return Cell(visible(str(value)), style)


class Table:
    """A rich table, recorded and printed by `print_table`; the options are rich's.

    On a terminal, columns that do not fit its width are left out, the highest `priority`
    number first (0: always shown); `wide` shows them all. A column with a `shrink` width
    folds down to it before any column is left out. Piped output keeps every column.

    Piped or redirected, rich prints a table that fits the width as plain padded columns;
    `print_table` then writes those lines itself, and loading and running rich (a good part
    of a short command's time) is left for terminals and tables that need wrapping.
    """

    def __init__(self, wide: bool = False, **options: Any) -> None:
        self.wide = wide
        self.options = options
        self.columns: list[tuple[str, dict[str, Any]]] = []
        self.priorities: list[tuple[int, int]] = []
        self.rows: list[tuple[str | Cell, ...]] = []

    def add_column(
        self, header: str = "", priority: int = 0, shrink: int = 0, **options: Any
    ) -> None:
        """Add a column (rich's `Table.add_column` options) with its `priority` on a terminal."""
        self.columns.append((header, options))
        self.priorities.append((priority, shrink))

    def add_row(self, *cells: str | Cell) -> None:
        """Add a row: plain strings are rich markup, as in rich; `Cell`s are shown as they are."""
        self.rows.append(cells)


def print_table(table: Table) -> None:
    """Print `table` on stdout exactly as rich would."""
    plain = _plain_table(table)
    if plain is not None:
        sys.stdout.write(plain)
        return
    from rich.table import Table as RichTable
    from rich.text import Text

    shown = list(range(len(table.columns)))
    widths: dict[int, dict[str, Any]] = {}
    console = out()
    width = console.width
    if table.wide or sys.stdout.isatty():
        measured = [
            [Text(c.text) if isinstance(c, Cell) else Text.from_markup(c) for c in row]
            for row in table.rows
        ]
        if table.wide:
            # Every column, none cut: lines as long as the table (the terminal wraps them).
            width = max(width, sum(_needs(table, measured)))
        else:
            shown, widths = _fitting(table, measured, width)
    rich_table = RichTable(box=None, **table.options)
    for i in shown:
        header, options = table.columns[i]
        rich_table.add_column(header, **{**options, **widths.get(i, {})})
    for row in table.rows:
        rich_table.add_row(*(_rich_cell(row[i]) for i in shown))
    if width == console.width:
        console.print(rich_table)
        return
    narrow = console.width
    console.width = width  # Console.print's own width can only narrow
    try:
        console.print(rich_table)
    finally:
        console.width = narrow


def _rich_cell(c: str | Cell) -> Any:
    from rich.text import Text

    return Text(c.text, c.style) if isinstance(c, Cell) else c


def _needs(table: Table, rows: list[list[Any]], shrink: bool = False) -> list[int]:
    """Return each column's width with rich's padding: its widest cell (or `shrink` width)."""
    from rich.cells import cell_len

    needs = []
    for i, (header, _) in enumerate(table.columns):
        natural = max([cell_len(header), *(r[i].cell_len for r in rows)])
        least = table.priorities[i][1] if shrink else 0
        needs.append((min(natural, least) if least else natural) + 2)  # 1 each side
    return needs


def _fitting(
    table: Table, rows: list[list[Any]], width: int
) -> tuple[list[int], dict[int, dict[str, Any]]]:
    """Return the columns to show within `width` (the lowest priority numbers, in order) and
    the column options that keep their cells whole: the width each needs if all fit, else
    folding for those always shown (a name or id is never cut short)."""
    needs = _needs(table, rows, shrink=True)
    shown = list(range(len(table.columns)))
    by_priority = sorted(shown, key=lambda i: (table.priorities[i][0], i))
    while sum(needs[i] for i in shown) > width:
        last = by_priority.pop()
        if table.priorities[last][0] == 0:
            break
        shown.remove(last)
    if sum(needs[i] for i in shown) > width:
        fold = {"no_wrap": False, "overflow": "fold"}
        return shown, {i: fold for i in shown if table.priorities[i][0] == 0}
    return shown, {i: {"min_width": needs[i] - 2} for i in shown if not table.priorities[i][1]}


def heading(text: str, tail: str = "") -> None:
    """Print `text` in bold and `tail` after it on stdout (plain when not to a terminal)."""
    if _plain_width() is not None:
        sys.stdout.write(f"{text}{tail}\n")
        return
    from rich.markup import escape

    out().print(f"[bold]{escape(text)}[/bold]{escape(tail)}")


@functools.cache
def _plain_width() -> int | None:
    """Return the width rich would use for stdout if it would print no styles, else None."""
    if sys.stdout.isatty() or "FORCE_COLOR" in os.environ or "TTY_COMPATIBLE" in os.environ:
        return None
    columns = os.environ.get("COLUMNS")
    if columns is None:
        return 1000  # the width out() gives piped output
    return int(columns) if columns.isdigit() else None


# What rich would read as an emoji code in a markup string (rich's own pattern).
_EMOJI = re.compile(r"(:(\S*?)(?:(?:\-)(emoji|text))?:)")


def _plain_table(table: Table) -> str | None:
    """Return the lines rich would print for `table`, if they need no rich; else None.

    That is: no styles to print, printable ASCII only (one character, one column), no markup
    or emoji code in a plain string, and the whole table within the width (nothing wraps).
    """
    width = _plain_width()
    if width is None:
        return None
    lines: list[list[str]] = []
    rows = list(table.rows)
    if table.options.get("show_header", True):
        rows.insert(0, tuple(header for header, _ in table.columns))
    for row in rows:
        texts = []
        for c in row:
            if isinstance(c, Cell):
                text = c.text
            else:
                text = c
                if "[" in text or any(not m.group(2).isdigit() or len(m.group(2)) > 2
                                      for m in _EMOJI.finditer(text)):  # fmt: skip
                    return None
            if not (text.isascii() and text.isprintable()):
                return None
            texts.append(text)
        lines.append(texts)
    if any(len(line) != len(table.columns) for line in lines):
        return None
    widths = [max((len(line[i]) for line in lines), default=0) for i in range(len(table.columns))]
    if sum(w + 2 for w in widths) > width:
        return None
    return "".join(
        "".join(f" {text.ljust(w)} " for text, w in zip(line, widths, strict=True)) + "\n"
        for line in lines
    )
