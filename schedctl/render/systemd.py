"""systemd: a .timer and a .service per job.

The job's cron expression becomes `OnCalendar=` lines in the job's zone. Away from DST changes
those elapse exactly at the job's slots. Around a change systemd only ever *drops* instants that
Debian cron keeps (a fixed-time slot in a skipped hour, the second pass of a repeated hour for
wildcard jobs), so for every change between `now` and the horizon the job's exact slots within
a few hours of it are added as dated UTC lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime

from schedctl.hostsecrets import credentials
from schedctl.models import Job
from schedctl.render import (
    KILL_GRACE,
    MANAGED_MARK,
    STOP_GRACE,
    Target,
    compress,
    one_line,
    slots_near_offset_changes,
)  # fmt: skip
from schedctl.schedule import CronExpr, Schedule

UNIT_PREFIX = "schedctl-"
_WEEKDAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")


def _calendar_lines(expr: CronExpr, zone: str) -> list[str]:
    """Return the zone-relative OnCalendar= values for `expr` (exact away from DST changes)."""
    minutes = "*" if len(expr.minutes) == 60 else compress(expr.minutes)
    hours = "*" if len(expr.hours) == 24 else compress(expr.hours)
    clock = f"{hours}:{minutes}:00"
    months = "*" if len(expr.months) == 12 else compress(expr.months)
    days = "*" if len(expr.days) == 31 else compress(expr.days)
    weekdays = (
        "" if len(expr.weekdays) == 7 else ",".join(_WEEKDAYS[d] for d in sorted(expr.weekdays))
    )
    if expr.dom_star or expr.dow_star:
        # Debian cron AND-s the two day fields when either starts with `*`.
        return [f"{weekdays} *-{months}-{days} {clock} {zone}".strip()]
    # Both restricted: cron fires on either; systemd AND-s within a line, so one line each.
    return [f"{weekdays} *-{months}-* {clock} {zone}".strip(), f"*-{months}-{days} {clock} {zone}"]


def _dated_lines(instants: Sequence[datetime]) -> list[str]:
    """Write UTC instants as dated OnCalendar= values: per day, hours sharing a minute set."""
    by_day: dict[date, dict[int, set[int]]] = {}
    for x in instants:
        u = x.astimezone(UTC)
        by_day.setdefault(u.date(), {}).setdefault(u.hour, set()).add(u.minute)
    lines: list[str] = []
    for day in sorted(by_day):
        groups: dict[tuple[int, ...], list[int]] = {}
        for hour, mins in sorted(by_day[day].items()):
            groups.setdefault(tuple(sorted(mins)), []).append(hour)
        for minute_set, hours in sorted(groups.items(), key=lambda kv: kv[1][0]):
            lines.append(f"{day.isoformat()} {compress(hours)}:{compress(minute_set)}:00 UTC")
    return lines


def on_calendar(schedule: Schedule, zone: str, now: datetime) -> list[str]:
    """Return OnCalendar= values whose elapses are exactly the slots after `now` (see module doc)."""
    lines = _calendar_lines(schedule.expr, zone)
    for near in slots_near_offset_changes(schedule, zone, now):
        lines += _dated_lines(near)
    return lines


def unit_name(job_name: str) -> str:
    """Return the unit name stem for a job (`schedctl-NAME`); names are validated unit-safe."""
    return f"{UNIT_PREFIX}{job_name}"


def _text(text: str) -> str:
    """Free text for a unit setting or comment: one line, `%` specifiers escaped."""
    return _exact(one_line(text))


def _exact(value: str) -> str:
    """A setting's value as systemd must read it back: only `%` specifiers escaped.

    Validation (validate.check_unit_path) has refused what a unit line cannot carry.
    """
    return value.replace("%", "%%")


def _systemd_quote(word: str) -> str:
    """Quote one ExecStart= word: specifiers as %%, variables as $$, C escapes in quotes."""
    escaped = word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{escaped}"'


def _env_value(text: str) -> str:
    """Escape a value for a double-quoted Environment= assignment (no $ expansion there)."""
    return _text(text).replace("\\", "\\\\").replace('"', '\\"')


def render_systemd(job: Job, target: Target, now: datetime, user: bool = False) -> dict[str, str]:
    """Return {file name: content} for the job's .timer and .service.

    With `user`, units for a user's own manager (`systemctl --user`): no `User=`, no system
    targets; schedctl then reads the user's own configuration file, as it does in a shell.
    """
    spec = job.spec
    stem = unit_name(job.name)
    schedule = Schedule.of(spec.schedule, spec.timezone)
    about = _text(f"schedctl job {job.name}: {spec.schedule} ({spec.timezone})")
    timer = [MANAGED_MARK, "[Unit]", f"Description={about}", "", "[Timer]"]
    timer += [f"OnCalendar={line}" for line in on_calendar(schedule, spec.timezone, now)]
    timer += ["AccuracySec=1s", "Persistent=true"]
    if spec.jitter_seconds:
        timer.append(f"RandomizedDelaySec={spec.jitter_seconds}s")
    timer += [f"Unit={stem}.service", "", "[Install]", "WantedBy=timers.target", ""]

    argv = [target.schedctl, "run", "--trigger", "timer", job.name]
    service = [MANAGED_MARK, "[Unit]", f"Description={about}"]
    if spec.description:
        service.append(f"# {_text(spec.description)}")
    if not user:
        # A user manager has no network-online.target of its own to order after.
        service += ["Wants=network-online.target", "After=network-online.target"]
    service += ["", "[Service]"]
    service += ["Type=oneshot", "ExecStart=" + " ".join(_systemd_quote(a) for a in argv)]
    if target.env_file:
        # schedctl reads the URL from the file itself: loaded with EnvironmentFile= it would
        # sit in the process environment, where the job's user could look for it.
        service.append(f'Environment="SCHEDCTL_CONFIG={_env_value(target.env_file)}"')
    if not user:
        # schedctl runs as root whatever the job's user: with User= the job would share the
        # runner's user and could read the database password from its memory
        # (/proc/PID/environ). `schedctl run` starts the job as the job's user, with its groups.
        service.append("User=root")
    # `credential:` secrets: systemd finds each in its credential store (/etc/credstore/ID...)
    # and gives it to this service in $CREDENTIALS_DIRECTORY, where `schedctl run` reads it.
    # IDs are validated to letters, digits and _ . @ + -: nothing to escape.
    service += [f"LoadCredential={cred}" for cred in credentials(spec.secrets)]
    if spec.run_as_user and spec.run_as_user != "root":
        service.append(f"# The job runs as {spec.run_as_user}.")
    service.append(f"WorkingDirectory={_exact(spec.workdir) if spec.workdir else '/'}")
    # schedctl run forwards SIGTERM to the job's process group and records the result; only
    # then may the rest be killed.
    service.append("KillMode=mixed")
    if spec.timeout_seconds:
        limit = spec.timeout_seconds + KILL_GRACE + STOP_GRACE
        service += [f"TimeoutStartSec={limit}s", f"TimeoutStopSec={limit}s"]
    else:
        service += ["TimeoutStartSec=infinity", f"TimeoutStopSec={KILL_GRACE + STOP_GRACE}s"]
    service.append("")
    return {f"{stem}.timer": "\n".join(timer), f"{stem}.service": "\n".join(service)}
