"""Import commands: turn an existing crontab into schedctl jobs."""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from schedctl import config, cronimport
from schedctl.cli.context import state
from schedctl.cli.output import done, local_time, print_json
from schedctl.errors import NotFoundError, ValidationError
from schedctl.schedule import Schedule
from schedctl.validate import check_name

import_app = typer.Typer(
    suggest_commands=False,
    help="Turn existing schedules into jobs (one transaction: all or nothing).",
    no_args_is_help=True,
)

# Files read with /etc/cron.d syntax (a user field after the schedule) unless told otherwise.
_SYSTEM_FILES = ("/etc/crontab",)
_SYSTEM_DIRS = ("/etc/cron.d/",)


def _syntax(source: str, system: bool | None) -> cronimport.Syntax:
    if system is not None:
        return "system" if system else "user"
    path = os.path.abspath(source) if source != "-" else ""
    if path in _SYSTEM_FILES or path.startswith(_SYSTEM_DIRS):
        return "system"
    return "user"


def _read(source: str) -> str:
    if source == "-":
        data = sys.stdin.buffer.read()
    else:
        try:
            data = Path(source).read_bytes()
        except FileNotFoundError:
            raise NotFoundError(
                f"no such file {source!r}: give a crontab file, or - for stdin"
            ) from None
        except OSError as e:
            raise ValidationError(f"cannot read {source!r}: {e.strerror}") from None
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise ValidationError(f"{source!r} is not UTF-8 text: convert it first (iconv)") from None


@import_app.command("crontab")
def crontab(
    ctx: typer.Context,
    source: Annotated[
        str, typer.Argument(help="A crontab file, or - to read standard input (crontab -l |).")
    ] = "-",
    user: Annotated[
        str | None,
        typer.Option("--user", "-u", help="Run the jobs as this user (user-crontab syntax)."),
    ] = None,
    system: Annotated[
        bool | None,
        typer.Option(
            "--system/--no-system",
            help="/etc/cron.d syntax: a user field after the schedule "
            "[default: for /etc/crontab and /etc/cron.d/*].",
            show_default=False,
        ),
    ] = None,
    tz: Annotated[
        str | None,
        typer.Option("--tz", help="Zone of lines without CRON_TZ/TZ [default: the host's]."),
    ] = None,
    name_prefix: Annotated[
        str, typer.Option("--name-prefix", help="Put this before every derived job name.")
    ] = "",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; store nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Import a crontab's lines as jobs: all in one transaction, or nothing.

    Lines schedctl cannot run exactly as cron would (@reboot, an unescaped %, a schedule it
    cannot represent) are listed as skipped with the reason. Job names are the program's name
    and a hash of the line, so importing the same file again changes nothing.

    Example: crontab -l | schedctl import crontab - --user alice --dry-run
    """
    st = state(ctx)
    syntax = _syntax(source, system)
    if syntax == "system" and user is not None:
        raise ValidationError(
            "--user is for user crontabs: an /etc/cron.d line names its own user "
            "(leave out --user, or give --no-system)"
        )
    if name_prefix:
        check_name(name_prefix + "x")
    targets, events = config.notify_defaults(os.environ)
    defaults = cronimport.Defaults(
        timezone=tz or st.default_timezone(),
        user=user,
        name_prefix=name_prefix,
        notify=targets,
        **({"notify_on": events} if events else {}),
    )
    parsed = cronimport.parse(_read(source), syntax, defaults)
    outcome = cronimport.import_jobs(st.store(), parsed, st.clock, dry_run)
    retire = cronimport.retire_commands(
        (p.line for p in outcome.created + outcome.unchanged), source, syntax, user
    )
    if as_json:
        print_json(_json(source, syntax, dry_run, outcome, retire))
    else:
        _print(source, syntax, dry_run, outcome, retire, st.clock.now())


def _job_json(p: cronimport.Planned) -> dict[str, Any]:
    s = p.spec
    return {
        "line": p.line,
        "name": s.name,
        "schedule": s.schedule,
        "timezone": s.timezone,
        "command": list(s.command),
        "shell": s.shell,
        "user": s.run_as_user,
        "env": dict(s.env),
        "notify": list(s.notify),
        "description": s.description,
    }


def _json(
    source: str,
    syntax: str,
    dry_run: bool,
    o: cronimport.Outcome,
    retire: list[str],
) -> dict[str, Any]:
    return {
        "source": source,
        "syntax": syntax,
        "dry_run": dry_run,
        "created": [_job_json(p) for p in o.created],
        "unchanged": [_job_json(p) for p in o.unchanged],
        "skipped": [{"line": s.line, "text": s.text, "reason": s.reason} for s in o.skipped],
        "retire": retire,
    }


def _print(
    source: str,
    syntax: str,
    dry_run: bool,
    o: cronimport.Outcome,
    retire: list[str],
    now: datetime,
) -> None:
    verb = "would create" if dry_run else "created"
    done(
        f"{source} ({'/etc/cron.d' if syntax == 'system' else 'user crontab'} syntax): "
        f"{len(o.created)} {verb}, {len(o.unchanged)} unchanged, {len(o.skipped)} skipped"
        + (" (dry run: nothing stored)" if dry_run else "")
    )
    for word, group in ((verb, o.created), ("unchanged", o.unchanged)):
        for p in group:
            s = p.spec
            nxt = Schedule.of(s.schedule, s.timezone).next_after(now, 1)
            who = f" as {s.run_as_user}" if s.run_as_user else ""
            shown = s.command[0] if s.shell else " ".join(s.command)
            done(
                f"  {word} {s.name}: line {p.line}, {s.schedule} {s.timezone}{who}, "
                f"next {local_time(nxt[0], s.timezone)}: {shown}"
            )
    for k in o.skipped:
        done(f"  skipped line {k.line}: {k.reason}: {k.text.strip()}")
    if retire:
        done(
            "Once `schedctl sync crontab` (or `sync systemd`) runs these jobs, comment out the "
            "original lines so they do not run twice:"
        )
        for command in retire:
            done(f"  {command}")
