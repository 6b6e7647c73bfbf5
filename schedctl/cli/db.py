"""`schedctl db`: schema status and upgrades."""

from __future__ import annotations

from typing import Annotated

import typer

from schedctl.cli.context import state
from schedctl.cli.output import done, out, print_json
from schedctl.errors import SchemaError

app = typer.Typer(
    suggest_commands=False, help="Database schema: status and upgrade.", no_args_is_help=True
)


@app.command()
def upgrade(ctx: typer.Context) -> None:
    """Create or migrate the schema to this schedctl's version. Example: schedctl db upgrade"""
    from schedctl.db.schema import upgrade as migrate

    st = state(ctx)
    before, after = migrate(st.settings.database)
    if before == after:
        done(f"schema already at revision {after} ({st.settings.database})")
    else:
        done(
            f"schema upgraded from {before or 'empty'} to revision {after} ({st.settings.database})"
        )


@app.command()
def status(
    ctx: typer.Context,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Test the connection and compare the schema with this schedctl (exit 5 if not current).

    Example: schedctl db status
    """
    from schedctl.db.repository import open_repository

    st = state(ctx)
    store = open_repository(st.settings.database, st.clock, "schedctl db")
    try:
        schema = store.schema_status()
        server = store.server_version()
    finally:
        store.close()
    info = {
        "url": str(st.settings.database),
        "source": st.settings.source,
        "source_note": st.settings.personal_database_note(),
        "backend": st.settings.database.backend,
        "server": server,
        "schema_revision": schema.current,
        "schema_head": schema.head,
        "schema_state": schema.state,
    }
    if json_:
        print_json(info)
    else:
        for key, value in info.items():
            out().print(f"{key:16} {value if value is not None else '-'}", markup=False)
    if schema.state != "current":
        raise SchemaError(
            f"schema is {schema.state}"
            + (
                ": run `schedctl db upgrade`"
                if schema.state in ("missing", "behind")
                else ": upgrade schedctl on this host"
            )
        )
