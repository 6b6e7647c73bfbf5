"""The Typer application: global options and command registration."""

from __future__ import annotations

from typing import Annotated

import typer

from schedctl import __version__
from schedctl.cli import daemon, db, deploy, jobs, ops, runs
from schedctl.cli.context import State, state
from schedctl.cli.quickstart import quickstart

app = typer.Typer(
    suggest_commands=False,  # click already says "Did you mean"
    name="schedctl",
    help="Run periodic jobs on a fleet of Linux hosts, exactly once per scheduled slot.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"schedctl {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    ctx: typer.Context,
    db_url: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="Database URL (postgresql://... or sqlite:////path); "
            "default: $SCHEDCTL_DATABASE_URL, the config file, or the embedded SQLite file. "
            "Visible to all users in ps: keep passwords in $SCHEDCTL_DATABASE_URL.",
            show_default=False,
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Run periodic jobs on a fleet of Linux hosts, exactly once per scheduled slot."""
    ctx.obj = State(db_flag=db_url, debug=debug)


jobs.register(app)
runs.register(app)
deploy.register(app)
ops.register(app)
daemon.register(app)
app.command()(quickstart)


@app.command(
    "run",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def run_command(ctx: typer.Context) -> None:
    """Run a job's current slot exactly once across hosts (see `schedctl run --help`)."""
    # entry.py normally dispatches `run` before this application is loaded; this entry lists
    # it in --help and serves the odd invocation that reaches Typer first.
    from schedctl.cli.run import main as run_main

    raise typer.Exit(run_main(list(ctx.args), state(ctx).db_flag))


@app.command(
    "check",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def check_command(ctx: typer.Context) -> None:
    """Monitoring check: exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (see `schedctl check --help`)."""
    # Like `run`, entry.py dispatches `check` before this application is loaded.
    from schedctl.cli.check import main as check_main

    raise typer.Exit(check_main(list(ctx.args), state(ctx).db_flag))


app.add_typer(db.app, name="db")
