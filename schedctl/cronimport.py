"""Read a crontab (user or /etc/cron.d syntax) into job specs, and import them in one go.

The parsing follows Debian's cron (crontab(5), entry.c, env.c): what cron would run is what the
job runs, or the line is skipped with the reason.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from schedctl.clock import Clock
from schedctl.db.connector import RefusedError
from schedctl.errors import ConflictError, SchedctlError
from schedctl.models import NOTIFY_EVENTS, Job, JobSpec
from schedctl.render.cronsyntax import entry_problem
from schedctl.validate import validate_spec

if TYPE_CHECKING:
    from schedctl.db.repository import Repository

Syntax = Literal["user", "system"]

# What cron gives every command unless the crontab says otherwise (Debian: _PATH_DEFPATH).
CRON_PATH = "/usr/bin:/bin"
CRON_SHELL = "/bin/sh"
_BLANKS = " \t"
_SPACE = " \t\n\v\f\r"  # C isspace()
_QUOTES = "'\""
_UNQUOTED_NAME = re.compile(r"[^ \t\n\v\f\r=]*")
_NAME_CUT = re.compile(r"[^a-z0-9_.-]+")
_MAX_NAME = 63
_HASH_LEN = 6


@dataclass(frozen=True)
class Planned:
    """A crontab line that becomes a job."""

    line: int
    text: str
    spec: JobSpec


@dataclass(frozen=True)
class Skipped:
    """A crontab line left out, and why."""

    line: int
    text: str
    reason: str


@dataclass
class Parsed:
    """What a crontab holds: the lines that become jobs and the ones left out."""

    syntax: Syntax
    planned: list[Planned] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


@dataclass(frozen=True)
class Defaults:
    """What a line's job gets that the crontab does not say."""

    timezone: str
    user: str | None = None
    name_prefix: str = ""
    notify: tuple[str, ...] = ()
    notify_on: tuple[str, ...] = NOTIFY_EVENTS


def parse_env_line(line: str) -> tuple[str, str] | None:
    """Return (name, value) if `line` is an environment setting as Debian's env.c reads it.

    `NAME = VALUE`, blanks around `=` optional; either side may be quoted (matching quotes),
    which keeps a value's outer blanks; an unquoted value loses its trailing blanks. Nothing
    may follow a closing quote, and an empty unquoted value makes it no setting at all.
    """
    text = line.lstrip(_SPACE)
    if text[:1] in _QUOTES:
        end = text.find(text[0], 1)
        if end < 0 or "=" in text[1:end]:
            return None
        name, rest = text[1:end], text[end + 1 :]
    else:
        name = _UNQUOTED_NAME.match(text).group()  # type: ignore[union-attr]
        rest = text[len(name) :]
    rest = rest.lstrip(_SPACE)
    if not rest.startswith("="):
        return None
    rest = rest[1:].lstrip(_SPACE)
    if not rest:
        return None
    if rest[0] in _QUOTES:
        end = rest.find(rest[0], 1)
        if end < 0 or rest[end + 1 :].strip(_SPACE):
            return None
        return name, rest[1:end]
    return name, rest.rstrip(_SPACE)


def split_percent(command: str) -> tuple[str, str | None]:
    """Return cron's command (with `\\%` made `%`) and its stdin text, None if it has none."""
    out: list[str] = []
    escaped = False
    for i, c in enumerate(command):
        if escaped:
            if c == "%":
                out[-1] = "%"
            else:
                out.append(c)
            escaped = False
            continue
        if c == "\\":
            escaped = True
            out.append(c)
            continue
        if c == "%":
            return "".join(out), command[i + 1 :]
        out.append(c)
    return "".join(out), None


def _fields(text: str, count: int) -> tuple[list[str], str] | None:
    """Split off `count` blank-separated fields; return them and the rest (None if too few)."""
    parts: list[str] = []
    rest = text.lstrip(_BLANKS)
    for _ in range(count):
        end = next((i for i, c in enumerate(rest) if c in _BLANKS), None)
        if end is None:
            return None
        parts.append(rest[:end])
        rest = rest[end:].lstrip(_BLANKS)
    return parts, rest


def job_name(command: str, schedule: str, user: str | None, prefix: str) -> str:
    """Return the job name for a line: the program's name and a hash of what the line runs."""
    words = command.split()
    first = words[0].rsplit("/", 1)[-1] if words else "job"
    base = _NAME_CUT.sub("-", first.lower()).strip("-._") or "job"
    digest = hashlib.sha256(f"{schedule}\0{user or ''}\0{command}".encode()).hexdigest()
    stem = f"{prefix}{base}"[: _MAX_NAME - _HASH_LEN - 1]
    name = f"{stem}-{digest[:_HASH_LEN]}"
    return name if name[0].isalnum() else f"j{name}"[:_MAX_NAME]


def parse(text: str, syntax: Syntax, defaults: Defaults) -> Parsed:
    """Read crontab `text` into the jobs it defines and the lines left out."""
    parsed = Parsed(syntax)
    env: dict[str, str] = {}
    comments: list[str] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.split("\n"), start=1):
        stripped = raw.lstrip(_BLANKS)
        if not stripped.strip():
            comments = []
            continue
        if stripped.startswith("#"):
            comments.append(stripped[1:].strip())
            continue
        above, comments = comments, []
        setting = parse_env_line(raw)
        if setting is not None:
            env[setting[0]] = setting[1]
            continue
        try:
            planned = _job_line(number, raw, syntax, env, above, defaults)
        except _Skip as e:
            parsed.skipped.append(Skipped(number, raw, str(e)))
            continue
        first = seen.setdefault(planned.spec.name, number)
        if first != number:
            parsed.skipped.append(
                Skipped(
                    number,
                    raw,
                    f"same schedule and command as line {first}: "
                    "cron would run both, schedctl runs one job once per slot",
                )
            )
            continue
        parsed.planned.append(planned)
    return parsed


class _Skip(Exception):
    """A line schedctl cannot represent exactly; the message says why."""


def _job_line(
    number: int, raw: str, syntax: Syntax, env: dict[str, str], above: list[str], d: Defaults
) -> Planned:
    problem = entry_problem(raw, system=syntax == "system")
    if problem is not None:
        raise _Skip(f"cron itself refuses this line ({problem})")
    line = raw.lstrip(_BLANKS)
    if line.startswith("@"):
        split = _fields(line, 1)
        if split is None:
            raise _Skip("a macro needs a command after it")
        (schedule,), rest = split
        if schedule.lower() == "@reboot":
            raise _Skip("@reboot runs at boot, not on a schedule: use a systemd unit instead")
    else:
        split = _fields(line, 5)
        if split is None:
            raise _Skip("not a cron line: needs 5 time fields and a command, or VAR=value")
        fields, rest = split
        schedule = " ".join(fields)
    user = d.user
    if syntax == "system":
        got = _fields(rest, 1)
        if got is None:
            raise _Skip("no user and command after the schedule (/etc/cron.d syntax)")
        (user,), rest = got
    if not rest:
        raise _Skip("no command after the schedule")
    command, stdin = split_percent(rest)
    if stdin is not None:
        raise _Skip(
            "an unescaped % starts the command's standard input in cron, and schedctl jobs "
            "have none: write it as \\% for a literal %, or feed the text from a file (< FILE)"
        )
    shell = env.get("SHELL", CRON_SHELL)
    zone = env.get("CRON_TZ") or env.get("TZ") or d.timezone
    job_env = {k: v for k, v in env.items() if k not in ("MAILTO", "CRON_TZ")}
    job_env.setdefault("PATH", CRON_PATH)
    job_env.setdefault("SHELL", CRON_SHELL)
    if "MAILTO" in env:
        addresses = [a.strip() for a in env["MAILTO"].split(",") if a.strip()]
        notify = tuple(f"mailto:{a if '@' in a else a + '@localhost'}" for a in addresses)
    else:
        notify = d.notify
    spec = JobSpec(
        name=job_name(command, schedule, user if syntax == "system" else None, d.name_prefix),
        schedule=schedule,
        timezone=zone,
        command=(command,) if shell == CRON_SHELL else (shell, "-c", command),
        shell=shell == CRON_SHELL,
        env=tuple(sorted(job_env.items())),
        run_as_user=user,
        description=" ".join(c for c in above if c),
        notify=notify,
        notify_on=d.notify_on,
    )
    try:
        spec = validate_spec(spec)
    except SchedctlError as e:
        raise _Skip(str(e)) from None
    return Planned(number, raw, spec)


@dataclass(frozen=True)
class Outcome:
    """What an import did (or, dry, would do) with each line."""

    created: list[Planned]
    unchanged: list[Planned]
    skipped: list[Skipped]
    jobs: list[Job]


def import_jobs(store: Repository, parsed: Parsed, clock: Clock, dry_run: bool) -> Outcome:
    """Store the jobs `parsed` defines that are not stored yet, all in one transaction.

    A name already taken by a job that differs is a ConflictError: nothing is stored.
    """
    existing = {j.name: j for j in store.list_jobs()}
    created: list[Planned] = []
    unchanged: list[Planned] = []
    for p in parsed.planned:
        have = existing.get(p.spec.name)
        if have is None:
            created.append(p)
        elif _same(have.spec, p.spec):
            unchanged.append(p)
        else:
            raise ConflictError(
                f"line {p.line}: a different job named {p.spec.name!r} exists already: "
                f"compare `schedctl show {p.spec.name}`, remove or rename it (or use "
                f"--name-prefix); nothing was imported"
            )
    jobs: list[Job] = []
    if created and not dry_run:
        try:
            jobs = store.add_jobs((p.spec for p in created), clock.now())
        except RefusedError as e:
            raise ConflictError(
                f"the database refused a job ({str(e).splitlines()[0]}); nothing was imported"
            ) from None
    return Outcome(created, unchanged, parsed.skipped, jobs)


def _same(a: JobSpec, b: JobSpec) -> bool:
    # What the crontab line defines; a later `edit` of other settings is no difference.
    keys = ("schedule", "timezone", "command", "shell", "env", "run_as_user", "notify")
    return all(getattr(a, k) == getattr(b, k) for k in keys)


def retire_commands(
    lines: Iterable[int], source: str, syntax: Syntax, user: str | None
) -> list[str]:
    """Return shell commands that comment out `lines` of the crontab they came from."""
    numbers = sorted(set(lines))
    if not numbers:
        return []
    script = " ".join(f"-e '{n}s/^/# moved to schedctl: /'" for n in numbers)
    if syntax == "system" and source != "-":
        return [f"sed -i {script} {_quote(source)}"]
    who = f" -u {user}" if user else ""
    return [f"crontab{who} -l | sed {script} | crontab{who} -"]


def _quote(path: str) -> str:
    return shlex.quote(path)
