"""Parse and format human durations such as `90s`, `5m`, `1h30m`, `2d`."""

from __future__ import annotations

import re

from schedctl.errors import ValidationError

_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
# ASCII digits only: `\d` and str.isdigit() also take other scripts' digits and superscripts.
_PART = re.compile(r"([0-9]+)([dhms])")
_WHOLE = re.compile(r"(?:[0-9]+[dhms])+")
_SECONDS = re.compile(r"[0-9]+")
_MAX_DIGITS = 12  # ten years is 9 digits of seconds; longer numbers are never converted
# Ten years: long enough for any real timeout or retention, small enough to fit every backend.
MAX_SECONDS = 10 * 365 * 86400


def parse_duration(text: str, *, what: str = "duration") -> int:
    """Return the number of whole seconds in `text` (`90`, `90s`, `5m`, `1h30m`, `2d`)."""
    raw = text.strip().lower()
    shaped = _WHOLE.fullmatch(raw) or _SECONDS.fullmatch(raw)
    if shaped and any(len(n) > _MAX_DIGITS for n in _SECONDS.findall(raw)):
        raise ValidationError(f"bad {what} {text!r}: at most 10 years (3650d)")
    if _SECONDS.fullmatch(raw):
        seconds = int(raw)
    elif _WHOLE.fullmatch(raw):
        units = [unit for _, unit in _PART.findall(raw)]
        if len(set(units)) != len(units) or units != sorted(units, key="dhms".index):
            raise ValidationError(
                f"bad {what} {text!r}: give each unit once, largest first, e.g. 1h30m"
            )
        seconds = sum(int(n) * _UNITS[u] for n, u in _PART.findall(raw))
    else:
        raise ValidationError(
            f"bad {what} {text!r}: use a number of seconds or units d/h/m/s, e.g. 90s, 5m, 1h30m, 2d"
        )
    if seconds > MAX_SECONDS:
        raise ValidationError(f"bad {what} {text!r}: at most 10 years (3650d)")
    return seconds


def format_duration(seconds: int | float | None) -> str:
    """Format seconds as a compact duration (`1h30m`); None as `none`."""
    if seconds is None:
        return "none"
    whole = int(seconds)
    if whole == 0:
        return f"{seconds:.1f}s" if isinstance(seconds, float) and seconds else "0s"
    parts = []
    for unit, size in _UNITS.items():
        n, whole = divmod(whole, size)
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts)


def format_elapsed(seconds: float | None) -> str:
    """Format a measured duration: `120ms` under a second, `4.25s`, then `1m30s`; None as `-`."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds < 10:
        return f"{seconds:.2f}s"
    return format_duration(round(seconds, 1) if seconds < 60 else int(seconds))


def format_age(seconds: float, *, days: bool = True) -> str:
    """Return how long ago something was, coarsely: `45s`, `6m`, `3h05m`, `4d` (`days`)."""
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800 or not days:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d"
