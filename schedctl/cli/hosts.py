"""`schedctl hosts`: the hosts that registered, their labels and the jobs each carries."""

from __future__ import annotations

from typing import Annotated

import typer

from schedctl import operate
from schedctl.cli.context import state
from schedctl.cli.output import Layout, Output, Table, cell, done, print_json, print_table
from schedctl.durations import format_age
from schedctl.placement import format_labels


def hosts(
    ctx: typer.Context,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    forget: Annotated[
        str | None,
        typer.Option(
            "--forget",
            help="Remove this host's row (a host taken out of the fleet; it comes back if it "
            "syncs or runs again).",
            show_default=False,
        ),
    ] = None,
    output: Output = Layout.table,
) -> None:
    """List the hosts that ran sync, daemon or run: labels, the jobs each carries, last seen.

    A host is live if seen in the last 5 minutes (by the database's clock). Example: schedctl hosts --json
    """
    st = state(ctx)
    store = st.store()
    if forget is not None:
        operate.forget_host(store, forget)
        done(f"forgot host {forget}")
        return
    found = operate.hosts(store)
    if json_:
        print_json([h.to_dict() for h in found])
        return
    if not found:
        done("no host has registered yet: hosts register when they run sync, daemon or run")
        return
    table = Table(wide=output is Layout.wide, header_style="bold")
    table.add_column("HOST", no_wrap=True)
    for col, priority in (("LABELS", 3), ("SCHEDULER", 4), ("VERSION", 5), ("LAST SEEN", 1)):
        table.add_column(col, priority=priority, no_wrap=True)
    table.add_column("JOBS", priority=2, shrink=16, overflow="fold")
    for h in found:
        seen = f"{format_age(h.seen_seconds)} ago"
        table.add_row(
            cell(h.name),
            cell(format_labels(h.labels)),
            cell(h.scheduler or "-"),
            cell(h.version),
            cell(seen) if h.live else cell(seen + " (not live)", "red"),
            cell(",".join(h.jobs) or "-"),
        )
    print_table(table)
