"""`render` and `sync`: turn job definitions into systemd units, crontab lines, CronJobs."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from schedctl import __version__, config, deploy
from schedctl.cli.context import state
from schedctl.cli.notify import step_after_sync
from schedctl.cli.output import done, note, print_json
from schedctl.errors import ValidationError
from schedctl.render import DEFAULT_ENV_FILE, Target
from schedctl.schedule import load_zone
from schedctl.trust import host_trust
from schedctl.validate import check_text, check_unit_path

render_app = typer.Typer(
    suggest_commands=False,
    help="Print (or write) what schedctl would install for the jobs.",
    no_args_is_help=True,
)
sync_app = typer.Typer(
    suggest_commands=False,
    help="Make this host's timers or crontab match the database.",
    no_args_is_help=True,
)

Jobs = Annotated[list[str] | None, typer.Argument(help="Only these jobs [default: all enabled].")]
SchedctlPath = Annotated[
    str | None,
    typer.Option(
        "--schedctl",
        help="Absolute path the units call [default: this schedctl's own path].",
        show_default=False,
    ),
]
EnvFile = Annotated[
    str | None,
    typer.Option(
        "--env-file",
        help="File holding SCHEDCTL_DATABASE_URL, which units point schedctl at "
        f"(SCHEDCTL_CONFIG=); 'none' for none [default: {DEFAULT_ENV_FILE}; none with --user, "
        "where schedctl reads the user's own configuration].",
        show_default=False,
    ),
]
UserUnits = Annotated[
    bool,
    typer.Option(
        "--user",
        help="Units for your own systemd manager (systemctl --user, ~/.config/systemd/user), "
        "of the jobs without --user; they run while you are logged in, or always after "
        "`loginctl enable-linger`.",
    ),
]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the diff; change nothing.")]
SyncJson = Annotated[
    bool, typer.Option("--json", help="Print what changed (or would) as JSON, diff included.")
]
CronZone = Annotated[
    str | None,
    typer.Option(
        "--cron-zone",
        help="Time zone the cron daemon runs in [default: the host's /etc/timezone].",
        show_default=False,
    ),
]
AsHost = Annotated[
    str | None,
    typer.Option(
        "--as-host",
        help="Preview for the host of this name (its label host=NAME) [default: this host].",
        show_default=False,
    ),
]
Labels = Annotated[
    str | None,
    typer.Option(
        "--labels",
        help="Preview for a host with these labels, k=v,... [default: this host's, or none "
        "with --as-host].",
        show_default=False,
    ),
]
UNIT_DIR = Path("/etc/systemd/system")
CRON_FILE = Path("/etc/cron.d/schedctl")


def _target(schedctl: str | None, env_file: str | None = DEFAULT_ENV_FILE) -> Target:
    """Return where units call schedctl: the given path, or the path this process runs as."""
    path = schedctl
    if path is None:
        argv0 = sys.argv[0]
        # A path as typed (not resolved): units keep working across upgrades of a symlink.
        found = shutil.which(argv0) if os.sep not in argv0 else None
        path = os.path.abspath(found or argv0)
    if not os.path.isabs(path) or not os.access(path, os.X_OK):
        raise ValidationError(
            f"--schedctl {path!r} is not an absolute path to an executable: give the installed "
            f"binary, e.g. /usr/local/bin/schedctl"
        )
    # Both land in unit files and crontab lines, which must carry them exactly.
    check_unit_path("--schedctl", path)
    if "\\" in path:
        raise ValidationError(
            f"--schedctl {path!r} contains a backslash: install schedctl elsewhere"
        )
    if env_file is None or env_file == "none":
        return Target(path, None)
    check_unit_path("--env-file", env_file)
    return Target(path, env_file)


def _unit_env_file(env_file: str | None, user: bool) -> str | None:
    """Return the env file units name: the system one, or none for a user's own units."""
    if env_file is not None:
        return env_file
    return None if user else DEFAULT_ENV_FILE


def _host(as_host: str | None = None, labels: str | None = None) -> deploy.HostIdentity:
    """Return the host to render or sync for: this one, or the one --as-host/--labels describe."""
    from schedctl.placement import parse_labels, with_host

    if as_host is None and labels is None:
        env = os.environ
        return deploy.HostIdentity(config.host_name(env), config.host_labels(env), __version__)
    if as_host is not None and not as_host.strip():
        raise ValidationError("--as-host needs a host name, e.g. --as-host db1")
    if as_host is not None:
        check_text("--as-host", as_host)
    name = as_host or config.host_name(os.environ)
    return deploy.HostIdentity(
        name, with_host(parse_labels(labels or "", "--labels"), name), __version__
    )


def _cron_zone(given: str | None) -> str:
    # The daemon does not see this shell's TZ: use the host's configured zone.
    zone = given or config.default_timezone({k: v for k, v in os.environ.items() if k != "TZ"})
    load_zone(zone)
    return zone


@render_app.command("systemd")
def render_systemd(
    ctx: typer.Context,
    jobs: Jobs = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Write the unit files into DIR instead.")
    ] = None,
    schedctl: SchedctlPath = None,
    env_file: EnvFile = None,
    as_host: AsHost = None,
    labels: Labels = None,
    user: UserUnits = False,
) -> None:
    """Print each job's .timer and .service: by default, of the jobs placed on this host.

    Example: schedctl render systemd --as-host db1 --labels role=db,zone=eu
    """
    st = state(ctx)
    host = _host(as_host, labels)
    selected = deploy.select_jobs(st.store(), jobs or [], host.labels)
    notes: list[str] = []
    if user:
        selected, notes = deploy.user_unit_jobs(selected, deploy.current_user())
    files = deploy.render_systemd_files(
        selected, _target(schedctl, _unit_env_file(env_file, user)), st.clock, user
    )
    for text in notes:
        note(text)
    if out_dir is None:
        for name, text in files.items():
            sys.stdout.write(f"# ==> {name} <==\n{text}\n")
        return
    deploy.write_units(out_dir, files)
    done(f"wrote {len(files)} unit files to {out_dir}")


@render_app.command("crontab")
def render_crontab(
    ctx: typer.Context,
    jobs: Jobs = None,
    user: Annotated[
        str | None,
        typer.Option("--user", help="A user crontab (no user field) instead of /etc/cron.d."),
    ] = None,
    schedctl: SchedctlPath = None,
    cron_zone: CronZone = None,
    as_host: AsHost = None,
    labels: Labels = None,
) -> None:
    """Print the managed crontab block of the jobs placed on this host (or --as-host).

    Example: schedctl render crontab --user backup
    """
    st = state(ctx)
    host = _host(as_host, labels)
    selected = deploy.select_jobs(st.store(), jobs or [], host.labels)
    block, notes = deploy.render_crontab(
        selected, _target(schedctl), _cron_zone(cron_zone), st.clock, user
    )
    sys.stdout.write(block)
    for text in notes:
        note(text)


@render_app.command("kubernetes")
def render_k8s(
    ctx: typer.Context,
    jobs: Jobs = None,
    image: Annotated[
        str, typer.Option(help="Container image with schedctl installed.")
    ] = "schedctl:latest",
    secret_name: Annotated[
        str, typer.Option("--secret", help="Secret whose key 'url' holds the database URL.")
    ] = "schedctl-database",  # noqa: S107 - the Secret object's name, not a password
) -> None:
    """Print CronJob manifests. Example: schedctl render kubernetes --image registry/schedctl:0.1"""
    st = state(ctx)
    sys.stdout.write(
        deploy.render_kubernetes_manifests(
            deploy.select_jobs(st.store(), jobs or []), image, secret_name
        )
    )


def _finish(report: deploy.SyncReport, dry_run: bool, what: str, json_: bool = False) -> None:
    for text in report.notes:
        note(text)
    if json_:
        print_json(
            {
                "dry_run": dry_run,
                "changes": [
                    {
                        "path": str(c.path),
                        "action": "create"
                        if c.old is None
                        else "remove"
                        if c.new is None
                        else "update",
                    }
                    for c in report.changes
                ],
                "unchanged": report.unchanged,
                "commands": [list(argv) for argv in report.commands],
                "diff": report.diff(),
            }
        )
        return
    if dry_run:
        sys.stdout.write(report.diff())
        for argv in report.commands:
            sys.stdout.write(f"would run: {' '.join(argv)}\n")
        done(
            f"dry run: {len(report.changes)} {what} would change, {report.unchanged} unchanged; "
            f"nothing written"
        )
        return
    written = sum(1 for c in report.changes if c.new is not None)
    removed = len(report.changes) - written
    for argv in report.commands:
        done(f"ran: {' '.join(argv)}")
    done(f"synced: {written} written, {removed} removed, {report.unchanged} unchanged")


@sync_app.command("systemd")
def sync_systemd(
    ctx: typer.Context,
    unit_dir: Annotated[
        Path | None,
        typer.Option(
            help=f"Where the unit files live [default: {UNIT_DIR}; with --user "
            "$XDG_CONFIG_HOME/systemd/user, i.e. ~/.config/systemd/user].",
            show_default=False,
        ),
    ] = None,
    dry_run: DryRun = False,
    no_reload: Annotated[
        bool, typer.Option("--no-reload", help="Write files only; no systemctl calls.")
    ] = False,
    schedctl: SchedctlPath = None,
    env_file: EnvFile = None,
    json_: SyncJson = False,
    user: UserUnits = False,
) -> None:
    """Install, update and remove the timers of the jobs placed on this host, then reload systemd.

    A job whose --on selector does not match this host's labels is not installed here (and
    is removed if it was). Without root, --user installs your own timers.
    Example: schedctl sync systemd --dry-run
    """
    if unit_dir is None and not user and os.geteuid() != 0 and not dry_run:
        raise ValidationError(
            f"writing {UNIT_DIR} needs root: run `schedctl sync systemd --user` for timers "
            f"of your own, or `sudo schedctl sync systemd`"
        )
    directory = unit_dir or (deploy.user_unit_dir(os.environ) if user else UNIT_DIR)
    st = state(ctx)
    host = _host()
    target = _target(schedctl, _unit_env_file(env_file, user))
    report = deploy.sync_systemd(
        st.store(), st.clock, target, directory, dry_run, not no_reload, host, user=user,
        trust=host_trust(os.environ),
    )  # fmt: skip
    _finish(report, dry_run, "unit files", json_)
    if not dry_run:
        step_after_sync(st)


@sync_app.command("crontab")
def sync_crontab(
    ctx: typer.Context,
    file: Annotated[
        Path | None, typer.Option("--file", help="An /etc/cron.d file [default for root].")
    ] = None,
    user: Annotated[
        str | None, typer.Option("--user", help="This user's crontab [default for others].")
    ] = None,
    dry_run: DryRun = False,
    schedctl: SchedctlPath = None,
    cron_zone: CronZone = None,
    json_: SyncJson = False,
) -> None:
    """Replace the managed block in a crontab with the jobs placed on this host.

    Example: schedctl sync crontab --file /etc/cron.d/schedctl
    """
    if file is not None and user is not None:
        raise ValidationError("--file and --user exclude each other: give one")
    if file is None and user is None and os.geteuid() == 0:
        file = CRON_FILE
    st = state(ctx)
    host = _host()
    report = deploy.sync_crontab(
        st.store(), st.clock, _target(schedctl), _cron_zone(cron_zone), file, user, dry_run, host,
        trust=host_trust(os.environ),
    )  # fmt: skip
    _finish(report, dry_run, "crontab", json_)
    if not dry_run:
        step_after_sync(st)
