"""Operator commands over history: report, check, metrics, prune."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from schedctl import operate
from schedctl.cli.context import state
from schedctl.cli.output import (
    Cell,
    Layout,
    Output,
    Table,
    cell,
    done,
    err,
    iso,
    out,
    print_json,
    print_table,
)
from schedctl.durations import format_duration, format_elapsed, parse_duration
from schedctl.report import JobReport

_STATE_STYLE = {
    "ok": "green",
    "running": "cyan",
    "disabled": "dim",
    "failing": "red",
    "missed": "red",
    "no host": "red",
}
Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _dur(seconds: float | None) -> str:
    return format_elapsed(seconds)


def _ago(row_time: datetime | None, now: datetime) -> str:
    return "-" if row_time is None else _dur((now - row_time).total_seconds()) + " ago"


def report(
    ctx: typer.Context,
    since: Annotated[str, typer.Option(help="Window to report on, e.g. 24h, 7d.")] = "24h",
    tag: Annotated[str | None, typer.Option("--tag", "-t", help="Only jobs with this tag.")] = None,
    json_: Json = False,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML page here.")
    ] = None,
    output: Output = Layout.table,
) -> None:
    """Per job: runs, failures, missed slots, durations, last results, what runs now.

    On a terminal narrower than every column, the columns least needed are left out (job
    and state stay, then failures, missed slots, next...); -o wide shows them all.

    Example: schedctl report --since 7d
    """
    st = state(ctx)
    seconds = parse_duration(since, what="--since")
    rep = operate.report(st.settled_store(), st.db_clock(), seconds, tag)
    if html is not None:
        from schedctl.hostfiles import atomic_write

        atomic_write(html, operate.html_report(st.store(), rep), 0o644)
    if json_:
        print_json(
            {
                "since": iso(rep.since),
                "until": iso(rep.until),
                "jobs": [r.to_dict() for r in rep.rows],
            }
        )
        return
    if html is not None:
        err().print(f"wrote {html}", markup=False)
    if not rep.rows:
        done("no jobs defined" + (f" with tag {tag}" if tag else ""))
        return
    print_table(_table(rep.rows, rep.until, output is Layout.wide))


def _table(rows: list[JobReport], now: datetime, wide: bool = False) -> Table:
    table = Table(wide=wide, header_style="bold")
    table.add_column("JOB", no_wrap=True)
    for col, priority in (("STATE", 0), ("RUNS", 3), ("OK", 10), ("FAILED", 1), ("SKIPPED", 11),
                          ("MISSED", 1), ("RATE", 4), ("P50", 9), ("P95", 8), ("MAX", 12),
                          ("LAST SUCCESS", 5), ("LAST FAILURE", 6), ("RUNNING", 7), ("NEXT", 2),
                          ("HOSTS", 13)):  # fmt: skip
        table.add_column(col, priority=priority, no_wrap=True)
    for r in rows:
        style = _STATE_STYLE.get(r.state, "white")
        table.add_row(
            cell(r.name),
            cell(r.state, style),
            str(r.runs),
            str(r.succeeded),
            cell(r.failed, "red") if r.failed else "0",
            str(r.skipped),
            cell(r.missed, "red") if r.missed else "0",
            "-" if r.success_rate is None else f"{r.success_rate:.0%}",
            _dur(r.p50),
            _dur(r.p95),
            _dur(r.max),
            _ago(r.last_success, now),
            _ago(r.last_failure, now),
            "-" if r.running_host is None else cell(f"{r.running_host} {_dur(r.running_for)}"),
            "-" if r.next_fire is None else r.next_fire.strftime("%Y-%m-%d %H:%M %Z"),
            _hosts_cell(r),
        )
    return table


def _hosts_cell(r: JobReport) -> str | Cell:
    """Return the live hosts carrying a placed job; `*` for a job on every host."""
    if r.live_hosts is None:
        return "*"
    if not r.live_hosts:
        return cell("none live", "red")
    shown = ",".join(r.live_hosts[:3])
    return cell(shown + (f" +{len(r.live_hosts) - 3}" if len(r.live_hosts) > 3 else ""))


def metrics(
    ctx: typer.Context,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write atomically to this file (textfile collector)."),
    ] = None,
) -> None:
    """Print Prometheus metrics for every job. Example: schedctl metrics -o /var/lib/node_exporter/schedctl.prom"""
    st = state(ctx)
    text = operate.metrics(st.settled_store(), st.db_clock())
    if output is None:
        sys.stdout.write(text)
        return
    from schedctl.hostfiles import atomic_write

    atomic_write(output, text, 0o644)


def prune(
    ctx: typer.Context,
    older_than: Annotated[
        str, typer.Option(help="Delete runs older than this (jobs' own --keep wins).")
    ] = format_duration(operate.DEFAULT_OLDER_THAN),
    keep_failed: Annotated[
        str, typer.Option(help="Keep failed, timed-out, killed and lost runs this long.")
    ] = format_duration(operate.DEFAULT_KEEP_FAILED),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would go.")] = False,
    json_: Json = False,
) -> None:
    """Delete old run history in small batches. Example: schedctl prune --older-than 30d"""
    from rich.progress import Progress

    st = state(ctx)
    older = parse_duration(older_than, what="--older-than")
    failed = parse_duration(keep_failed, what="--keep-failed")
    bar = Progress(console=err(), transient=True)
    task = None

    def on_plan(total: int) -> None:
        nonlocal task
        # Only a deletion that takes a while is worth a bar, and only for a person watching.
        if total >= 50_000 and err().is_terminal:
            bar.start()
            task = bar.add_task("deleting runs", total=total)

    def progress(n: int) -> None:
        if task is not None:
            bar.advance(task, n)

    try:
        result = operate.prune(st.store(), st.clock, older, failed, dry_run, on_plan, progress)
    finally:
        if task is not None:
            bar.stop()
    kept = result.kept_claimable
    if json_:
        print_json(
            {
                "dry_run": result.dry_run,
                "total": result.total,
                "jobs": dict(result.deleted),
                "kept_claimable": sum(kept.values()),
                "kept_claimable_jobs": dict(kept),
            }
        )
        return
    verb = "would delete" if result.dry_run else "deleted"
    out().print(f"{verb} {result.total} runs", markup=False)
    for name, n in sorted(result.deleted.items()):
        out().print(f"  {name}: {n}", markup=False)
    if kept:
        out().print(
            f"kept {sum(kept.values())} runs past retention whose slots a firing could still "
            "claim (their rows stop a second run)",
            markup=False,
        )
        for name, n in sorted(kept.items()):
            out().print(f"  {name}: {n}", markup=False)
