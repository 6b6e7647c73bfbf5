"""Event lines on stderr: levels, structlog's logfmt or JSON format, journal priorities.

`run` is a hot path and importing structlog costs more than a whole run (bench/README.md), so
`emit` renders events itself, exactly as the structlog chain in `structlog_processors` does
(checked byte for byte by tests/unit/test_log.py). Commands that run for long (the daemon)
log through structlog itself. Nothing here prints except `emit` and `say`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

from schedctl import redact
from schedctl.errors import ConfigError

LEVEL_VAR = "SCHEDCTL_LOG_LEVEL"
FORMAT_VAR = "SCHEDCTL_LOG_FORMAT"
# The numbers of Python's logging module, which structlog's filtering loggers use too.
LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
# Syslog priorities, as sd-daemon(3) prefixes: journald stores the line at that priority.
PRIORITIES = {"debug": 7, "info": 6, "warning": 4, "error": 3}
FORMATS = ("logfmt", "json")
KEY_ORDER = ("timestamp", "level", "event")

# What a value may not carry into a logfmt line: every control character (C0, DEL, C1) and
# the Unicode line and paragraph separators, which a terminal or a log pipeline would obey
# or split on. JSON escapes them itself.
_CONTROL = frozenset(
    "\x7f\u2028\u2029" + "".join(map(chr, range(0x20))) + "".join(map(chr, range(0x80, 0xA0)))
)
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


class LogConfig(NamedTuple):
    """How events are written: the lowest level shown, the format, where stderr goes."""

    level: str
    format: str
    journal: bool  # stderr is the systemd journal: lines carry <N> priority prefixes
    terminal: bool  # stderr is a terminal: a person is reading


def on_journal(environ: Mapping[str, str], fd: int = 2) -> bool:
    """Return whether `fd` is the journal stream systemd connected (systemd.exec(5)).

    `JOURNAL_STREAM` is DEV:INODE of that stream; it is inherited by whatever the service
    starts, so it counts only while `fd` still is that very stream.
    """
    dev, sep, ino = environ.get("JOURNAL_STREAM", "").partition(":")
    if not (sep and dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def read_config(environ: Mapping[str, str], fd: int = 2) -> LogConfig:
    """Return the logging settings; raise ConfigError for a value that means nothing.

    Default level: `info` to a terminal or the journal, else `warning` (cron mails whatever
    a job prints, so a run that went well prints nothing of its own).
    """
    journal = on_journal(environ, fd)
    terminal = _isatty(fd)
    level = (environ.get(LEVEL_VAR) or "").strip().lower()
    if not level:
        level = "info" if journal or terminal else "warning"
    elif level not in LEVELS:
        raise ConfigError(
            f"{LEVEL_VAR}={environ.get(LEVEL_VAR)!r} is not a level: use one of "
            f"{', '.join(LEVELS)}, or unset it"
        )
    fmt = (environ.get(FORMAT_VAR) or "logfmt").strip().lower()
    if fmt not in FORMATS:
        raise ConfigError(
            f"{FORMAT_VAR}={environ.get(FORMAT_VAR)!r} is not a log format: use logfmt or "
            "json, or unset it"
        )
    return LogConfig(level, fmt, journal, terminal)


_config: LogConfig | None = None


def configure(environ: Mapping[str, str] | None = None) -> LogConfig:
    """Read and keep the settings for this process; raise ConfigError on a bad value."""
    global _config  # noqa: PLW0603 - one process, one stderr
    _config = read_config(os.environ if environ is None else environ)
    return _config


def config() -> LogConfig:
    """Return the settings kept by `configure`; defaults where a bad value was never reported."""
    if _config is not None:
        return _config
    try:
        return configure()
    except ConfigError:
        return LogConfig("info", "logfmt", on_journal(os.environ), _isatty(2))


def stamp(now: datetime) -> str:
    """Return `now` as structlog's TimeStamper(fmt="iso", utc=True) writes it."""
    return now.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _escape(text: str) -> str:
    """Write control characters as JSON escapes (and then a backslash as two), else as is."""
    if _CONTROL.isdisjoint(text):
        return text
    text = text.replace("\\", "\\\\")
    return "".join(_SHORT.get(c, f"\\u{ord(c):04x}") if c in _CONTROL else c for c in text)


def sanitize(event_dict: dict[str, Any], fmt: str) -> dict[str, Any]:
    """Drop fields without a value; in logfmt, escape control characters of text values."""
    if fmt == "json":
        return {k: v for k, v in event_dict.items() if v is not None}
    return {
        k: _escape(v) if isinstance(v, str) else v for k, v in event_dict.items() if v is not None
    }


def _logfmt_value(value: Any) -> str:
    # structlog's LogfmtRenderer(bool_as_flag=False), step by step.
    if isinstance(value, bool):
        value = "true" if value else "false"
    text = str(value)
    quote = " " in text or "=" in text or '"' in text
    if quote and "\\" in text:
        text = text.replace("\\", "\\\\")
    text = text.replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"' if quote else text


def render(event_dict: dict[str, Any], fmt: str) -> str:
    """Render a sanitized event as structlog's LogfmtRenderer or JSONRenderer does."""
    if fmt == "json":
        return json.dumps(event_dict, default=repr)
    keys = [k for k in KEY_ORDER if k in event_dict]
    keys += [k for k in event_dict if k not in KEY_ORDER]
    return " ".join(f"{k}={_logfmt_value(event_dict[k])}" for k in keys)


def finish(line: str, level: str, journal: bool) -> str:
    """Scrub secrets from a rendered line; under the journal, prefix its priority."""
    line = redact.scrub(line)
    return f"<{PRIORITIES[level]}>{line}" if journal else line


def say(line: str) -> None:
    """Write one line to stderr; a closed or failing stderr loses the line, never the run."""
    try:
        sys.stderr.write(line)
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass


def prefix(level: str) -> str:
    """Return the journal priority prefix for a plain `schedctl: error:` line, or ''."""
    return f"<{PRIORITIES[level]}>" if on_journal(os.environ) else ""


def line_for(
    event: str, level: str, fields: Mapping[str, Any], cfg: LogConfig, now: datetime
) -> str:
    """Return the line `emit` writes for this event (without its newline)."""
    # The order structlog's bound logger and its add_log_level and TimeStamper build.
    event_dict = {**fields, "event": event, "level": level, "timestamp": stamp(now)}
    return finish(render(sanitize(event_dict, cfg.format), cfg.format), level, cfg.journal)


def emit(event: str, level: str = "info", **fields: Any) -> None:
    """Write one event line to stderr, unless its level is below the configured one."""
    cfg = config()
    if LEVELS[level] < LEVELS[cfg.level]:
        return
    # Logging is the CLI's job and the one place the real clock is read for a timestamp.
    say(line_for(event, level, fields, cfg, datetime.now(UTC)) + "\n")


def structlog_processors(cfg: LogConfig) -> list[Callable[..., Any]]:
    """Return the structlog chain whose output `emit` reproduces."""
    import structlog

    def sanitizer(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        return sanitize(event_dict, cfg.format)

    def finisher(_: Any, method: str, line: str) -> str:
        return finish(line, method, cfg.journal)

    renderer: Callable[..., Any] = (
        structlog.processors.JSONRenderer()
        if cfg.format == "json"
        else structlog.processors.LogfmtRenderer(
            key_order=list(KEY_ORDER), drop_missing=True, bool_as_flag=False
        )
    )
    return [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        sanitizer,
        renderer,
        finisher,
    ]


def structlog_emitter(cfg: LogConfig | None = None) -> Callable[..., None]:
    """Return an `emit` that logs through structlog (for long-running commands)."""
    import structlog

    cfg = cfg or config()
    logger = structlog.wrap_logger(
        structlog.PrintLogger(sys.stderr),
        processors=structlog_processors(cfg),
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[cfg.level]),
    )

    def emit_via_structlog(event: str, level: str = "info", **fields: Any) -> None:
        getattr(logger, level)(event, **fields)

    return emit_via_structlog
