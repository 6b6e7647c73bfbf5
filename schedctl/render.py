"""Render jobs as systemd units, crontab lines and Kubernetes CronJobs (pure text, no I/O).

systemd: each job's cron expression becomes `OnCalendar=` lines in the job's zone. Away from
DST changes those elapse exactly at the job's slots. Around a change systemd only ever *drops*
instants that Debian cron keeps (a fixed-time slot in a skipped hour, the second pass of a
repeated hour for wildcard jobs), so for every change between `now` and the horizon the job's
exact slots within a few hours of it are added as dated UTC lines. `schedctl sync` runs every
minute, so the window slides forward long before a change arrives.

crontab: when the cron daemon's zone is the job's zone the expression is written as it is
(schedctl follows Debian cron's own DST rules). Otherwise the line fires at a superset of
instants and calls `schedctl run --at-slot`, which exits quietly unless a slot falls on that
firing; nothing relies on `CRON_TZ`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache

from schedctl.models import Job
from schedctl.schedule import CronExpr, Schedule, load_zone

MANAGED_MARK = "# Managed by `schedctl sync`: edits here are overwritten; change the job instead."
BLOCK_BEGIN = "# BEGIN schedctl"
BLOCK_END = "# END schedctl"
UNIT_PREFIX = "schedctl-"
DEFAULT_ENV_FILE = "/etc/schedctl/schedctl.env"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Exact slots are listed this far either side of a UTC-offset change (the largest DST shift
# in tzdata is two hours; a slot moved out of a gap lands right after it).
_DST_MARGIN = timedelta(hours=3)
_HORIZON = timedelta(days=400)
_STOP_GRACE = 30  # seconds on top of the job's timeout and schedctl's own kill grace
_KILL_GRACE = 10  # schedctl run's SIGTERM -> SIGKILL grace (services.RunContext.grace_seconds)
_WEEKDAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")


@dataclass(frozen=True)
class Target:
    """Where and how the rendered units call schedctl."""

    schedctl: str  # absolute path of the schedctl executable on the host
    env_file: str | None = DEFAULT_ENV_FILE


# --- systemd ---------------------------------------------------------------------------------


def _compress(values: Iterable[int], width: int = 2) -> str:
    """Write sorted ints as a systemd list, runs of three or more as `a..b`."""
    vals = sorted(values)
    parts: list[str] = []
    i = 0
    while i < len(vals):
        j = i
        while j + 1 < len(vals) and vals[j + 1] == vals[j] + 1:
            j += 1
        if j - i >= 2:
            parts.append(f"{vals[i]:0{width}d}..{vals[j]:0{width}d}")
        else:
            parts.extend(f"{v:0{width}d}" for v in vals[i : j + 1])
        i = j + 1
    return ",".join(parts)


def _calendar_lines(expr: CronExpr, zone: str) -> list[str]:
    """Return the zone-relative OnCalendar= values for `expr` (exact away from DST changes)."""
    minutes = "*" if len(expr.minutes) == 60 else _compress(expr.minutes)
    hours = "*" if len(expr.hours) == 24 else _compress(expr.hours)
    clock = f"{hours}:{minutes}:00"
    months = "*" if len(expr.months) == 12 else _compress(expr.months)
    days = "*" if len(expr.days) == 31 else _compress(expr.days)
    weekdays = (
        "" if len(expr.weekdays) == 7 else ",".join(_WEEKDAYS[d] for d in sorted(expr.weekdays))
    )
    if expr.dom_star or expr.dow_star:
        # Debian cron AND-s the two day fields when either starts with `*`.
        return [f"{weekdays} *-{months}-{days} {clock} {zone}".strip()]
    # Both restricted: cron fires on either; systemd AND-s within a line, so one line each.
    return [f"{weekdays} *-{months}-* {clock} {zone}".strip(), f"*-{months}-{days} {clock} {zone}"]


@cache
def _offset_changes(zone_name: str, start: date, end: date) -> tuple[datetime, ...]:
    """Return the instants (UTC, to the minute) where `zone_name`'s UTC offset changes."""
    zone = load_zone(zone_name)
    out: list[datetime] = []
    t = datetime(start.year, start.month, start.day, tzinfo=UTC)
    stop = datetime(end.year, end.month, end.day, tzinfo=UTC)
    step = timedelta(hours=6)
    while t < stop:
        a, b = t.astimezone(zone).utcoffset(), (t + step).astimezone(zone).utcoffset()
        if a != b:
            lo, hi = t, t + step  # offset(lo) = a, offset(hi) = b
            while hi - lo > timedelta(minutes=1):
                mid = lo + (hi - lo) / 2
                mid = mid.replace(second=0, microsecond=0)
                if mid <= lo:
                    break
                if mid.astimezone(zone).utcoffset() == a:
                    lo = mid
                else:
                    hi = mid
            out.append(hi)
        t += step
    return tuple(out)


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
            lines.append(f"{day.isoformat()} {_compress(hours)}:{_compress(minute_set)}:00 UTC")
    return lines


def on_calendar(schedule: Schedule, zone: str, now: datetime) -> list[str]:
    """Return OnCalendar= values whose elapses are exactly the slots after `now` (see module doc)."""
    lines = _calendar_lines(schedule.expr, zone)
    changes = _offset_changes(zone, (now - _DST_MARGIN).date(), (now + _HORIZON).date())
    for change in changes:
        if change + _DST_MARGIN < now:
            continue
        start, end = change - _DST_MARGIN, change + _DST_MARGIN
        instants: list[datetime] = []
        for x in schedule.iter_after(start):
            if x > end:
                break
            instants.append(x)
        lines += _dated_lines(instants)
    return lines


def unit_name(job_name: str) -> str:
    """Return the unit name stem for a job (`schedctl-NAME`); names are validated unit-safe."""
    return f"{UNIT_PREFIX}{job_name}"


def _systemd_quote(word: str) -> str:
    """Quote one ExecStart= word: specifiers as %%, variables as $$, C escapes in quotes."""
    escaped = word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{escaped}"'


def _one_line(text: str) -> str:
    """Make free text safe for a unit setting or comment: one line, specifiers escaped."""
    return " ".join(text.split()).replace("%", "%%")


def render_systemd(job: Job, target: Target, now: datetime) -> dict[str, str]:
    """Return {file name: content} for the job's .timer and .service."""
    spec = job.spec
    stem = unit_name(job.name)
    schedule = Schedule.of(spec.schedule, spec.timezone)
    about = _one_line(f"schedctl job {job.name}: {spec.schedule} ({spec.timezone})")
    timer = [MANAGED_MARK, "[Unit]", f"Description={about}", "", "[Timer]"]
    timer += [f"OnCalendar={line}" for line in on_calendar(schedule, spec.timezone, now)]
    timer += ["AccuracySec=1s", "Persistent=true"]
    if spec.jitter_seconds:
        timer.append(f"RandomizedDelaySec={spec.jitter_seconds}s")
    timer += [f"Unit={stem}.service", "", "[Install]", "WantedBy=timers.target", ""]

    argv = [target.schedctl, "run", "--trigger", "timer", job.name]
    service = [MANAGED_MARK, "[Unit]", f"Description={about}"]
    if spec.description:
        service.append(f"# {_one_line(spec.description)}")
    service += ["Wants=network-online.target", "After=network-online.target", "", "[Service]"]
    service += ["Type=oneshot", "ExecStart=" + " ".join(_systemd_quote(a) for a in argv)]
    if target.env_file:
        service.append(f"EnvironmentFile={_one_line(target.env_file)}")
    user = spec.run_as_user or "root"
    service.append(f"User={user}")
    if user != "root":
        # Spool files and file locks of this runner live in a directory the user owns.
        service += [
            f"StateDirectory=schedctl-{user}",
            f"Environment=SCHEDCTL_DATA_DIR=%S/schedctl-{user}",
        ]
    service.append(f"WorkingDirectory={_one_line(spec.workdir) if spec.workdir else '/'}")
    # schedctl run forwards SIGTERM to the job's process group and records the result; only
    # then may the rest be killed.
    service.append("KillMode=mixed")
    if spec.timeout_seconds:
        limit = spec.timeout_seconds + _KILL_GRACE + _STOP_GRACE
        service += [f"TimeoutStartSec={limit}s", f"TimeoutStopSec={limit}s"]
    else:
        service += ["TimeoutStartSec=infinity", f"TimeoutStopSec={_KILL_GRACE + _STOP_GRACE}s"]
    service.append("")
    return {f"{stem}.timer": "\n".join(timer), f"{stem}.service": "\n".join(service)}


# --- crontab ---------------------------------------------------------------------------------


def _cron_list(values: Iterable[int], full: int) -> str:
    vals = sorted(set(values))
    if len(vals) == full:
        return "*"
    return _compress(vals, width=1).replace("..", "-")


def _zone_offsets(zone_name: str, now: datetime) -> set[int]:
    """Return every UTC offset (minutes) `zone_name` uses between now and the horizon."""
    zone = load_zone(zone_name)
    offs = {int((now.astimezone(zone).utcoffset() or timedelta()).total_seconds() // 60)}
    for change in _offset_changes(zone_name, now.date(), (now + _HORIZON).date()):
        offs.add(int((change.astimezone(zone).utcoffset() or timedelta()).total_seconds() // 60))
    return offs


def cron_lines(
    schedule: Schedule, zone: str, daemon_zone: str, now: datetime
) -> tuple[list[str], bool]:
    """Return cron fields (one entry per line) for the daemon, and whether they are a superset.

    A superset fires at every slot and at other instants too; its lines call
    `schedctl run --at-slot`, which does nothing at the other instants.
    """
    expr = schedule.expr
    if zone == daemon_zone:
        return [expr.expanded], False
    daemon_offs = _zone_offsets(daemon_zone, now)
    deltas = {d - j for d in daemon_offs for j in _zone_offsets(zone, now)}
    if any((a - b) % 60 for a in daemon_offs for b in daemon_offs):
        return ["* * * * *"], True  # a daemon with half-hour DST shifts: fire every minute
    shifted = {(h * 60 + m + d) for h in expr.hours for m in expr.minutes for d in deltas}
    minutes = _cron_list({x % 60 for x in shifted}, 60)
    if len(daemon_offs) > 1:
        # The daemon's own DST rules would skip or merge fixed-time lines: stay a wildcard job.
        main = f"{minutes} * * * *"
    else:
        hours = "*" if len(expr.hours) == 24 else _cron_list({(x // 60) % 24 for x in shifted}, 24)
        if not any(x < 0 or x >= 1440 for x in shifted):
            main = " ".join([minutes, hours, *expr.expanded.split()[2:]])
        elif expr.dom_star and len(expr.days) == 31 and len(expr.months) == 12:
            # Only weekdays restricted: a shift moves them by at most one day either way.
            moves = {-1 if x < 0 else 1 if x >= 1440 else 0 for x in shifted}
            dows = {(w + s) % 7 for w in expr.weekdays for s in moves}
            main = f"{minutes} {hours} * * {_cron_list(dows, 7)}"
        else:
            main = f"{minutes} {hours} * * *"
    # Slots next to the job zone's DST changes (moved out of a gap, second passes) may fall
    # outside the shifted sets: give each its own dated line (it fires yearly; run skips
    # the other years).
    lines = [main]
    dz = load_zone(daemon_zone)
    daemon = Schedule.of(main, daemon_zone)  # Debian cron's own reading of the main line
    seen: set[str] = set()
    for change in _offset_changes(zone, (now - _DST_MARGIN).date(), (now + _HORIZON).date()):
        if change + _DST_MARGIN < now:
            continue
        for x in schedule.iter_after(change - _DST_MARGIN):
            if x > change + _DST_MARGIN:
                break
            if daemon.latest_at_or_before(x) == x:
                continue
            local = x.astimezone(dz)
            line = f"{local.minute} {local.hour} {local.day} {local.month} *"
            if line not in seen:
                seen.add(line)
                lines.append(line)
    return lines, True


def _cron_escape(text: str) -> str:
    """Escape a crontab command: an unescaped % ends the command line."""
    return text.replace("\\", "\\\\").replace("%", "\\%")


def _sh_quote(word: str) -> str:
    import shlex

    return shlex.quote(word)


def crontab_block(
    jobs: Sequence[Job], target: Target, daemon_zone: str, now: datetime, user: str | None
) -> tuple[str, list[str]]:
    """Return the managed block and notes on jobs left out.

    `user` None renders /etc/cron.d format (a user field per line); otherwise a user crontab,
    which can only hold jobs that run as that user.
    """
    lines = [
        f"{BLOCK_BEGIN} ({MANAGED_MARK[2:]})",
        f"# cron daemon zone: {daemon_zone}",
    ]
    notes: list[str] = []
    for job in sorted(jobs, key=lambda j: j.name):
        spec = job.spec
        if user is not None and spec.run_as_user not in (None, user):
            notes.append(f"job {job.name} runs as {spec.run_as_user}: not in {user}'s crontab")
            continue
        schedule = Schedule.of(spec.schedule, spec.timezone)
        all_fields, superset = cron_lines(schedule, spec.timezone, daemon_zone, now)
        argv = [target.schedctl, "run", "--trigger", "cron"]
        if superset:
            argv.append("--at-slot")
        argv.append(job.name)
        command = f"PATH={DEFAULT_PATH} " + " ".join(_sh_quote(a) for a in argv)
        comment = _one_line(f"job {job.name}: {spec.schedule} ({spec.timezone})").replace("%%", "%")
        if superset:
            comment += f"; fires at a superset of its slots in {daemon_zone}, run skips the others"
        lines.append(f"# {comment}")
        who = "" if user is not None else f"{spec.run_as_user or 'root'} "
        lines += [f"{fields} {who}{_cron_escape(command)}" for fields in all_fields]
    lines.append(BLOCK_END)
    return "\n".join(lines) + "\n", notes


def replace_block(existing: str, block: str) -> str:
    """Return `existing` with its managed block replaced by `block` (appended if absent).

    Every line outside the block is kept byte for byte; a missing final newline before an
    appended block is added, since cron ignores a last line without one.
    """
    lines = existing.splitlines(keepends=True)
    begin = next((i for i, ln in enumerate(lines) if ln.startswith(BLOCK_BEGIN)), None)
    if begin is not None:
        end = next(
            (i for i in range(begin, len(lines)) if lines[i].rstrip("\r\n") == BLOCK_END), None
        )
        if end is None:
            raise ValueError(
                f"the crontab has {BLOCK_BEGIN!r} without {BLOCK_END!r}: restore the END line "
                f"or remove the partial block, then sync again"
            )
        return "".join(lines[:begin]) + block + "".join(lines[end + 1 :])
    if existing and not existing.endswith("\n"):
        existing += "\n"
    return existing + block


# --- Kubernetes ------------------------------------------------------------------------------


def k8s_name(job_name: str) -> str:
    """Return a CronJob name (DNS label, at most 52 characters) for a job name."""
    base = "schedctl-" + "".join(c if c.isalnum() else "-" for c in job_name).strip("-")
    if len(base) <= 52 and base == base.lower() and "--" not in base:
        return base
    digest = hashlib.sha256(job_name.encode()).hexdigest()[:8]
    return f"{base[:43].rstrip('-')}-{digest}"


def render_kubernetes(jobs: Sequence[Job], image: str, secret: str, key: str = "url") -> str:
    """Return CronJob manifests (YAML; strings JSON-quoted, which YAML reads as they are)."""
    q = json.dumps
    docs: list[str] = []
    for job in sorted(jobs, key=lambda j: j.name):
        spec = job.spec
        deadline = ""
        if spec.timeout_seconds:
            deadline = (
                f"      activeDeadlineSeconds: {spec.timeout_seconds + _KILL_GRACE + _STOP_GRACE}\n"
            )
        args = ", ".join(q(a) for a in ["run", "--trigger", "cron", job.name])
        docs.append(
            "apiVersion: batch/v1\n"
            "kind: CronJob\n"
            "metadata:\n"
            f"  name: {k8s_name(job.name)}\n"
            "  labels:\n"
            "    app.kubernetes.io/managed-by: schedctl\n"
            f"  annotations:\n    schedctl/job: {q(job.name)}\n"
            "spec:\n"
            f"  schedule: {q(spec.schedule)}\n"
            f"  timeZone: {q(spec.timezone)}\n"
            "  concurrencyPolicy: Forbid\n"
            f"  suspend: {'false' if spec.enabled else 'true'}\n"
            "  startingDeadlineSeconds: 300\n"
            "  jobTemplate:\n"
            "    spec:\n"
            "      backoffLimit: 0\n"  # schedctl run does the retries, each one recorded
            f"{deadline}"
            "      template:\n"
            "        spec:\n"
            "          restartPolicy: Never\n"
            "          containers:\n"
            "            - name: schedctl\n"
            f"              image: {q(image)}\n"
            f"              command: [{q('schedctl')}]\n"
            f"              args: [{args}]\n"
            "              env:\n"
            "                - name: SCHEDCTL_DATABASE_URL\n"
            "                  valueFrom:\n"
            "                    secretKeyRef:\n"
            f"                      name: {q(secret)}\n"
            f"                      key: {q(key)}\n"
            "                - name: SCHEDCTL_HOST\n"
            "                  valueFrom:\n"
            "                    fieldRef:\n"
            "                      fieldPath: metadata.name\n"
        )
    return "---\n".join(docs)
