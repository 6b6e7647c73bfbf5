"""Keep the database password out of every message, and out of reach of jobs.

Parsing a database URL registers its password here (config.parse_database_url); whatever
schedctl prints on an error path (the one-line error, `--debug` tracebacks, `check`'s
UNKNOWN line, run events) goes through `scrub` first. `hide_from_same_user` closes the
process holding the password to jobs that run as the same user.
"""

from __future__ import annotations

_SECRETS: set[str] = set()
# Shorter secrets would turn every "p" or "db" in a message into "***" and protect nothing.
MIN_SECRET = 3
MASK = "***"


def remember(*secrets: str | None) -> None:
    """Register text that must never be printed."""
    _SECRETS.update(s for s in secrets if s and len(s) >= MIN_SECRET)


def scrub(text: str) -> str:
    """Return `text` with every registered secret replaced by ***."""
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def describe(error: BaseException) -> str:
    """Return `Type: first line of the message`, scrubbed, for an unexpected error."""
    first = (str(error).splitlines() or [""])[0]
    return scrub(f"{type(error).__name__}: {first}")


def traceback_text() -> str:
    """Return the traceback being handled, scrubbed (for --debug)."""
    import traceback  # only on errors with --debug: it costs every start a few ms

    return scrub(traceback.format_exc())


_PR_SET_DUMPABLE = 4


def hide_from_same_user() -> None:
    """Close this process's memory and environment (/proc/PID/mem, environ) to its own user.

    Without it, a job running as the same user as schedctl could read the database URL
    there. Root keeps access; a job is dumpable again once it has exec'd.
    """
    import ctypes

    ctypes.CDLL(None).prctl(_PR_SET_DUMPABLE, 0)
