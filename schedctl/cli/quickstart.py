"""`schedctl quickstart`: show a working setup in one command."""

from __future__ import annotations

import typer

from schedctl import services
from schedctl.cli.context import state
from schedctl.cli.output import local_time, out, utc_time


def quickstart(ctx: typer.Context) -> None:
    """Add a sample job to the current database and show when it fires.

    Example: schedctl quickstart
    """
    st = state(ctx)
    store = st.store()
    job, added = services.ensure_sample_job(store, st.default_timezone(), st.clock)
    where = st.settings.database
    out().print(f"database: {where} ({st.settings.source})", markup=False)
    verb = "added sample job" if added else "sample job already present:"
    out().print(
        f"{verb} {job.name}: {job.spec.schedule} ({job.spec.timezone}) -> "
        f"{' '.join(job.spec.command)}",
        markup=False,
    )
    out().print("next fire times:")
    for x in services.next_fires(job, st.clock.now(), 5):
        out().print(f"  {local_time(x, job.spec.timezone)}   ({utc_time(x)})", markup=False)
    out().print(
        "\ntry: schedctl list | schedctl show hello | schedctl next hello --count 10\n"
        "     schedctl add backup --schedule '30 2 * * *' -- /usr/local/bin/backup",
        markup=False,
    )
