"""Run history commands: history, logs, locks."""

from __future__ import annotations

import csv
import json
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Annotated
from zoneinfo import ZoneInfo

import typer

from schedctl import operate
from schedctl.cli.completion import complete_job
from schedctl.cli.context import State, state
from schedctl.cli.output import (
    Cell,
    Layout,
    Output,
    Table,
    cell,
    done,
    iso,
    local_time,
    note,
    print_json,
    print_table,
    utc_time,
)
from schedctl.cli.text import csv_cell, visible_lines
from schedctl.durations import format_elapsed, parse_duration
from schedctl.errors import ValidationError
from schedctl.history import ChangeRecord, Run

if TYPE_CHECKING:
    from schedctl.db.repository import RefusalRow

_STATUS_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "timed_out": "red",
    "lost": "red",
    "lock_lost": "red",
    "killed": "yellow",
    "skipped_overlap": "yellow",
    "running": "cyan",
}
_CSV_FIELDS = [
    "id", "job", "slot", "trigger", "attempt", "status", "exit_code", "signal", "host", "pid",
    "claimed_at", "started_at", "finished_at", "duration_seconds", "output_bytes",
    "output_truncated", "clock_skew_seconds",
]  # fmt: skip


def history(
    ctx: typer.Context,
    job: Annotated[
        str | None, typer.Argument(help="Only this job.", autocompletion=complete_job)
    ] = None,
    status: Annotated[str | None, typer.Option(help="Only runs with this status.")] = None,
    since: Annotated[
        str | None, typer.Option(help="Only runs claimed in this window, e.g. 7d.")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Only runs on this host.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many rows.")] = 50,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    csv_: Annotated[bool, typer.Option("--csv", help="Print CSV.")] = False,
    missed: Annotated[
        bool,
        typer.Option("--missed", help="List JOB's slots no host ran instead [--since default 7d]."),
    ] = False,
    changes: Annotated[
        bool,
        typer.Option(
            "--changes", help="List changes to jobs instead: who, when, what (-o wide: the diff)."
        ),
    ] = False,
    refused: Annotated[
        bool,
        typer.Option(
            "--refused",
            help="List the hosts that refuse to run a job's definition instead (signature or "
            "host policy).",
        ),
    ] = False,
    output: Output = Layout.table,
) -> None:
    """Show recorded runs, newest first. Example: schedctl history nightly-backup --since 7d

    On a terminal narrower than every column, the columns least needed are left out (the run
    id and job stay, then status, start, duration...); -o wide shows them all.
    """
    st = state(ctx)
    if json_ and csv_:
        raise ValidationError("--json and --csv exclude each other: pick one")
    if missed and (status is not None or host is not None):
        raise ValidationError(
            "--missed lists slots no host ran: --status and --host do not apply; drop them"
        )
    since_seconds = None if since is None else parse_duration(since, what="--since")
    if changes:
        if missed or csv_ or status is not None or host is not None:
            raise ValidationError(
                "--changes lists changes to jobs: --missed, --csv, --status and --host do not "
                "apply; drop them"
            )
        _changes(st, job, since_seconds, limit, json_, output is Layout.wide)
        return
    if missed:
        _missed(st, job, since_seconds, json_, csv_)
        return
    store = st.settled_store()
    refusals = operate.refusals(store, job, host)
    if refused:
        _refused(refusals, job, json_)
        return
    found = operate.history(store, st.db_clock(), job, status, since_seconds, host, limit)
    if json_:
        print_json([r.to_dict() for r in found])
        return
    if csv_:
        # RFC 4180 line ends: a field holding a lone carriage return is then quoted too, so no
        # stored text can start a row of its own (and a formula with it).
        writer = csv.DictWriter(sys.stdout, fieldnames=_CSV_FIELDS, lineterminator="\r\n")
        writer.writeheader()
        # On a terminal, stored text (a host name a runner reported) is shown as a table shows
        # it, so none of it can drive the terminal; piped or redirected it stays exact.
        tty = sys.stdout.isatty()
        writer.writerows({k: csv_cell(v, tty) for k, v in r.to_dict().items()} for r in found)
        return
    for refusal in refusals:
        # Refused runs take no slot and leave no run row: say so beside the runs.
        note(
            f"host {refusal.host} refuses job {refusal.job_name} ({refusal.kind}: "
            f"{refusal.reason}), {refusal.times} time(s) since {utc_time(refusal.first_at)}; "
            f"see `schedctl history --refused`"
        )
    if not found:
        done("no runs recorded" + (f" for {job}" if job else ""))
        return
    table = Table(wide=output is Layout.wide, header_style="bold")
    # The id and the job always stay (`logs` takes the id).
    for col, priority in (("ID", 0), ("JOB", 0), ("SLOT", 6), ("TRIGGER", 8), ("ATT", 7),
                          ("STATUS", 1), ("EXIT", 4), ("HOST", 5), ("STARTED", 2),
                          ("DURATION", 3)):  # fmt: skip
        table.add_column(col, priority=priority, no_wrap=True)
    for r in found:
        table.add_row(
            str(r.id),
            cell(r.job_name),
            _when(r.slot),
            cell(r.trigger),
            str(r.attempt),
            cell(r.status, _STATUS_STYLE.get(r.status, "white")),
            "-" if r.exit_code is None else str(r.exit_code),
            cell(r.host),
            _when(r.started_at),
            format_elapsed(r.duration_seconds),
        )
    print_table(table)


def _refused(found: list[RefusalRow], job: str | None, json_: bool) -> None:
    if json_:
        print_json([r.to_dict() for r in found])
        return
    if not found:
        done("no host refuses " + (job if job else "any job"))
        return
    table = Table(header_style="bold")
    for col, priority in (("JOB", 0), ("HOST", 0), ("KIND", 3), ("SINCE", 2), ("LAST", 4),
                          ("COUNT", 5)):  # fmt: skip
        table.add_column(col, priority=priority, no_wrap=True)
    table.add_column("REASON", priority=1, shrink=16, overflow="fold")
    for r in found:
        table.add_row(cell(r.job_name), cell(r.host), cell(r.kind, "red"), utc_time(r.first_at),
                      utc_time(r.last_at), str(r.times), cell(r.reason))  # fmt: skip
    print_table(table)


def _missed(st: State, job: str | None, since_seconds: int | None, json_: bool, csv_: bool) -> None:
    if job is None:
        raise ValidationError("--missed needs a JOB: schedctl history JOB --missed")
    store = st.settled_store()
    slots = operate.missed_slots(store, st.db_clock(), job, since_seconds or 7 * 86400)
    zone = store.load_job(job).spec.timezone
    if json_:
        print_json([{"job": job, "slot": iso(s)} for s in slots])
        return
    if csv_:
        writer = csv.writer(sys.stdout, lineterminator="\r\n")
        writer.writerow(["job", "slot"])
        writer.writerows([csv_cell(job, sys.stdout.isatty()), iso(s)] for s in slots)
        return
    if not slots:
        done(f"no missed slots for {job}")
        return
    table = Table(header_style="bold")
    for col in ("JOB", "MISSED SLOT", "UTC"):
        table.add_column(col, no_wrap=True)
    for s in slots:
        table.add_row(cell(job), local_time(s, zone), utc_time(s))
    print_table(table)


def _changes(
    st: State, job: str | None, since_seconds: int | None, limit: int, json_: bool, wide: bool
) -> None:
    found = operate.changes(st.store(), st.db_clock(), job, since_seconds, limit)
    if json_:
        print_json([c.to_dict() for c in found])
        return
    if not found:
        done("no changes recorded" + (f" for {job}" if job else ""))
        return
    table = Table(wide=wide, header_style="bold")
    table.add_column("WHEN (UTC)", no_wrap=True)
    # A long job name and what changed fold onto more lines rather than push the table past
    # the terminal; the rest never wraps.
    table.add_column("JOB", shrink=24, overflow="fold")
    table.add_column("WHO", no_wrap=True)
    table.add_column("REV", priority=1, no_wrap=True)
    if wide:
        # The signer a change's row claimed: the log cannot check a signature, `verify` does.
        for col in ("OS USER", "CLIENT", "SIGNED AS (claimed)"):
            table.add_column(col, no_wrap=True)
    table.add_column("WHAT", shrink=20, overflow="fold")
    for c in found:
        row: list[str | Cell] = [
            c.at.strftime("%Y-%m-%d %H:%M:%S"),
            cell(c.job_name),
            cell(c.who),
            _dash(c.revision),
        ]
        if wide:
            client = "@".join(x for x in (c.application_name, c.client_addr) if x)
            row += [cell(c.os_user or "-"), cell(client or "-"), cell(c.signer or "-")]
        table.add_row(*row, cell(change_text(c, wide)))
    print_table(table)


def change_text(c: ChangeRecord, full: bool) -> str:
    """Return what a change did: the fields it changed, or with `full` each old -> new value.

    Environment values are never recorded, so never shown: `env: +NEW ~CHANGED -REMOVED`.
    """
    if c.kind != "update":
        verb = "created" if c.kind == "create" else "deleted"
        if not full:
            return verb
        fields = c.definition()
        parts = [
            f"env: {' '.join(v)}" if k == "env" else f"{k}={_value(v)}"
            for k, v in fields.items()
            if k != "env" or v
        ]
        return f"{verb}: " + "; ".join(parts)
    diff = c.diff()
    if not full:
        return ", ".join(diff)
    parts = []
    for field, d in diff.items():
        if field == "env":
            keys = [f"{mark}{k}" for mark, what in (("+", "added"), ("~", "changed"),
                    ("-", "removed")) for k in d.get(what, [])]  # fmt: skip
            parts.append("env: " + " ".join(keys))
        elif field == "signature":
            parts.append(_signature_text(d["old"], d["new"]))
        else:
            parts.append(f"{field}: {_value(d['old'])} -> {_value(d['new'])}")
    return "; ".join(parts)


def _signature_text(old: object, new: object) -> str:
    """Say how a change left the signature, naming the signer only as claimed."""
    if not isinstance(new, dict):
        return "signature removed"
    claimed = f"claimed by {_value(new.get('signer'))}, key {_value(new.get('key'))}"
    return ("re-signed" if isinstance(old, dict) else "signed") + f" ({claimed})"


def _value(value: object) -> str:
    # JSON: strings quoted, newlines escaped, None as null; the cell escapes what is left.
    return json.dumps(value, ensure_ascii=False)


def _dash(value: int | None) -> str:
    return "-" if value is None else str(value)


def _when(dt: object) -> str:
    from datetime import datetime

    return dt.strftime("%Y-%m-%d %H:%M:%S %Z") if isinstance(dt, datetime) else "-"


def logs(
    ctx: typer.Context,
    target: Annotated[
        str | None,
        typer.Argument(
            metavar="RUN_ID|JOB",
            autocompletion=complete_job,
            help="A run id (all digits, from history) or a job: its latest run that ended.",
            show_default=False,
        ),
    ] = None,
    failed: Annotated[
        bool, typer.Option("--failed", help="The job's latest failed run instead.")
    ] = False,
    job: Annotated[
        str | None,
        typer.Option("--job", help="The job, named explicitly (for a job named all digits)."),
    ] = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="Write the output as stored, even to a terminal.")
    ] = False,
    json_: Annotated[
        bool, typer.Option("--json", help="Print the run's fields and its output as JSON.")
    ] = False,
) -> None:
    """Print the output a run left (its stored tail). Example: schedctl logs --failed backup

    An argument of digits only is a run id; a job whose name is all digits is given with
    --job. The output goes to stdout as stored; notes (which run, `(no output)`, truncation)
    go to stderr. To a terminal, control characters other than newline and tab are shown as
    \\xNN escapes, so a job's output cannot drive the terminal.
    """
    st = state(ctx)
    if job is not None and target is not None:
        raise ValidationError(f"give a RUN_ID|JOB or --job {job}, not both")
    if job is None and target is not None and not target.isdigit():
        job = target
    if job is None and target is None:
        raise ValidationError("missing RUN_ID|JOB: schedctl logs JOB (see `schedctl logs --help`)")
    if job is None:
        if failed:
            raise ValidationError(
                f"--failed goes with a job, not run id {target}: for a job named {target!r} "
                f"give --job {target}"
            )
        run: Run = operate.get_run(st.store(), int(str(target)))
        if json_:
            print_json({**run.to_dict(), "output": run.output_tail or ""})
            return
    else:
        run = operate.latest_run(st.store(), job, failed)
        if json_:
            print_json({**run.to_dict(), "output": run.output_tail or ""})
            return
        code = "" if run.exit_code is None else f", exit {run.exit_code}"
        when = _when(run.finished_at or run.claimed_at)
        sys.stderr.write(f"run {run.id} of {run.job_name} ({run.status}"
                         f"{code}, {when}):\n")  # fmt: skip
    text = run.output_tail or ""
    if not text:
        sys.stderr.write("(no output)\n")
        return
    if run.output_truncated:
        kept = len(text.encode())
        sys.stderr.write(
            f"(output truncated: the last {kept} of {run.output_bytes} bytes are kept)\n"
        )
    # A job's output may hold escape sequences that retitle, recolour or rewrite the screen.
    sys.stdout.write(text if raw or not sys.stdout.isatty() else visible_lines(text))


def locks(
    ctx: typer.Context,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    output: Output = Layout.table,
) -> None:
    """Show which locks are held now (jobs' and in-app), by which host and process.

    Example: schedctl locks
    """
    st = state(ctx)
    store = st.settled_store()
    lock_dir = st.settings.data_dir / "locks"
    held = operate.lock_holders(store, lock_dir)
    app = operate.app_lock_holders(store, lock_dir)
    if json_:
        print_json([h.to_dict() for h in held] + [a.to_dict() for a in app])
        return
    if not held and not app:
        done("no job locks or in-app locks are held")
        return
    if held:
        table = Table(wide=output is Layout.wide, header_style="bold")
        for col, priority in (("JOB", 0), ("RUN", 0), ("HOST", 1), ("PID", 3), ("SINCE", 2)):
            table.add_column(col, priority=priority, no_wrap=True)
        for h in held:
            table.add_row(
                cell(h.job_name or f"(job id {h.job_id})"),
                "-" if h.run_id is None else str(h.run_id),
                cell(h.host or "-"),
                "-" if h.pid is None else str(h.pid),
                _when(h.since),
            )
        print_table(table)
    if app:
        table = Table(wide=output is Layout.wide, header_style="bold")
        for col, priority in (("IN-APP LOCK", 0), ("HOST", 1), ("PID", 3), ("SINCE", 2)):
            table.add_column(col, priority=priority, no_wrap=True)
        for a in app:
            table.add_row(
                cell(a.name or f"(key {a.key})"),
                cell(a.host or "-"),
                "-" if a.pid is None else str(a.pid),
                _when(a.since),
            )
        print_table(table)


def _minute(dt: datetime, zone: str) -> str:
    """Format `dt` in `zone` to the minute, as fire times are."""
    return dt.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z")


def _left(seconds: float) -> str:
    """Return a time left as `systemctl list-timers` says it: `in 4 min`, `in 2h 5min`."""
    s = max(0, int(seconds))
    if s < 60:
        return f"in {s}s"
    if s < 3600:
        return f"in {s // 60} min"
    if s < 86400:
        return f"in {s // 3600}h {s % 3600 // 60}min"
    return f"in {s // 86400}d {s % 86400 // 3600}h"


def upcoming(
    ctx: typer.Context,
    within: Annotated[
        str, typer.Option("--within", help="Window to list fire times in, e.g. 30m, 1d.")
    ] = "1h",
    all_: Annotated[bool, typer.Option("--all", "-a", help="Also disabled jobs.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    output: Output = Layout.table,
) -> None:
    """List the jobs' next fire times, soonest first, with each job's last result.

    Every fire time within --within (at most 1,000 per job), and a job's next one even when
    it is later, by the database's clock: the same for every host of the fleet. Example: schedctl upcoming --within 6h
    """
    st = state(ctx)
    seconds = parse_duration(within, what="--within")
    now = st.db_clock().now()
    found = operate.upcoming(st.store(), now, seconds, all_)
    if json_:
        print_json([u.to_dict(now) for u in found])
        return
    if not found:
        done("no enabled jobs" + ("" if all_ else " (--all lists disabled ones)"))
        return
    table = Table(wide=output is Layout.wide, header_style="bold")
    for col, priority in (("NEXT", 1), ("LEFT", 0), ("LAST", 3), ("RESULT", 2), ("JOB", 0),
                          ("ON", 4)):  # fmt: skip
        table.add_column(col, priority=priority, no_wrap=True)
    for u in found:
        zone = u.job.spec.timezone
        status = u.last_status
        table.add_row(
            _minute(u.at, zone),
            _left((u.at - now).total_seconds()),
            "-" if u.last_at is None else _minute(u.last_at, zone),
            "-" if status is None else cell(status, _STATUS_STYLE.get(status, "white")),
            cell(u.job.name) if u.job.spec.enabled else cell(f"{u.job.name} (disabled)", "yellow"),
            cell(u.job.spec.placement or "*"),
        )
    print_table(table)
