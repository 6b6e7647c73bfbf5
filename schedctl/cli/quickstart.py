"""`schedctl quickstart`: show a working setup in one command."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Literal, cast

import click
import typer

from schedctl import deploy, services
from schedctl.cli.context import state
from schedctl.cli.output import done, local_time, out, utc_time

Install = Literal["crontab", "systemd-user", "none"]
_CHOICES: tuple[Install, ...] = ("crontab", "systemd-user", "none")


def _how_to_fire(root: bool) -> list[str]:
    """Return the commands that make the sample job fire on this host."""
    if root:
        return [
            "schedctl enable hello && schedctl sync systemd     (or: ... && schedctl sync crontab)"
        ]
    return [
        "schedctl enable hello && schedctl sync crontab          (your crontab)",
        "schedctl enable hello && schedctl sync systemd --user   (your own timers)",
    ]


def _ask() -> Install:
    """Ask on a terminal how to install the sample job."""
    answer: str = typer.prompt(
        "Make the sample job fire? crontab (your crontab), systemd-user (your own timers), none",
        default="none",
        type=click.Choice(list(_CHOICES)),
    )
    return cast(Install, answer)


def _install(ctx: typer.Context, how: Install) -> None:
    """Install the enabled jobs placed on this host as `how` says (the sample job among them)."""
    from schedctl.cli.deploy import CRON_FILE, _cron_zone, _host, _target, _unit_env_file

    st = state(ctx)
    if how == "crontab":
        file = CRON_FILE if os.geteuid() == 0 else None
        report = deploy.sync_crontab(
            st.store(), st.clock, _target(None), _cron_zone(None), file, None, False, _host()
        )
        where = str(file) if file else f"the crontab of {deploy.current_user()}"
    else:
        target = _target(None, _unit_env_file(None, user=True))
        unit_dir = deploy.user_unit_dir(os.environ)
        report = deploy.sync_systemd(
            st.store(), st.clock, target, unit_dir, False, True, _host(), user=True
        )
        where = f"{unit_dir} (systemctl --user)"
    for argv in report.commands:
        done(f"ran: {' '.join(argv)}")
    done(f"installed the enabled jobs into {where}")


def quickstart(
    ctx: typer.Context,
    install: Annotated[
        str | None,
        typer.Option(
            "--install",
            help="Make the sample job fire: 'crontab' (your crontab; /etc/cron.d as root), "
            "'systemd-user' (your own timers), or 'none': the sample job stays disabled "
            "[default: asked on a terminal, else none].",
            show_default=False,
            click_type=click.Choice(list(_CHOICES)),
        ),
    ] = None,
) -> None:
    """Add a sample job to the current database, show when it fires, and how to make it fire.

    A sample job nothing installs is added disabled, so that it is never reported missed.
    Example: schedctl quickstart --install crontab
    """
    st = state(ctx)
    store = st.store()
    how: Install
    if install is not None:
        how = cast(Install, install)
    elif sys.stdin.isatty() and sys.stdout.isatty():
        how = _ask()
    else:
        how = "none"
    job, added = services.ensure_sample_job(store, st.default_timezone(), st.clock, enabled=False)
    where = st.settings.database
    out().print(f"database: {where} ({st.settings.source})", markup=False)
    verb = "added sample job" if added else "sample job already present:"
    out().print(
        f"{verb} {job.name}: {job.spec.schedule} ({job.spec.timezone}) -> "
        f"{' '.join(job.spec.command)}",
        markup=False,
    )
    if how != "none":
        enabled_before = job.spec.enabled
        if not enabled_before:
            job = services.set_enabled(store, job.name, True, st.clock).job
        try:
            _install(ctx, how)
        except BaseException:
            if not enabled_before:  # not installed: it must not be reported missed
                services.set_enabled(store, job.name, False, st.clock)
            raise
    out().print(
        "next fire times:" if job.spec.enabled else "next fire times, once enabled and installed:"
    )
    for x in services.next_fires(job, st.clock.now(), 5):
        out().print(f"  {local_time(x, job.spec.timezone)}   ({utc_time(x)})", markup=False)
    if not job.spec.enabled:
        out().print(
            "\nthe sample job is disabled: nothing installs it on this host yet, and a job that "
            "never fires would be reported missed. To make it fire:",
            markup=False,
        )
        for line in _how_to_fire(os.geteuid() == 0):
            out().print(f"  {line}", markup=False)
    out().print(
        "\ntry: schedctl list | schedctl show hello | schedctl next hello --count 10\n"
        "     schedctl add backup --schedule '30 2 * * *' -- /usr/local/bin/backup",
        markup=False,
    )
