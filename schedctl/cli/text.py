"""Stored text made safe to show: visible escapes for terminals, neutral cells for spreadsheets.

Run rows carry text schedctl did not write (the host name a runner reported, a job's output),
and old definitions may hold what validation refuses today. Light on purpose: `check` uses it.
"""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls (ESC and CSI start terminal sequences), and the Unicode line
# and paragraph separators.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# The same but newline, tab and a carriage return that ends a line (CRLF).
_CONTROL_KEEP_LINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]|\r(?!\n)")
# What a spreadsheet may read as the start of a formula (OWASP, "CSV Injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _escape(match: re.Match[str]) -> str:
    c = match.group()
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def visible(text: str) -> str:
    """Return `text` for one table cell or line: every control character as `\\xNN`."""
    return _CONTROL.sub(_escape, text)


def visible_lines(text: str) -> str:
    """Return multi-line `text` for a terminal: newlines and tabs kept, other controls escaped."""
    return _CONTROL_KEEP_LINES.sub(_escape, text)


def csv_cell(value: object, terminal: bool = False) -> object:
    """Return a CSV value no spreadsheet runs as a formula: text starting `= + - @`, TAB or CR
    gets a leading `'`. Numbers stay numbers (a negative number is no formula). For a
    `terminal`, control characters in text are shown as `\\xNN`, as in a table."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        value = "'" + value
    if terminal and isinstance(value, str):
        return visible(value)
    return value
