"""The run path's own emitter writes exactly what structlog writes for the same events."""

from __future__ import annotations

import io
import os
import re
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog

from schedctl import log
from schedctl.errors import ConfigError

EVENTS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "run.claimed",
        "info",
        {
            "job": "backup",
            "host": "web-1",
            "slot": "2026-11-23T09:00:00+00:00",
            "run_id": 7,
            "clock_skew_seconds": -0.012,
        },
    ),
    (
        "run.finished",
        "error",
        {
            "job": "backup",
            "status": "failed",
            "exit_code": 3,
            "duration_seconds": 1.5,
            "started": False,
            "signal": None,
        },
    ),
    ("run.lock.busy", "warning", {"job": "a b", "policy": "forbid", "note": 'say "hi" = \\x'}),
    (
        "run.spooled",
        "warning",
        {
            "error": "line one\nline two\r\x1b[2J\x7f\x85\u2028 tab\t",
            "path": "/var/lib/x y/1.json",
            "flag": True,
        },
    ),
    ("spool.flushed", "debug", {"count": 0, "empty": "", "unicode": "café ✓"}),
    ("run.spooled", "warning", {"error": "C:\\dir\x07", "quoted": "a \\ b\x1b"}),
]
STAMPS = [
    datetime(2026, 11, 23, 9, 0, 0, 123456, tzinfo=UTC),
    datetime(2026, 11, 23, 9, 0, tzinfo=UTC),
]


def through_structlog(
    cfg: log.LogConfig, event: str, level: str, fields: dict[str, Any], now: datetime
) -> str:
    """Render through structlog itself, with its TimeStamper's clock fixed to `now`."""
    out = io.StringIO()
    processors = log.structlog_processors(cfg)
    stamper = processors[1]
    assert isinstance(stamper, structlog.processors.TimeStamper)

    def fixed(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        stamped = stamper(None, level, {})
        # The stamp structlog wrote, re-derived from `now`: the formats agree, byte for byte.
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", stamped["timestamp"])
        parsed = datetime.fromisoformat(stamped["timestamp"].replace("Z", "+00:00"))
        assert log.stamp(parsed) == stamped["timestamp"]
        event_dict["timestamp"] = log.stamp(now)
        return event_dict

    logger = structlog.wrap_logger(
        structlog.PrintLogger(out),
        processors=[*processors[:1], fixed, *processors[2:]],
        wrapper_class=structlog.make_filtering_bound_logger(log.LEVELS[cfg.level]),
    )
    getattr(logger, level)(event, **fields)
    return out.getvalue()


@pytest.mark.parametrize("fmt", log.FORMATS)
@pytest.mark.parametrize("journal", [False, True])
def test_emitter_writes_byte_for_byte_what_structlog_writes(fmt: str, journal: bool) -> None:
    cfg = log.LogConfig("debug", fmt, journal, False)
    for event, level, fields in EVENTS:
        for now in STAMPS:
            ours = log.line_for(event, level, fields, cfg, now) + "\n"
            assert ours == through_structlog(cfg, event, level, fields, now)
            assert "\x1b" not in ours and "\x85" not in ours and ours.count("\n") == 1
            assert ours.startswith(f"<{log.PRIORITIES[level]}>") == journal


def test_level_filter_matches_structlogs() -> None:
    for threshold in log.LEVELS:
        cfg = log.LogConfig(threshold, "logfmt", False, False)
        for event, level, fields in EVENTS:
            shown = through_structlog(cfg, event, level, fields, STAMPS[0]) != ""
            assert shown == (log.LEVELS[level] >= log.LEVELS[threshold])


def test_default_level_is_warning_off_a_terminal_and_info_on_one() -> None:
    r, w = os.pipe()
    try:
        assert log.read_config({}, w) == log.LogConfig("warning", "logfmt", False, False)
        st = os.fstat(w)
        journal = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert log.read_config(journal, w) == log.LogConfig("info", "logfmt", True, False)
        # Inherited by something whose stderr is elsewhere: not the journal any more.
        other_r, other_w = os.pipe()
        assert log.read_config(journal, other_w).journal is False
        os.close(other_r)
        os.close(other_w)
        assert log.read_config({"SCHEDCTL_LOG_LEVEL": "ERROR"}, w).level == "error"
        assert log.read_config({"SCHEDCTL_LOG_FORMAT": "json"}, w).format == "json"
    finally:
        os.close(r)
        os.close(w)
    primary, secondary = os.openpty()
    try:
        assert log.read_config({}, secondary) == log.LogConfig("info", "logfmt", False, True)
    finally:
        os.close(primary)
        os.close(secondary)


@pytest.mark.parametrize("env", [{"SCHEDCTL_LOG_LEVEL": "verbose"}, {"SCHEDCTL_LOG_FORMAT": "xml"}])
def test_bad_values_are_a_config_error(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="SCHEDCTL_LOG_"):
        log.read_config(env, 2)
