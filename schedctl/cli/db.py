"""`schedctl db`: schema status and upgrades."""

from __future__ import annotations

from typing import Annotated

import typer

from schedctl.cli.context import state
from schedctl.cli.output import done, out, print_json
from schedctl.errors import SchemaError, ValidationError

app = typer.Typer(
    suggest_commands=False,
    help="Database schema: status, upgrade and role grants.",
    no_args_is_help=True,
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


@app.command()
def grant(
    ctx: typer.Context,
    admin: Annotated[
        str | None,
        typer.Option("--admin", metavar="ROLE", help="Role for operators: every command."),
    ] = None,
    runner: Annotated[
        str | None,
        typer.Option("--runner", metavar="ROLE", help="Role for hosts: run, sync, daemon, notify."),
    ] = None,
    reader: Annotated[
        str | None,
        typer.Option("--reader", metavar="ROLE", help="Role for dashboards and check: reads only."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the SQL; change nothing.")
    ] = False,
    rekind: Annotated[
        bool,
        typer.Option("--rekind", help="Let a role granted another kind before change kind."),
    ] = False,
) -> None:
    """Give roles exactly what operators, hosts or dashboards need (PostgreSQL only).

    Run it as the owner of schedctl's tables, and again after every `db upgrade`.

    A role that does not exist is created without a login.

    Example: schedctl db grant --admin ops --runner hosts --reader dashboards
    """
    from schedctl.db.grants import login_hint
    from schedctl.db.schema import grant as apply_grants

    roles = {k: v for k, v in (("admin", admin), ("runner", runner), ("reader", reader)) if v}
    if not roles:
        raise ValidationError("give at least one of --admin ROLE, --runner ROLE, --reader ROLE")
    if len(set(roles.values())) < len(roles):
        raise ValidationError("give each of --admin, --runner and --reader a role of its own")
    st = state(ctx)
    outcome = apply_grants(st.settings.database, roles, dry_run, rekind)
    if dry_run:
        for statement in outcome.sql:
            out().print(f"{statement};", markup=False, highlight=False, soft_wrap=True)
        return
    for role in outcome.created:
        done(f"created role {role} without a login; {login_hint(role)}")
    for role, was in outcome.rekinded.items():
        now = next(k for k, r in roles.items() if r == role)
        done(f"role {role} changed kind: {was} before, {now} now")
    given = ", ".join(f"{kind} {role}" for kind, role in roles.items())
    if outcome.changed:
        done(f"granted {given} ({st.settings.database})")
    else:
        done(f"grants already in place: {given} ({st.settings.database})")
