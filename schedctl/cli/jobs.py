"""Job definition commands: add, edit, remove, enable, disable, list, show, next."""

from __future__ import annotations

import os
import shlex
import sys
from datetime import datetime
from typing import Annotated, Any

import typer

from schedctl import config, services
from schedctl.cli.completion import complete_job
from schedctl.cli.context import state
from schedctl.cli.output import (
    Layout,
    Output,
    Table,
    cell,
    done,
    heading,
    iso,
    local_time,
    print_json,
    print_table,
    utc_time,
    warn,
)
from schedctl.durations import format_duration, parse_duration
from schedctl.errors import ValidationError
from schedctl.models import (
    CatchUpPolicy,
    ConcurrencyPolicy,
    Job,
    JobChanges,
    JobSpec,
    mask_target,
)
from schedctl.validate import check_name, parse_env_pair

# Options shared by `add` and `edit`: on `edit`, an option left out keeps the stored value.
Schedule = Annotated[
    str | None,
    typer.Option(
        "--schedule", "-s", help="Cron expression (5 fields or @daily...), Debian cron rules."
    ),
]
Tz = Annotated[
    str | None, typer.Option("--tz", help="IANA time zone of the schedule [default: the host's].")
]
Timeout = Annotated[
    str | None, typer.Option(help="Kill the job after this long: 90s, 5m, 1h30m, 2d, or none.")
]
Concurrency = Annotated[
    ConcurrencyPolicy | None,
    typer.Option(help="When the previous run still holds the lock [default: forbid]."),
]
CatchUp = Annotated[
    CatchUpPolicy | None,
    typer.Option("--catch-up", help="After downtime: run the latest missed slot, or skip it."),
]
Retries = Annotated[int | None, typer.Option(help="Re-run a failed attempt up to N times.")]
RetryDelay = Annotated[
    str | None, typer.Option(help="Delay before the first retry, doubled each time [default: 30s].")
]
Jitter = Annotated[str | None, typer.Option(help="Random start delay up to this long.")]
Env = Annotated[
    list[str] | None,
    typer.Option("--env", "-e", help="KEY=VALUE for the job's environment; repeat."),
]
SecretEnv = Annotated[
    list[str] | None,
    typer.Option(
        "--secret-env",
        help="KEY=VALUE like --env, its value masked (***) in every output; repeat.",
        metavar="KEY=VALUE",
    ),
]
Secret = Annotated[
    list[str] | None,
    typer.Option(
        "--secret",
        help="NAME=REF: the job gets $NAME read at run time from REF, file:PATH (under the "
        "host's secrets directory) or credential:ID (a systemd credential); only the "
        "reference is stored; repeat.",
        metavar="NAME=REF",
    ),
]
Workdir = Annotated[str | None, typer.Option(help="Absolute working directory.")]
User = Annotated[str | None, typer.Option("--user", "-u", help="Run as this Unix user.")]
Description = Annotated[str | None, typer.Option(help="Free text shown by show/list.")]
Tag = Annotated[list[str] | None, typer.Option("--tag", "-t", help="Label for filtering; repeat.")]
Shell = Annotated[
    bool | None,
    typer.Option("--shell/--no-shell", help="Run COMMAND as one string through /bin/sh -c."),
]
OutputLimit = Annotated[
    int | None, typer.Option(help="Bytes of output tail kept per run [default: 65536].")
]
Keep = Annotated[
    str | None, typer.Option("--keep", help="Keep this job's run history this long, e.g. 30d.")
]
Command = Annotated[
    list[str] | None, typer.Argument(help="The command and its arguments, after --.")
]
On = Annotated[
    str | None,
    typer.Option(
        "--on",
        help="Place the job on the hosts whose labels match this selector, e.g. "
        "'role=db,zone in (eu,us),!canary' [default: every host; '' on edit: every host again].",
        show_default=False,
    ),
]
JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
Notify = Annotated[
    list[str] | None,
    typer.Option(
        "--notify",
        help="Tell TARGET about failures, recoveries and missed slots: webhook:https://URL, "
        "mailto:ADDRESS or exec:/PATH; repeat. `none`: no one.",
        metavar="TARGET",
    ),
]
NotifyOn = Annotated[
    str | None,
    typer.Option(
        "--notify-on",
        help="Which events notify: a comma-separated list of failure, recovery, missed "
        "[default: all three].",
        metavar="EVENTS",
    ),
]


def _targets(values: list[str] | None) -> tuple[str, ...] | None:
    """Return the --notify targets given, () for `--notify none`, None when not given."""
    if values is None:
        return None
    if [v.strip().lower() for v in values] == ["none"]:
        return ()
    if any(v.strip().lower() == "none" for v in values):
        raise ValidationError("--notify none clears the targets: give it alone")
    return tuple(values)


def _events(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    events = tuple(e.strip() for e in value.split(",") if e.strip())
    if not events:
        raise ValidationError("--notify-on needs at least one of failure, recovery, missed")
    return events


def _duration(value: str | None, what: str) -> int | None:
    return None if value is None else parse_duration(value, what=what)


def _timeout(value: str) -> int | None:
    # `none` clears; 0 is refused by validation like any timeout under 1s.
    return None if value.strip().lower() == "none" else parse_duration(value, what="timeout")


def _env(values: list[str] | None) -> tuple[tuple[str, str], ...]:
    return tuple(parse_env_pair(v) for v in values or [])


def _secret_env(values: list[str] | None) -> tuple[tuple[str, str], ...]:
    pairs = []
    for text in values or []:
        key, sep, value = text.partition("=")
        if not sep:  # the text may be the value itself: never repeat it
            raise ValidationError("bad --secret-env: use KEY=VALUE, e.g. --secret-env TOKEN=...")
        pairs.append((key, value))
    return tuple(pairs)


def _secrets(values: list[str] | None) -> tuple[tuple[str, str], ...]:
    from schedctl.hostsecrets import parse_pair

    return tuple(parse_pair(v) for v in values or [])


def _warn_unknown_user(user: str) -> None:
    """Warn when --user names no account here; it is stored all the same (other hosts)."""
    import pwd

    try:
        pwd.getpwnam(user)
    except KeyError:
        sys.stderr.write(
            f"schedctl: warning: no user {user!r} on this host: the job is stored, but `run` "
            "refuses it on every host that lacks this user\n"
        )


def _fmt_command(job: Job) -> str:
    return job.spec.command[0] if job.spec.shell else shlex.join(job.spec.command)


def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Job name: a-z 0-9 _ . - (max 63).")],
    command: Command = None,
    schedule: Schedule = None,
    tz: Tz = None,
    timeout: Timeout = None,
    concurrency: Concurrency = None,
    catch_up: CatchUp = None,
    retries: Retries = None,
    retry_delay: RetryDelay = None,
    jitter: Jitter = None,
    env: Env = None,
    secret_env: SecretEnv = None,
    secret: Secret = None,
    workdir: Workdir = None,
    user: User = None,
    description: Description = None,
    tag: Tag = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Store it disabled.")] = False,
    shell: Shell = None,
    output_limit: OutputLimit = None,
    keep: Keep = None,
    notify: Notify = None,
    notify_on: NotifyOn = None,
    on: On = None,
    json_: JsonOut = False,
) -> None:
    """Add a job.

    Without --notify (and --notify-on) the job gets this host's defaults, $SCHEDCTL_NOTIFY
    and $SCHEDCTL_NOTIFY_ON (or the configuration file's), stored with it: every host then
    notifies the same way.

    `--secret NAME=REF` stores only where each host finds the value (file:PATH under
    SCHEDCTL_SECRETS_DIR, or credential:ID); `--secret-env` values are stored but masked.

    Example: schedctl add nightly-backup --schedule '30 2 * * *' --tz Europe/Berlin
    --timeout 1h -- /usr/local/bin/backup --full
    """
    if schedule is None:
        raise ValidationError(
            "missing --schedule: give a cron expression, e.g. --schedule '@daily'"
        )
    st = state(ctx)
    defaults = JobSpec(name=name, schedule=schedule, timezone="UTC", command=())
    default_targets, default_events = config.notify_defaults(os.environ)
    targets = _targets(notify)
    spec = JobSpec(
        name=name,
        schedule=schedule,
        timezone=tz or st.default_timezone(),
        command=tuple(command or ()),
        shell=bool(shell),
        timeout_seconds=_timeout(timeout) if timeout is not None else None,
        concurrency=concurrency or defaults.concurrency,
        catch_up=catch_up or defaults.catch_up,
        jitter_seconds=_duration(jitter, "jitter") or 0,
        retries=defaults.retries if retries is None else retries,
        retry_delay_seconds=(
            defaults.retry_delay_seconds
            if retry_delay is None
            else parse_duration(retry_delay, what="retry delay")
        ),
        env=_env(env) + _secret_env(secret_env),
        secret_env=tuple(k for k, _ in _secret_env(secret_env)),
        secrets=_secrets(secret),
        workdir=workdir,
        run_as_user=user,
        description=description or "",
        tags=tuple(tag or ()),
        enabled=not disabled,
        output_limit_bytes=defaults.output_limit_bytes if output_limit is None else output_limit,
        retention_seconds=_duration(keep, "retention"),
        notify=default_targets if targets is None else targets,
        notify_on=_events(notify_on) or default_events or defaults.notify_on,
        placement=on or "",
    )
    job = services.add_job(st.store(), spec, st.clock)
    if user:
        _warn_unknown_user(user)  # once stored: a name `add` refuses gets its error alone
    nxt = services.next_fires(job, st.clock.now(), 1)
    if json_:
        print_json({**job.to_dict(), "next_run": iso(nxt[0]), "created": True})
        return
    state_word = "enabled" if job.spec.enabled else "disabled"
    done(
        f"added job {job.name} ({state_word}): {job.spec.schedule} {job.spec.timezone}, "
        f"next {local_time(nxt[0], job.spec.timezone)}"
    )


def edit(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The job to change.", autocompletion=complete_job)],
    command: Command = None,
    schedule: Schedule = None,
    tz: Tz = None,
    timeout: Timeout = None,
    concurrency: Concurrency = None,
    catch_up: CatchUp = None,
    retries: Retries = None,
    retry_delay: RetryDelay = None,
    jitter: Jitter = None,
    env: Env = None,
    unset_env: Annotated[
        list[str] | None, typer.Option("--unset-env", help="Remove a variable; repeat.")
    ] = None,
    secret_env: SecretEnv = None,
    secret: Secret = None,
    unset_secret: Annotated[
        list[str] | None,
        typer.Option("--unset-secret", help="Remove a --secret by its NAME; repeat."),
    ] = None,
    workdir: Workdir = None,
    user: User = None,
    description: Description = None,
    tag: Tag = None,
    untag: Annotated[
        list[str] | None, typer.Option("--untag", help="Remove a tag; repeat.")
    ] = None,
    shell: Shell = None,
    output_limit: OutputLimit = None,
    keep: Keep = None,
    notify: Notify = None,
    notify_on: NotifyOn = None,
    on: On = None,
    accept_changes: Annotated[
        bool,
        typer.Option(
            "--accept-changes",
            help="Store and sign the edit even if the job changed after it was signed "
            "(review that change with `schedctl verify JOB` first).",
        ),
    ] = False,
    json_: JsonOut = False,
) -> None:
    """Change a job; options left out keep their value. Bumps the revision.

    `--env` adds or overrides one variable (a secret one stays masked), `--secret-env` adds
    or overrides one and masks it, `--unset-env` removes one; `--secret NAME=REF` adds or
    changes a secret, `--unset-secret NAME` removes it; `--tag` adds one tag; `--workdir ''`, `--user ''`,
    `--keep none` and `--on ''` clear those settings. `--notify` replaces all the job's targets
    (repeat it for several); `--notify none` removes them.

    Example: schedctl edit nightly-backup --schedule '0 3 * * *' --env LEVEL=full
    """
    st = state(ctx)
    clear_keep = keep is not None and keep.strip().lower() == "none"
    changes = JobChanges(
        schedule=schedule,
        timezone=tz,
        command=tuple(command) if command else None,
        shell=shell,
        timeout_seconds=_timeout(timeout) if timeout is not None else None,
        clear_timeout=timeout is not None and _timeout(timeout) is None,
        concurrency=concurrency,
        catch_up=catch_up,
        jitter_seconds=_duration(jitter, "jitter"),
        retries=retries,
        retry_delay_seconds=_duration(retry_delay, "retry delay"),
        set_env=_env(env) + _secret_env(secret_env),
        unset_env=tuple(unset_env or ()),
        secret_env=tuple(k for k, _ in _secret_env(secret_env)),
        set_secrets=_secrets(secret),
        unset_secrets=tuple(unset_secret or ()),
        workdir=workdir,
        run_as_user=user,
        description=description,
        add_tags=tuple(tag or ()),
        remove_tags=tuple(untag or ()),
        output_limit_bytes=output_limit,
        retention_seconds=None if clear_keep else _duration(keep, "retention"),
        clear_retention=clear_keep,
        notify=_targets(notify),
        notify_on=_events(notify_on),
        placement=on,
    )
    result = services.edit_job(st.store(), name, changes, st.clock, accept_changes)
    for e in result.dropped:
        warn(f"job {result.job.name}: its stored {e.field} was malformed and is dropped")
    if user:
        _warn_unknown_user(user)  # once stored: a name `edit` refuses gets its error alone
    if json_:
        print_json({**result.job.to_dict(), "changed": result.changed})
        return
    if result.changed:
        done(f"updated job {result.job.name}: now at revision {result.job.revision}")
    else:
        done(f"job {result.job.name} unchanged (revision {result.job.revision})")


def remove(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The job to remove.", autocompletion=complete_job)],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    purge: Annotated[bool, typer.Option("--purge", help="Also delete its run history.")] = False,
    json_: JsonOut = False,
) -> None:
    """Remove a job. Its run history is kept unless --purge.

    Example: schedctl remove nightly-backup --yes
    """
    st = state(ctx)
    job = st.store().load_job_for_repair(check_name(name))[0]  # a malformed job too
    if not yes:
        if not sys.stdin.isatty():
            raise ValidationError(
                f"refusing to remove {job.name!r} without confirmation: pass --yes"
            )
        what = " and its run history" if purge else ""
        if not typer.confirm(f"Remove job {job.name}{what}?", default=False):
            if json_:
                print_json({"job": job.name, "removed": False})
            else:
                done("nothing removed")
            return
    result = services.remove_job(st.store(), name, purge)
    if json_:
        print_json(
            {
                "job": result.job.name,
                "removed": True,
                "runs_deleted": result.runs_deleted,
                "runs_kept": result.runs_kept,
            }
        )
        return
    history = (
        f"{result.runs_deleted} runs deleted"
        if purge
        else f"{result.runs_kept} runs kept in history"
    )
    done(f"removed job {result.job.name} ({history})")


def enable(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The job.", autocompletion=complete_job)],
    json_: JsonOut = False,
) -> None:
    """Enable a job so its schedule fires. Example: schedctl enable nightly-backup"""
    st = state(ctx)
    result = services.set_enabled(st.store(), name, True, st.clock)
    if json_:
        print_json({"job": name, "enabled": True, "changed": result.changed})
        return
    done(f"job {name} {'enabled' if result.changed else 'was already enabled'}")


def disable(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The job.", autocompletion=complete_job)],
    json_: JsonOut = False,
) -> None:
    """Disable a job; its definition and history stay. Example: schedctl disable nightly-backup"""
    st = state(ctx)
    result = services.set_enabled(st.store(), name, False, st.clock)
    if json_:
        print_json({"job": name, "enabled": False, "changed": result.changed})
        return
    done(f"job {name} {'disabled' if result.changed else 'was already disabled'}")


def list_(
    ctx: typer.Context,
    tag: Annotated[str | None, typer.Option("--tag", "-t", help="Only jobs with this tag.")] = None,
    json_: JsonOut = False,
    output: Output = Layout.table,
) -> None:
    """List jobs with their next fire time. Example: schedctl list --tag backup

    On a terminal narrower than every column, the columns least needed are left out (the
    name stays, then the command, the next run, the schedule...); -o wide shows them all.
    """
    st = state(ctx)
    now = st.clock.now()
    found = services.list_jobs(st.store(), tag)
    nexts = {j.id: services.next_fires(j, now, 1)[0] for j in found}
    if json_:
        print_json([{**j.to_dict(), "next_run": iso(nexts[j.id])} for j in found])
        return
    if not found:
        done("no jobs" + (f" tagged {tag}" if tag else "") + "; add one with `schedctl add`")
        return
    table = Table(wide=output is Layout.wide, header_style="bold")
    table.add_column("NAME", no_wrap=True)
    for col, priority in (("SCHEDULE", 3), ("TIMEZONE", 7), ("NEXT RUN", 2), ("STATE", 4),
                          ("TAGS", 6), ("NOTIFY", 8), ("ON", 5)):  # fmt: skip
        table.add_column(col, priority=priority, no_wrap=True)
    # The command folds to 12 columns: beside a name of the longest kind, 63 characters.
    table.add_column("COMMAND", priority=1, shrink=12, overflow="fold")
    for j in found:
        table.add_row(
            cell(j.name),
            cell(j.spec.schedule),
            cell(j.spec.timezone),
            local_time(nexts[j.id], j.spec.timezone) if j.spec.enabled else "-",
            "enabled" if j.spec.enabled else cell("disabled", "yellow"),
            cell(",".join(j.spec.tags)),
            cell(",".join(mask_target(t) for t in j.spec.notify)),
            cell(j.spec.placement or "*"),
            cell(_fmt_command(j)),
        )
    print_table(table)


def show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The job.", autocompletion=complete_job)],
    json_: JsonOut = False,
) -> None:
    """Show a job's definition and its next 5 fire times. Example: schedctl show nightly-backup"""
    st = state(ctx)
    job = services.get_job(st.store(), name)
    nexts = services.next_fires(job, st.clock.now(), 5)
    if json_:
        print_json({**job.to_dict(), "next_runs": [iso(x) for x in nexts]})
        return
    s = job.spec
    rows: list[tuple[str, Any]] = [
        ("name", job.name),
        ("state", "enabled" if s.enabled else "disabled"),
        ("schedule", s.schedule),
        ("timezone", s.timezone),
        ("command", _fmt_command(job) + ("   (via /bin/sh -c)" if s.shell else "")),
        ("timeout", format_duration(s.timeout_seconds)),
        ("concurrency", s.concurrency.value),
        ("catch-up", s.catch_up.value),
        ("retries", f"{s.retries} (first delay {format_duration(s.retry_delay_seconds)})"),
        ("jitter", format_duration(s.jitter_seconds)),
        ("env", " ".join(f"{k}={v}" for k, v in s.shown_env()) or "-"),
        ("secrets", " ".join(f"{k}={v}" for k, v in s.secrets) or "-"),
        ("workdir", s.workdir or "-"),
        ("user", s.run_as_user or "-"),
        ("tags", ", ".join(s.tags) or "-"),
        ("on", s.placement or "every host"),
        ("description", s.description or "-"),
        ("output limit", f"{s.output_limit_bytes} bytes"),
        ("retention", format_duration(s.retention_seconds) if s.retention_seconds else "default"),
        ("notify", ", ".join(mask_target(t) for t in s.notify) or "-"),
        ("notify on", ", ".join(s.notify_on) if s.notify else "-"),
        ("revision", job.revision),
        ("updated", local_time(job.updated_at, s.timezone)),
    ]
    table = Table(show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, cell(value))
    print_table(table)
    sys.stdout.write("\n")
    heading("next runs", "" if s.enabled else " (if enabled)")
    times = Table()
    times.add_column(s.timezone)
    times.add_column("UTC")
    for x in nexts:
        times.add_row(local_time(x, s.timezone), utc_time(x))
    print_table(times)


def next_(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The job.", autocompletion=complete_job)],
    count: Annotated[int, typer.Option("--count", "-n", help="How many instants.")] = 5,
    after: Annotated[
        str | None,
        typer.Option(help="Start after this ISO 8601 instant (with offset) instead of now."),
    ] = None,
    json_: JsonOut = False,
) -> None:
    """Print the next fire instants in the job's zone, ISO 8601 with offsets.

    Example: schedctl next nightly-backup --count 3 --after 2026-03-28T00:00:00+01:00
    """
    st = state(ctx)
    job = services.get_job(st.store(), name)
    start = _parse_instant(after) if after else st.clock.now()
    nexts = services.next_fires(job, start, count)
    if json_:
        print_json(
            {
                "job": job.name,
                "schedule": job.spec.schedule,
                "timezone": job.spec.timezone,
                "next": [iso(x) for x in nexts],
            }
        )
        return
    # Plain instants: written directly, without loading rich.
    sys.stdout.write("".join(f"{iso(x)}\n" for x in nexts))


def _parse_instant(text: str) -> datetime:
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(
            f"bad --after {text!r}: use ISO 8601 with an offset, e.g. 2026-03-29T00:00:00+01:00"
        ) from None
    if dt.tzinfo is None:
        example = dt.isoformat(timespec="seconds") + "+00:00"
        raise ValidationError(f"--after {text!r} has no UTC offset: add one, e.g. {example}")
    return dt
