"""Validate and normalise job definitions so nothing unsafe or meaningless is stored."""

from __future__ import annotations

import re
from dataclasses import replace

from schedctl.durations import MAX_SECONDS
from schedctl.errors import ValidationError
from schedctl.models import NOTIFY_EVENTS, JobSpec, mask_target
from schedctl.placement import normalise
from schedctl.schedule import load_zone, parse_cron

# schedctl-NAME.timer for these is one of schedctl's own units (units/).
RESERVED_NAMES = frozenset({"sync", "prune", "notify"})
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
TAG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}")
ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
# What systemd takes without a warning (its "strict user name rules").
USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,30}")
# Variables schedctl sets itself for every run; a job may not override them.
RESERVED_ENV = frozenset({"SCHEDCTL_JOB", "SCHEDCTL_RUN_ID", "SCHEDCTL_SLOT", "SCHEDCTL_RUN_TOKEN"})
MAX_RETRIES = 100
MIN_OUTPUT_LIMIT = 1024
MAX_OUTPUT_LIMIT = 16 * 1024 * 1024
MAX_TEXT = 4096
# Terminal escapes, other C0 and C1 controls and DEL (tab is fine) could forge log lines or
# output; U+2028/U+2029 end a line for many readers (Python's splitlines among them).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
# Lone surrogates: bytes from the command line that are not UTF-8; no database can store them.
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# Linux limits, and what systemd's WorkingDirectory= accepts (path_is_valid).
MAX_PATH_BYTES = 4095
MAX_NAME_BYTES = 255


def check_name(name: str) -> str:
    """Return `name` if it is a valid job name, else raise."""
    if not NAME_RE.fullmatch(name):
        raise ValidationError(
            f"invalid job name {name!r}: use 1-63 of a-z 0-9 _ . - starting with a letter "
            f"or digit, e.g. nightly-backup"
        )
    if name in RESERVED_NAMES:
        raise ValidationError(
            f"job name {name!r} is reserved: schedctl's own schedctl-{name}.timer uses it; "
            f"choose another name"
        )
    return name


def _plain(field: str, value: str) -> str:
    """Refuse characters that could break out of a unit file, crontab line or log line."""
    for bad, label in (("\x00", "a NUL byte"), ("\n", "a newline"), ("\r", "a carriage return")):
        if bad in value:
            raise ValidationError(f"{field} contains {label}: remove it and try again")
    if _SURROGATE.search(value):
        raise ValidationError(f"{field} contains bytes that are not UTF-8: give it as UTF-8 text")
    control = _CONTROL.search(value)
    if control:
        what = "line separator" if control.group() in "\u2028\u2029" else "control character"
        raise ValidationError(
            f"{field} contains {what} {control.group()!r}: remove it and try again"
        )
    if len(value) > MAX_TEXT:
        raise ValidationError(f"{field} is longer than {MAX_TEXT} characters: shorten it")
    return value


def check_text(field: str, value: str) -> str:
    """Return `value` if it may be stored as text (no controls, line separators, non-UTF-8)."""
    return _plain(field, value)


def parse_env_pair(text: str) -> tuple[str, str]:
    """Split `KEY=VALUE` (from `--env`), or raise naming the expected form."""
    key, sep, value = text.partition("=")
    if not sep:
        raise ValidationError(f"bad --env {text!r}: use KEY=VALUE, e.g. --env LANG=C.UTF-8")
    return check_env_key(key), value


def check_env_key(key: str) -> str:
    """Return `key` if it is a valid environment variable name, else raise."""
    if not ENV_KEY_RE.fullmatch(key):
        raise ValidationError(
            f"bad environment variable name {key!r}: use letters, digits and _ , "
            f"not starting with a digit"
        )
    if key in RESERVED_ENV:
        raise ValidationError(f"environment variable {key} is set by schedctl itself: rename it")
    return key


def validate_spec(spec: JobSpec) -> JobSpec:
    """Return a normalised copy of `spec`, or raise ValidationError on the first problem."""
    check_name(spec.name)
    cron = parse_cron(_plain("schedule", spec.schedule))
    load_zone(_plain("timezone", spec.timezone))
    command = _check_command(spec.command, spec.shell)
    if spec.timeout_seconds is not None and not 1 <= spec.timeout_seconds <= MAX_SECONDS:
        raise ValidationError("timeout must be at least 1s; use `none` for no timeout")
    if spec.jitter_seconds < 0:
        raise ValidationError("jitter cannot be negative")
    if not 0 <= spec.retries <= MAX_RETRIES:
        raise ValidationError(f"retries must be between 0 and {MAX_RETRIES}")
    if spec.retry_delay_seconds < 0:
        raise ValidationError("retry delay cannot be negative")
    env = tuple(sorted((check_env_key(k), _plain(f"--env {k}", v)) for k, v in spec.env))
    if len({k for k, _ in env}) != len(env):
        raise ValidationError("an environment variable is given twice: keep one --env per name")
    secrets = _check_secrets(spec, {k for k, _ in env})
    workdir = spec.workdir or None
    if workdir is not None:
        check_unit_path("workdir", workdir)
    user = spec.run_as_user or None
    if user is not None and not USER_RE.fullmatch(user):
        raise ValidationError(f"invalid user name {user!r}: use a Unix login name, e.g. www-data")
    for tag in spec.tags:
        if not TAG_RE.fullmatch(tag):
            raise ValidationError(
                f"invalid tag {tag!r}: use 1-63 of A-Z a-z 0-9 _ . : - starting with a letter "
                f"or digit"
            )
    if not MIN_OUTPUT_LIMIT <= spec.output_limit_bytes <= MAX_OUTPUT_LIMIT:
        raise ValidationError(
            f"output limit must be between {MIN_OUTPUT_LIMIT} bytes and {MAX_OUTPUT_LIMIT} bytes"
        )
    if spec.retention_seconds is not None and spec.retention_seconds < 60:
        raise ValidationError("retention must be at least 1m")
    notify = tuple(dict.fromkeys(check_target(t) for t in spec.notify))
    notify_on = check_events(spec.notify_on)
    return replace(
        spec,
        schedule=cron.text,
        command=command,
        env=env,
        workdir=workdir,
        run_as_user=user,
        description=_plain("description", spec.description),
        tags=tuple(sorted(set(spec.tags))),
        notify=notify,
        notify_on=notify_on,
        placement=normalise(spec.placement),
        secrets=secrets,
        secret_env=tuple(sorted(set(spec.secret_env))),
    )


def _check_secrets(spec: JobSpec, env_names: set[str]) -> tuple[tuple[str, str], ...]:
    """Return the job's NAME=REF secrets checked; the secret env names must name env entries."""
    from schedctl.hostsecrets import check_ref

    for key in spec.secret_env:
        if key not in env_names:
            raise ValidationError(
                f"{key} is marked secret but the job has no such variable: give it with "
                f"--secret-env {key}=VALUE"
            )
    names = [check_env_key(name) for name, _ in spec.secrets]
    if len(set(names)) != len(names):
        raise ValidationError("a secret is given twice: keep one --secret per name")
    for name, ref in spec.secrets:
        if name in env_names:
            raise ValidationError(
                f"{name} is both an --env variable and a --secret: keep one of them"
            )
        _plain(f"--secret {name}", ref)
        check_ref(name, ref)
    return tuple(sorted(spec.secrets))


_MAILTO_RE = re.compile(r"[A-Za-z0-9_.+=-][^@\s<>,;:\"'()\\]*@[A-Za-z0-9.-]+")
_TARGET_HELP = "use webhook:https://HOST/PATH, mailto:ADDRESS or exec:/ABSOLUTE/PATH"


def check_target(target: str) -> str:
    """Return a notification target if it is usable, else raise saying what is accepted."""
    shown = mask_target(target)
    if _CONTROL.search(target) or _SURROGATE.search(target) or any(c.isspace() for c in target):
        raise ValidationError(f"--notify {shown}: spaces or control characters; {_TARGET_HELP}")
    kind, sep, rest = target.partition(":")
    if kind == "webhook" and sep:
        from urllib.parse import urlsplit

        try:
            url = urlsplit(rest)
            url.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            raise ValidationError(f"--notify {shown}: not a URL; {_TARGET_HELP}") from None
        if url.scheme not in ("https", "http") or not url.hostname:
            raise ValidationError(
                f"--notify {shown}: a webhook needs an http:// or https:// URL with a host; "
                f"{_TARGET_HELP}"
            )
        return target
    if kind == "mailto" and sep:
        # Never starting with `-`: the address is an argument of sendmail.
        if not _MAILTO_RE.fullmatch(rest):
            raise ValidationError(
                f"--notify {target}: not a mail address; give one, e.g. mailto:ops@example.com"
            )
        return target
    if kind == "exec" and sep:
        if not rest.startswith("/"):
            raise ValidationError(
                f"--notify {target}: the command must be an absolute path, e.g. "
                f"exec:/usr/local/bin/page-oncall"
            )
        return target
    raise ValidationError(f"--notify {shown}: unknown kind of target; {_TARGET_HELP}")


def check_events(events: tuple[str, ...]) -> tuple[str, ...]:
    """Return the --notify-on events in their canonical order, else raise naming the choices."""
    for event in events:
        if event not in NOTIFY_EVENTS:
            raise ValidationError(
                f"--notify-on {event!r}: not an event; use a comma-separated list of "
                f"{', '.join(NOTIFY_EVENTS)}"
            )
    if not events:
        raise ValidationError(
            f"--notify-on needs at least one of {', '.join(NOTIFY_EVENTS)}; to notify nobody, "
            f"use --notify none"
        )
    return tuple(e for e in NOTIFY_EVENTS if e in events)


def check_unit_path(field: str, path: str) -> str:
    """Return `path` if a systemd unit setting carries it exactly, else raise saying why.

    systemd strips trailing blanks, joins a line ending in a backslash with the next one,
    rewrites `//` and `.` parts and refuses `..`; schedctl writes the path as it is, so it
    must already be in that form.
    """
    _plain(field, path)
    problem = _path_problem(path)
    if problem:
        raise ValidationError(
            f"{field} {path!r} {problem}: give an absolute, normalised path (no //, . or .. "
            f"parts, no trailing /, \\, space or tab), e.g. /srv/app"
        )
    return path


def _path_problem(path: str) -> str | None:
    if not path.startswith("/"):
        return "is not an absolute path"
    if path != "/" and path.endswith("/"):
        return "ends with /"
    if path.endswith(("\\", " ", "\t")):
        return "ends with a backslash, space or tab (a unit file joins or drops it)"
    parts = path.split("/")[1:]
    if path != "/" and any(p in ("", ".", "..") for p in parts):
        return "has an empty, . or .. part"
    if len(path.encode()) > MAX_PATH_BYTES:
        return f"is longer than {MAX_PATH_BYTES} bytes"
    if any(len(p.encode()) > MAX_NAME_BYTES for p in parts):
        return f"has a part longer than {MAX_NAME_BYTES} bytes"
    return None


def _check_command(command: tuple[str, ...], shell: bool) -> tuple[str, ...]:
    if not command or not command[0].strip():
        raise ValidationError(
            "empty command: give it after --, e.g. schedctl add NAME --schedule '@daily' -- /usr/bin/true"
        )
    for i, arg in enumerate(command):
        _plain(f"command argument {i + 1}", arg)
    if shell and len(command) != 1:
        raise ValidationError(
            "with --shell give the command as one quoted argument, e.g. -- 'tar c /srv | gzip > /backup/x.tgz'"
        )
    return command
