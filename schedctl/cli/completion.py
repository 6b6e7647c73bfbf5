"""Shell completion: the scripts for bash, zsh and fish, and job names from the database."""

from __future__ import annotations

import contextlib
import io
import os
from typing import Annotated

import click
import typer

from schedctl.errors import ValidationError

COMPLETE_VAR = "_SCHEDCTL_COMPLETE"
SHELLS = ("bash", "zsh", "fish")


def complete_job(ctx: click.Context, incomplete: str) -> list[str]:
    """Return the stored job names starting with `incomplete`; nothing on any failure.

    Completion runs inside the user's shell: an unreachable database, a bad URL or a missing
    file must show no suggestion rather than an error between the prompt and the cursor.
    """
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            return [n for n in _job_names(ctx) if n.startswith(incomplete)]
    except Exception:
        return []


def _job_names(ctx: click.Context) -> list[str]:
    from schedctl import config
    from schedctl.clock import SystemClock
    from schedctl.db.repository import open_repository

    db_flag = ctx.find_root().params.get("db_url")
    url = config.resolve(os.environ, db_flag if isinstance(db_flag, str) else None).database
    if url.backend == "sqlite" and (url.sqlite_path is None or not url.sqlite_path.exists()):
        return []  # completing never creates the embedded database
    # A keystroke cannot wait for a server that does not answer.
    os.environ.setdefault("PGCONNECT_TIMEOUT", "2")
    store = open_repository(url, SystemClock(), "schedctl completion")
    try:
        return sorted(store.job_names().values())
    finally:
        store.close()


def complete(instruction: str) -> int:
    """Answer the shell's completion request ($_SCHEDCTL_COMPLETE), silently on any failure."""
    from click.shell_completion import shell_complete

    from schedctl.cli.app import app

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            command = typer.main.get_command(app)
            return shell_complete(command, {}, "schedctl", COMPLETE_VAR, instruction)
    except Exception:
        return 0


def completion(
    shell: Annotated[str, typer.Argument(help="bash, zsh or fish.", metavar="SHELL")],
) -> None:
    """Print the completion script for SHELL: commands, options and job names.

    Example: schedctl completion bash > /etc/bash_completion.d/schedctl
    """
    from click.shell_completion import get_completion_class

    from schedctl.cli.app import app

    found = get_completion_class(shell) if shell in SHELLS else None
    if found is None:
        raise ValidationError(f"unknown shell {shell!r}: use one of {', '.join(SHELLS)}")
    command = typer.main.get_command(app)
    print(found(command, {}, "schedctl", COMPLETE_VAR).source())
