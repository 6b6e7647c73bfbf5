"""Durations: the forms users type, and the ones refused."""

from __future__ import annotations

import pytest

from schedctl.durations import format_duration, parse_duration
from schedctl.errors import ValidationError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("5m", 300), ("1h30m", 5400), ("2d", 172800), ("1d2h3m4s", 93784)],
)
def test_parse(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["", "5x", "-5m", "1.5h", "30m1h", "1h1h", "m", "4000d",
     # Not ASCII digits (superscript 1 was a ValueError, exit 1), and huge numbers.
     "\u00b9", "\uff13m", "\u0663", "99999999999999999999999", "1" * 5000, "1" * 5000 + "s"],
)  # fmt: skip
def test_refused(text: str) -> None:
    with pytest.raises(ValidationError, match="timeout"):
        parse_duration(text, what="timeout")


@pytest.mark.parametrize(
    ("seconds", "text"), [(None, "none"), (0, "0s"), (5400, "1h30m"), (86461, "1d1m1s")]
)
def test_format(seconds: int | None, text: str) -> None:
    assert format_duration(seconds) == text
