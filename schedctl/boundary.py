"""The one error boundary of every entry point: one line, a documented exit code, no secret.

The main CLI, `run` and `check` each run their command through `guarded`; only what they
say (stderr, or check's UNKNOWN on stdout) differs. Kept light: `run` starts here.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple

from schedctl import log, redact
from schedctl.errors import ExitCode, SchedctlError

INTERRUPTED = 130  # 128 + SIGINT, as shells report it


class Failure(NamedTuple):
    """What ended a command: its one line (scrubbed) and its exit code."""

    message: str
    exit_code: int


def debug_requested(args: Sequence[str]) -> bool:
    """Return whether tracebacks were asked for (--debug or SCHEDCTL_DEBUG=1)."""
    return "--debug" in args or os.environ.get("SCHEDCTL_DEBUG") == "1"


def say(text: str) -> None:
    """Write `text`, scrubbed, to stderr; a closed or failing stderr loses it, nothing more."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        sys.stderr.write(redact.scrub(text))
        sys.stderr.flush()


def failure(error: BaseException, debug: bool) -> Failure:
    """Return the line and exit code for `error`; with `debug`, print its traceback first."""
    if debug:
        say(redact.traceback_text())
    if isinstance(error, KeyboardInterrupt):
        return Failure("interrupted", INTERRUPTED)
    if isinstance(error, SchedctlError):
        return Failure(redact.scrub(str(error)), int(error.exit_code))
    return Failure(
        f"unexpected internal error ({redact.describe(error)}); rerun with --debug and report it",
        int(ExitCode.INTERNAL),
    )


def to_stderr(found: Failure) -> int:
    """Say `schedctl: error: ...` (or that it was interrupted); return the exit code."""
    if found.exit_code == INTERRUPTED:
        say(f"{log.prefix('warning')}schedctl: interrupted\n")
    else:
        say(f"{log.prefix('error')}schedctl: error: {found.message}\n")
    return found.exit_code


def guarded(
    body: Callable[[], int], debug: bool, report: Callable[[Failure], int] = to_stderr
) -> int:
    """Return `body()`'s exit code; whatever it raises is reported once, by `report`."""
    try:
        return body()
    except (Exception, KeyboardInterrupt) as e:
        return report(failure(e, debug))
