"""Debian's own crontab parser (`crontab -n`, in a throwaway root) as the oracle for two claims.

1. render/cronsyntax.py reads a line exactly as Debian cron does: same verdict on random lines
   full of the parser's corners (steps near 2**31, names, leading zeros, junk after a list,
   other scripts' digits, long commands).
2. Every schedule schedctl accepts renders crontab lines Debian cron loads, in every daemon zone.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from cron_oracle import COUNTS, cron_exprs, oracle_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sandbox import Sandbox

from schedctl.models import Job, JobSpec
from schedctl.render import Target
from schedctl.render.cronsyntax import entry_problem
from schedctl.render.crontab import crontab_block
from schedctl.schedule import CronError, parse_cron

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def batches(examples: int) -> settings:
    """Few examples of many lines each: every example is one pass through `crontab -n`."""
    return settings(oracle_settings(examples), suppress_health_check=list(HealthCheck))


# One worker runs them all, so the module's sandbox boots once.
pytestmark = pytest.mark.xdist_group("cron-syntax")


@pytest.fixture(scope="module")
def box() -> Iterator[Sandbox]:
    sandbox = Sandbox("cronsyntax", "cron", None)
    try:
        yield sandbox
    finally:
        sandbox.close()


_NUMBERS = st.one_of(
    st.integers(0, 80).map(str),
    st.integers(0, 80).map(lambda n: "000" + str(n)),
    st.sampled_from(["2147483646", "2147483647", "2147483648", "4294967296", "4294967299",
                     "99999999999999999999"]),
    st.sampled_from([998, 999]).map(lambda zeros: "0" * zeros + "5"),  # the longest token
    st.sampled_from(["jan", "Feb", "DEC", "sun", "Mon", "SAT", "sunday", "7"]),
)  # fmt: skip
_JUNK = st.sampled_from(["", "", "", "x", ";", "/", "-", ",", "*", "\uff13", "\u00b9", "\u0663",
                         "\u00e9", "\t"])  # fmt: skip


def _item() -> st.SearchStrategy[str]:
    n = _NUMBERS
    return st.one_of(
        st.just("*"),
        st.builds(lambda s: f"*/{s}", n),
        n,
        st.builds(lambda a, b: f"{a}-{b}", n, n),
        st.builds(lambda a, b, s: f"{a}-{b}/{s}", n, n, n),
        st.builds(lambda a, s: f"{a}/{s}", n, n),
        st.builds(lambda item, junk: item + junk, st.sampled_from(["*", "5", "1-5"]), _JUNK),
        _JUNK,
    )


_FIELD = st.lists(_item(), min_size=1, max_size=3).map(",".join)
_BLANK = st.sampled_from([" ", " ", "\t", "  "])
_COMMAND = st.one_of(
    st.just("/bin/true"),
    st.just(""),
    st.integers(990, 1000).map(lambda n: "a" * n),
    st.text(
        st.characters(blacklist_categories=["Cs"], blacklist_characters="\n\x00="), max_size=20
    ),
)
_TIMED = st.builds(
    lambda fields, blanks, command: (
        "".join(map("".join, zip(fields, blanks, strict=False))) + command
    ),
    st.lists(_FIELD, min_size=3, max_size=6),
    st.lists(_BLANK, min_size=6, max_size=6),
    _COMMAND,
)
_MACRO = st.builds(
    lambda word, command: f"@{word} {command}",
    st.sampled_from(["hourly", "Hourly", "daily", "reboot", "annually", "", "fortnightly"]),
    _COMMAND,
)
_VALID = st.builds(lambda expr, command: f"{expr} {command}", cron_exprs, _COMMAND)
_MUTATED = st.builds(
    lambda line, at, junk: line[:at] + junk + line[at:],
    _VALID, st.integers(0, 40), st.sampled_from(["x", "/", "-", ",", "*", " ", "7", "\u00b9"]),
)  # fmt: skip
_LINE = st.one_of(_VALID, _MUTATED, _TIMED, _MACRO).filter(lambda x: "=" not in x and "\n" not in x)


@batches(40)
@given(lines=st.lists(_LINE, min_size=30, max_size=30))
def test_cronsyntax_gives_crontab_n_verdict(box: Sandbox, lines: list[str]) -> None:
    theirs = box.crontab_check(lines)
    for line, verdict in zip(lines, theirs, strict=True):
        assert entry_problem(line, system=False) == verdict, repr(line)
    COUNTS["crontab -n lines"] += len(lines)
    COUNTS["crontab -n lines refused"] += sum(v is not None for v in theirs)


_TOKENS = ["*", "*/", "-", ",", " ", "/", "0", "1", "5", "7", "9", "59", "60", "mon", "JAN",
           "\uff13", "\u0663", "\u00b9", "\u2028", "\x85", "\t", "@", "hourly",
           "99999999999999999999", "0000000000001"]  # fmt: skip
_SCHEDULES = st.one_of(
    cron_exprs,
    st.builds(lambda e, at, junk: e[:at] + junk + e[at:], cron_exprs, st.integers(0, 40),
              st.sampled_from(_TOKENS)),
    st.lists(st.sampled_from(_TOKENS), max_size=20).map("".join),
)  # fmt: skip


@batches(3)
@given(texts=st.lists(_SCHEDULES, min_size=120, max_size=120))
def test_accepted_schedules_render_lines_crontab_n_loads(box: Sandbox, texts: list[str]) -> None:
    jobs = []
    for i, text in enumerate(texts):
        try:
            parse_cron(text)
        except CronError:
            continue
        spec = JobSpec(name=f"j{i}", schedule=text, timezone="Europe/Berlin", command=("x",))
        jobs.append(Job(i + 1, spec, 1, T0, T0))
    lines: list[str] = []
    for daemon_zone in ("Europe/Berlin", "UTC", "America/New_York"):
        block, _ = crontab_block(jobs, Target("/usr/local/bin/schedctl"), daemon_zone, T0, "root")
        lines += [ln for ln in block.splitlines() if not ln.startswith("#")]
    assert all(verdict is None for verdict in box.crontab_check(lines)), lines
    COUNTS["accepted schedules checked by crontab -n"] += len(jobs)
    COUNTS["rendered lines checked by crontab -n"] += len(lines)
