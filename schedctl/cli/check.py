"""`schedctl check`: monitoring-plugin output and exit codes, started without Typer or SQLAlchemy.

Nagios/Icinga-style checks run every minute on every host, so this path loads only the
database driver and the pure judging code.
"""

from __future__ import annotations

import json
import os
import sys

from schedctl import boundary, config, log, redact
from schedctl.clock import DatabaseClock, SystemClock
from schedctl.errors import ValidationError
from schedctl.report import JobCheck, Severity, summary

USAGE = """\
Usage: schedctl check [OPTIONS] [JOB]...

  Monitoring check: exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN; summary line first.

  WARNING: a run started late, took a retry, was skipped for overlap, or runs longer than
  twice its usual p95. CRITICAL: the last run failed (timed out, was killed, lost its lock or
  its host), the latest due slot was missed, or a run is stuck; a job placed with --on
  that no live host carries; a host refuses the job's definition (signature or host
  policy); once jobs are placed, a host that synced before and has not been seen for 5
  minutes. Disabled jobs are OK unless refused.

  Read-only: nothing is written to the database unless --settle is given.

Options:
  --json        Print JSON.
  --settle      First write this host's spooled results and mark runs whose
                runner died `lost` (what every other command does); needs
                write access.
  --db URL      Database URL [default: $SCHEDCTL_DATABASE_URL, config file,
                embedded SQLite file]; visible to all users in ps.
  -h, --help    Show this message and exit.

Example: schedctl check nightly-backup
"""


def _parse(args: list[str]) -> tuple[list[str], bool, bool, str | None]:
    names: list[str] = []
    as_json = settle = False
    db: str | None = None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--json":
            as_json = True
        elif arg == "--settle":
            settle = True
        elif arg == "--db" and i + 1 < len(args):
            db = args[i + 1]
            i += 1
        elif arg.startswith("--db="):
            db = arg.split("=", 1)[1]
        elif arg == "--debug":
            pass
        elif arg.startswith("-"):
            raise ValidationError(f"no such option {arg!r} (see `schedctl check --help`)")
        else:
            names.append(arg)
        i += 1
    return names, as_json, settle, db


def _judge(names: list[str], settle: bool, db_flag: str | None) -> list[JobCheck]:
    from schedctl import datadir, operate
    from schedctl.cli.run import emit, warn_db_flag
    from schedctl.db.connector import connect
    from schedctl.db.repository import open_repository
    from schedctl.services import settle_spool

    log.configure()
    settings = config.resolve(os.environ, db_flag)
    warn_db_flag(settings)
    datadir.check(settings.data_dir)  # before anything in it is opened
    url = settings.database
    db = open_repository(url, SystemClock(), "schedctl check")
    # As for every other one-shot command: a session the server ended (a restart, a terminated
    # backend) is replaced, and the plain read that lost it retried once on the new one.
    db.reopen = lambda: connect(url, "schedctl check")
    try:
        db.check_schema()
        if settle:
            # As every other command does: write spooled results and mark dead runners lost.
            # Not by default: monitoring runs on every host every minute, and may hold only
            # read access.
            settle_spool(db, settings.data_dir / "spool", emit)
            db.reconcile_lost(config.host_name(os.environ))
        # Heartbeats, starts and claims carry the database's time: judge them by its clock.
        return operate.check(db, DatabaseClock(db), names or None)
    finally:
        db.close()


def main(args: list[str], db_flag: str | None = None, stdout_closed: bool = False) -> int:
    """Run `schedctl check ARGS`; return the monitoring exit code, UNKNOWN whatever goes wrong."""
    as_json = "--json" in args
    if stdout_closed:
        # Started with stdout closed: the verdict could reach no one (what stands on fd 1 now
        # is the /dev/null the entry point put there), so the check itself is UNKNOWN.
        boundary.say(
            "schedctl: error: cannot write the check's output: standard output is closed; "
            "give the check somewhere to write (e.g. >/dev/null)\n"
        )
        return int(Severity.UNKNOWN)

    def body() -> int:
        code = _main(args, db_flag)
        sys.stdout.flush()  # the answer is delivered here, or this check is UNKNOWN
        return code

    def unknown(found: boundary.Failure) -> int:
        try:
            return _unknown(found.message, as_json)
        except (OSError, ValueError) as e:
            # Nothing could be said on stdout (disk full, closed, I/O error): say it on stderr.
            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            boundary.say(f"schedctl: error: cannot write the check's output: {why}\n")
            return int(Severity.UNKNOWN)

    return boundary.guarded(body, boundary.debug_requested(args), unknown)


def _main(args: list[str], db_flag: str | None) -> int:
    if "-h" in args or "--help" in args:
        sys.stdout.write(USAGE)
        return 0
    names, as_json, settle, own_db = _parse(args)
    checks = _judge(names, settle, own_db or db_flag)
    worst, line = summary(checks)
    if as_json:
        data = {
            "state": worst.name,
            "summary": line,
            "jobs": [c.to_dict() for c in checks if c.kind == "job"],
            "hosts": [c.to_dict() for c in checks if c.kind == "host"],
        }
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        from schedctl.cli.text import visible

        lines = [line]
        for c in checks:
            if c.severity is not Severity.OK:
                what = c.name if c.kind == "job" else f"host {c.name}"
                lines += [f"{c.severity.name} {what}: {reason}" for reason in c.reasons]
                lines += [f"WARNING {what}: {reason}" for reason in c.warnings]
        # Reasons quote stored text (host names): one line each, nothing a terminal obeys.
        sys.stdout.write("\n".join(visible(x) for x in lines) + "\n")
    return int(worst)


def _unknown(message: str, as_json: bool) -> int:
    from schedctl.cli.text import visible

    # On stdout, which monitoring systems store: never a password.
    line = visible(f"SCHEDCTL UNKNOWN - {redact.scrub(message)}")
    if as_json:
        sys.stdout.write(
            json.dumps({"state": "UNKNOWN", "summary": line, "jobs": [], "hosts": []}) + "\n"
        )
    else:
        sys.stdout.write(line + "\n")
    sys.stdout.flush()
    return int(Severity.UNKNOWN)
