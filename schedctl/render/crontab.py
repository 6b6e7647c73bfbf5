"""crontab: one managed block, in /etc/cron.d format or a user's crontab.

When the cron daemon's zone is the job's zone the expression is written as it is (schedctl
follows Debian cron's own DST rules). Otherwise the line fires at a superset of instants and
calls `schedctl run --at-slot`, which does nothing unless a slot falls on that firing; nothing
relies on `CRON_TZ`.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from schedctl.errors import ConfigError
from schedctl.models import Job
from schedctl.render import (
    MANAGED_MARK,
    Target,
    compress,
    one_line,
    slots_near_offset_changes,
    zone_offsets,
)  # fmt: skip
from schedctl.render.cronsyntax import entry_problem
from schedctl.schedule import Schedule, load_zone

BLOCK_BEGIN = "# BEGIN schedctl"
BLOCK_END = "# END schedctl"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _cron_list(values: Iterable[int], full: int) -> str:
    vals = sorted(set(values))
    if len(vals) == full:
        return "*"
    return compress(vals, width=1).replace("..", "-")


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
    daemon_offs = zone_offsets(daemon_zone, now)
    deltas = {d - j for d in daemon_offs for j in zone_offsets(zone, now)}
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
    for near in slots_near_offset_changes(schedule, zone, now):
        for x in near:
            if daemon.fires_at(x):
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


def crontab_block(
    jobs: Sequence[Job],
    target: Target,
    daemon_zone: str,
    now: datetime,
    user: str | None,
    user_exists: Callable[[str], bool] | None = None,
) -> tuple[str, list[str]]:
    """Return the managed block and notes on jobs left out.

    `user` None renders /etc/cron.d format; otherwise a user crontab. Every line starts
    schedctl as root (cron.d user field `root`, or root's own crontab), and schedctl starts
    the job as its --user: run as that user itself, schedctl would hold the database password
    where the job could read it. A non-root user's crontab therefore holds only jobs without
    --user (they run as that user, with that user's own configuration). `user_exists`
    (cron.d format only) leaves out a job whose user this host lacks: its runs would fail.
    Raises ConfigError, naming the job, if Debian cron would reject any line.
    """
    lines = [
        f"{BLOCK_BEGIN} ({MANAGED_MARK[2:]})",
        f"# cron daemon zone: {daemon_zone}",
    ]
    notes: list[str] = []
    for job in sorted(jobs, key=lambda j: j.name):
        spec = job.spec
        runs_as = spec.run_as_user
        if user not in (None, "root") and runs_as == user:
            notes.append(
                f"job {job.name} runs as {runs_as}: left out of {user}'s crontab, where schedctl "
                f"would run as {user} too and the job could read its database password; install "
                f"it as root instead (sudo schedctl sync crontab writes /etc/cron.d/schedctl)"
            )
            continue
        if user not in (None, "root") and runs_as is not None:
            notes.append(f"job {job.name} runs as {runs_as}: not in {user}'s crontab")
            continue
        if user is None and runs_as and user_exists is not None and not user_exists(runs_as):
            notes.append(
                f"job {job.name} runs as {runs_as}, who does not exist on this host: left out "
                f"(its runs would fail)"
            )
            continue
        schedule = Schedule.of(spec.schedule, spec.timezone)
        all_fields, superset = cron_lines(schedule, spec.timezone, daemon_zone, now)
        argv = [target.schedctl, "run", "--trigger", "cron"]
        if superset:
            argv.append("--at-slot")
        argv.append(job.name)
        command = f"PATH={DEFAULT_PATH} " + " ".join(shlex.quote(a) for a in argv)
        comment = one_line(f"job {job.name}: {spec.schedule} ({spec.timezone})")
        if superset:
            comment += f"; fires at a superset of its slots in {daemon_zone}, run skips the others"
        if runs_as and runs_as != "root":
            comment += f"; schedctl starts it as {runs_as}"
        lines.append(f"# {comment}")
        who = "" if user is not None else "root "
        entries = [f"{fields} {who}{_cron_escape(command)}" for fields in all_fields]
        for entry in [f"# {comment}", *entries]:
            problem = entry_problem(entry, system=user is None)
            if problem:
                raise ConfigError(
                    f"job {job.name}: Debian cron would reject its crontab line ({problem}) and "
                    f"then ignore every line of the file; fix the job (`schedctl edit "
                    f"{job.name}`) or disable it; nothing was written"
                )
        lines += entries
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
