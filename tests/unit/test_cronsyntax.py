"""Debian cron's reading of single lines: verdicts `crontab -n` gave (Debian 12, cron 3.0pl1-162).

The random comparison with the real parser is tests/integration/test_cron_syntax.py.
"""

from __future__ import annotations

import pytest

from schedctl.render.cronsyntax import entry_problem

CASES = [
    ("* * * * * /bin/true", None),
    ("# a comment", None),
    ("", None),
    ("\t*\t*  * * *\t/bin/true", None),
    ("\uff13 \uff14 * * * /bin/true", "bad minute"),  # fullwidth digits
    ("3 \uff14 * * * /bin/true", "bad hour"),
    ("\u0663 * * * * /bin/true", "bad minute"),  # Arabic-Indic digit
    ("\u00b9 * * * * /bin/true", "bad minute"),  # superscript one
    ("60 * * * * /bin/true", "bad minute"),
    ("* * 0 * * /bin/true", "bad day-of-month"),
    ("* * * january * /bin/true", "bad month"),
    ("* * * * 8 /bin/true", "bad day-of-week"),
    ("* * * * 7 /bin/true", None),
    ("* * * JAN MON /bin/true", None),
    ("* * * 1-sun * /bin/true", "bad month"),
    ("* * * * jan /bin/true", "bad day-of-week"),
    ("5-1 * * * * /bin/true", None),  # backwards: loads, never fires
    ("70-1 * * * * /bin/true", "bad minute"),
    ("5/2 * * * * /bin/true", "bad minute"),
    ("*/0 * * * * /bin/true", "bad minute"),
    ("*/60 * * * * /bin/true", None),
    ("*/2147483647 * * * * /bin/true", None),
    ("*/2147483648 * * * * /bin/true", "bad minute"),  # atoi wraps negative
    ("*/99999999999999999999 * * * * /bin/true", "bad minute"),
    ("4294967299 * * * * /bin/true", None),  # atoi wraps to 3
    ("1-59/2147483647 * * * * /bin/true", "bad minute"),  # the loop counter wraps
    ("1-59/2147483646 * * * * /bin/true", None),
    ("0" * 998 + "3 * * * * /bin/true", None),
    ("0" * 999 + "3 * * * * /bin/true", "bad minute"),  # longer than get_number's buffer
    ("5; * * * * /bin/true", None),  # the rest of a field after a list is skipped
    ("*/1/2 * * * * /bin/true", None),
    ("1,,2 * * * * /bin/true", "bad minute"),
    ("*/5x * * * * /bin/true", "bad minute"),
    ("@hourly /bin/true", None),
    ("@Hourly /bin/true", "bad time specifier"),
    ("@ hourly /bin/true", "bad time specifier"),
    ("* * * * ", "bad day-of-week"),
    ("* * * * * " + "a" * 998, None),
    ("* * * * * " + "a" * 999, "command too long"),
    ("@hourly " + "a" * 999, "command too long"),
    ("* * * * * * /bin/true", "bad command"),  # a sixth time field
    ("* * * * * *" + "a" * 998, "bad command"),
    ("@hourly *", "bad command"),
    ("* * * * * x*", None),
]


@pytest.mark.parametrize(("line", "verdict"), CASES)
def test_user_crontab_lines(line: str, verdict: str | None) -> None:
    assert entry_problem(line, system=False) == verdict


def test_cron_d_lines_need_a_user_field() -> None:
    assert entry_problem("* * * * * root /bin/true", system=True) is None
    assert entry_problem("* * * * *", system=True) == "bad username"
    assert entry_problem("@daily nobody x", system=True) is None
    assert entry_problem("* * * * * root " + "a" * 999, system=True) == "command too long"
    assert entry_problem("* * * * * root x\n* * * * * root y", system=True) is not None
