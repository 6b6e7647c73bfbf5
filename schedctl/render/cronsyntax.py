"""Debian cron's own reading of one crontab line, to refuse a block that cron would reject.

Debian cron (3.0pl1, entry.c) ignores the whole file, every good line included, when one entry
fails to parse, so `sync crontab` checks each line it renders with the same rules before it
writes anything. The rules below follow the parser byte by byte, corners included (garbage
after a list is skipped, numbers wrap like C's `atoi`); tests/integration/test_cron_syntax.py
compares them with Debian's `crontab -n` on random lines.
"""

from __future__ import annotations

MAX_TOKEN = 999  # get_number's buffer (MAX_TEMPSTR) holds 999 characters and the NUL
MAX_COMMAND = 998  # bytes; load_entry calls a longer command "too long" (MAX_COMMAND is 1000)
MACROS = frozenset(
    {"reboot", "yearly", "annually", "monthly", "weekly", "daily", "midnight", "hourly"}
)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DOWS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FIELDS: tuple[tuple[str, int, int, tuple[str, ...] | None], ...] = (
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day-of-month", 1, 31, None),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 7, _DOWS),
)
_BLANKS = b" \t"
_ALNUM = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_EOL = -1  # the end of the line (cron reads on into the next line; nothing it wants is there)


class _Bad(Exception):
    pass


def _int32(value: int) -> int:
    """The value a C `int` holds after assignment: the low 32 bits, signed."""
    value &= 0xFFFFFFFF
    return value - 2**32 if value >= 2**31 else value


def _atoi(digits: bytes) -> int:
    """C's atoi on glibc: strtol saturates at LONG_MAX, then the cast keeps the low 32 bits."""
    return _int32(min(int(digits), 2**63 - 1))


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def peek(self) -> int:
        return self.data[self.pos] if self.pos < len(self.data) else _EOL

    def next(self) -> int:
        self.pos += 1
        return self.peek()

    def skip_blanks(self) -> int:
        while self.peek() != _EOL and self.peek() in _BLANKS:
            self.pos += 1
        return self.peek()

    def skip_nonblanks(self) -> None:
        while self.peek() != _EOL and self.peek() not in _BLANKS:
            self.pos += 1

    def word(self) -> bytes:
        start = self.pos
        self.skip_nonblanks()
        return self.data[start : self.pos]

    def number(self, low: int, names: tuple[str, ...] | None) -> int:
        start = self.pos
        while self.peek() in _ALNUM:
            if self.pos - start >= MAX_TOKEN:
                raise _Bad
            self.pos += 1
        token = self.data[start : self.pos]
        if not token:
            raise _Bad
        if names is not None and token.lower().decode() in names:
            return names.index(token.lower().decode()) + low
        if not token.isdigit():
            raise _Bad
        return _atoi(token)


def _range(r: _Reader, low: int, high: int, names: tuple[str, ...] | None) -> None:
    if r.peek() == ord("*"):
        first, last = low, high
        r.next()
    else:
        first = r.number(low, names)
        if r.peek() == ord("/"):
            raise _Bad  # Debian refuses N/step
        if r.peek() != ord("-"):
            if not low <= first <= high:
                raise _Bad
            return
        r.next()
        last = r.number(low, names)
        if not (low <= first <= high and low <= last <= high):
            raise _Bad
    step = 1
    if r.peek() == ord("/"):
        r.next()
        step = r.number(0, None)
        if step <= 0:
            raise _Bad
    i = first
    while i <= last:
        if not low <= i <= high:
            raise _Bad
        i = _int32(i + step)  # a step near 2**31 wraps around and lands out of range


def _list(r: _Reader, low: int, high: int, names: tuple[str, ...] | None) -> None:
    while True:
        _range(r, low, high, names)
        if r.peek() != ord(","):
            break
        r.next()
    r.skip_nonblanks()
    r.skip_blanks()


def entry_problem(line: str, system: bool) -> str | None:
    """Return Debian cron's complaint about one crontab line (no newline), or None if it loads.

    `system`: /etc/cron.d format, with a user field after the time fields. Comments and blank
    lines load; environment settings are not checked (schedctl writes none).
    """
    if "\n" in line:
        return "a line break inside the entry"
    r = _Reader(line.encode())
    first = r.skip_blanks()
    if first in (_EOL, ord("#")):
        return None
    if first == ord("@"):
        r.next()
        if r.word().decode(errors="replace") not in MACROS:
            return "bad time specifier"
        r.skip_blanks()
    else:
        for name, low, high, names in _FIELDS:
            try:
                _list(r, low, high, names)
            except _Bad:
                return f"bad {name}"
    if system:
        if not r.word():
            return "bad username"
        r.skip_blanks()
    if r.peek() == ord("*"):
        return "bad command"  # Debian's guard against a sixth time field
    if len(r.data) - r.pos > MAX_COMMAND:
        return "command too long"
    return None
