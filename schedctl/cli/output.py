"""Printing helpers: rich tables for people, JSON/CSV for programs, times with offsets."""

from __future__ import annotations

import functools
import json
import os
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from schedctl.cli.text import visible

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text


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


def note(message: str) -> None:
    """Write a note on stderr."""
    err().print(f"note: {visible(message)}", markup=False)


def cell(value: object, style: str = "") -> Text:
    """A table cell for stored text: never read as markup, control characters made visible."""
    from rich.text import Text

    return Text(visible(str(value)), style=style)
