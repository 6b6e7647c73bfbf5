"""`schedctl check`: monitoring-plugin output and exit codes, started without Typer or SQLAlchemy.

Nagios/Icinga-style checks run every minute on every host, so this path loads only the
database driver and the pure judging code.
"""

from __future__ import annotations

import json
import os
import sys

from schedctl import config, redact
from schedctl.clock import SystemClock
from schedctl.errors import SchedctlError
from schedctl.report import JobCheck, Severity, summary

USAGE = """\
Usage: schedctl check [OPTIONS] [JOB]...

  Monitoring check: exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN; summary line first.

  WARNING: a run started late, took a retry, was skipped for overlap, or runs longer than
  twice its usual p95. CRITICAL: the last run failed (timed out, was killed, lost its lock or
  its host), the latest due slot was missed, or a run is stuck. Disabled jobs are OK.

Options:
  --json        Print JSON.
  --db URL      Database URL [default: $SCHEDCTL_DATABASE_URL, config file,
                embedded SQLite file]; visible to all users in ps.
  -h, --help    Show this message and exit.

Example: schedctl check nightly-backup
"""


def _parse(args: list[str]) -> tuple[list[str], bool, str | None]:
    names: list[str] = []
    as_json = False
    db: str | None = None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--json":
            as_json = True
        elif arg == "--db" and i + 1 < len(args):
            db = args[i + 1]
            i += 1
        elif arg.startswith("--db="):
            db = arg.split("=", 1)[1]
        elif arg == "--debug":
            pass
        elif arg.startswith("-"):
            raise _Usage(f"no such option {arg!r} (see `schedctl check --help`)")
        else:
            names.append(arg)
        i += 1
    return names, as_json, db


class _Usage(Exception):
    pass


def _judge(names: list[str], db_flag: str | None) -> list[JobCheck]:
    from schedctl import datadir, operate
    from schedctl.cli.run import emit, warn_db_flag
    from schedctl.db.repository import open_repository
    from schedctl.services import settle_spool

    settings = config.resolve(os.environ, db_flag)
    warn_db_flag(settings)
    datadir.check(settings.data_dir)  # before anything in it is opened
    db = open_repository(settings.database, SystemClock(), "schedctl check")
    try:
        db.check_schema()
        # Like every command: write spooled results and mark dead runners lost before judging.
        settle_spool(db, settings.data_dir / "spool", emit)
        db.reconcile_lost(config.host_name(os.environ))
        return operate.check(db, SystemClock(), names or None)
    finally:
        db.close()


def main(args: list[str], db_flag: str | None = None) -> int:
    """Run `schedctl check ARGS`; return the monitoring exit code, UNKNOWN whatever goes wrong."""
    try:
        code = _main(args, db_flag)
        sys.stdout.flush()  # the answer is delivered here, or this check is UNKNOWN
        return code
    except Exception as e:
        # Nothing could be said on stdout (disk full, closed, I/O error): say it on stderr.
        if "--debug" in args:
            _stderr(redact.traceback_text())
        if isinstance(e, OSError):
            why = f"cannot write the check's output: {e.strerror or e}"
        else:
            why = f"internal error ({redact.describe(e)})"
        _stderr(f"schedctl: error: {why}\n")
        return int(Severity.UNKNOWN)


def _stderr(text: str) -> None:
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _main(args: list[str], db_flag: str | None) -> int:
    if "-h" in args or "--help" in args:
        sys.stdout.write(USAGE)
        return 0
    as_json = "--json" in args
    try:
        names, as_json, own_db = _parse(args)
        checks = _judge(names, own_db or db_flag)
    except (SchedctlError, _Usage) as e:
        return _unknown(str(e), as_json, "--debug" in args)
    except Exception as e:  # still a monitoring answer, never a bare traceback
        return _unknown(f"internal error ({redact.describe(e)})", as_json, "--debug" in args)
    worst, line = summary(checks)
    if as_json:
        data = {"state": worst.name, "summary": line, "jobs": [c.to_dict() for c in checks]}
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        from schedctl.cli.text import visible

        lines = [line]
        for c in checks:
            if c.severity is not Severity.OK:
                lines += [f"{c.severity.name} {c.name}: {reason}" for reason in c.reasons]
        # Reasons quote stored text (host names): one line each, nothing a terminal obeys.
        sys.stdout.write("\n".join(visible(x) for x in lines) + "\n")
    return int(worst)


def _unknown(message: str, as_json: bool, debug: bool) -> int:
    if debug:
        sys.stderr.write(redact.traceback_text())
    from schedctl.cli.text import visible

    # On stdout, which monitoring systems store: never a password.
    line = visible(f"SCHEDCTL UNKNOWN - {redact.scrub(message)}")
    if as_json:
        sys.stdout.write(json.dumps({"state": "UNKNOWN", "summary": line, "jobs": []}) + "\n")
    else:
        sys.stdout.write(line + "\n")
    return int(Severity.UNKNOWN)
