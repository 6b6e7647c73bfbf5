"""Job definitions as a TOML file: write them for `export`, read them for `apply`.

Pure text in and out: no database, no printing. Each job is one `[[job]]` table; a key left
out means the value `schedctl add` gives (docs/jobs.md, "Jobs as files").
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from schedctl.durations import format_duration, parse_duration
from schedctl.errors import ValidationError
from schedctl.models import (
    DEFAULT_OUTPUT_LIMIT,
    DEFAULT_RETRY_DELAY,
    MASK,
    NOTIFY_EVENTS,
    CatchUpPolicy,
    ConcurrencyPolicy,
    JobSpec,
    mask_target,
)

# The keys of a job, in the order export writes them; the CLI's option names where there is one.
KEYS = (
    "name", "description", "schedule", "tz", "command", "shell", "enabled", "on", "user",
    "workdir", "env", "secret-env", "secrets", "timeout", "concurrency", "catch-up", "jitter", "retries", "retry-delay",
    "output-limit", "keep", "notify", "notify-on", "tags",
)  # fmt: skip
MASK_SUFFIX = "/***"
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_HEADER = re.compile(r"\s*\[\[\s*job\s*\]\]\s*(#.*)?$")
_KEY_LINE = re.compile(r"\s*\"?([A-Za-z0-9_-]+)\"?\s*=")
_SUB_HEADER = re.compile(r"\s*\[\s*job\s*\.\s*\"?([A-Za-z0-9_-]+)\"?\s*\]\s*(#.*)?$")

HEADER_TEXT = (
    "# schedctl job definitions. `schedctl apply -f FILE` makes the database match this file;\n"
    "# a key left out takes the value `schedctl add` gives. See docs/jobs.md, Jobs as files.\n"
)


class FileError(ValidationError):
    """A job file that cannot be applied: FILE:LINE, the field, what to do."""


@dataclass(frozen=True)
class Entry:
    """One job as the file defines it, and where."""

    spec: JobSpec
    line: int  # the line of its [[job]] header
    masked: tuple[str, ...]  # notify targets given as export's placeholder (webhook .../***)
    lines: dict[str, int]  # the line of each key given
    kept: tuple[str, ...] = ()  # secret-env names given as export's placeholder (***)


# -- writing ----------------------------------------------------------------------------------


def _str(value: str) -> str:
    # JSON escapes are TOML basic-string escapes, except \/ which json never writes.
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(type(value).__name__)


def shown(value: Any) -> str:
    """Return a value as the file writes it (for diffs)."""
    return _value(value)


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _str(key)


def fields(spec: JobSpec, secrets: bool = False) -> dict[str, Any]:
    """Return the job's keys that differ from `add`'s defaults, in file order.

    Webhook targets are masked (their URL is their credential) unless `secrets`.
    """
    d = JobSpec(name=spec.name, schedule=spec.schedule, timezone=spec.timezone, command=())
    out: dict[str, Any] = {"name": spec.name}
    if spec.description:
        out["description"] = spec.description
    out["schedule"] = spec.schedule
    out["tz"] = spec.timezone  # always: the host default differs from host to host
    if spec.shell:
        out["shell"] = spec.command[0] if spec.command else ""
    else:
        out["command"] = list(spec.command)
    if not spec.enabled:
        out["enabled"] = False
    if spec.placement:
        out["on"] = spec.placement
    if spec.run_as_user:
        out["user"] = spec.run_as_user
    if spec.workdir:
        out["workdir"] = spec.workdir
    plain = {k: v for k, v in spec.env if k not in spec.secret_env}
    hidden = {k: v if secrets else MASK for k, v in spec.env if k in spec.secret_env}
    if plain:
        out["env"] = plain
    if hidden:
        out["secret-env"] = hidden
    if spec.secrets:
        out["secrets"] = dict(spec.secrets)
    if spec.timeout_seconds is not None:
        out["timeout"] = format_duration(spec.timeout_seconds)
    if spec.concurrency != d.concurrency:
        out["concurrency"] = spec.concurrency.value
    if spec.catch_up != d.catch_up:
        out["catch-up"] = spec.catch_up.value
    if spec.jitter_seconds:
        out["jitter"] = format_duration(spec.jitter_seconds)
    if spec.retries:
        out["retries"] = spec.retries
    if spec.retry_delay_seconds != DEFAULT_RETRY_DELAY:
        out["retry-delay"] = format_duration(spec.retry_delay_seconds)
    if spec.output_limit_bytes != DEFAULT_OUTPUT_LIMIT:
        out["output-limit"] = spec.output_limit_bytes
    if spec.retention_seconds is not None:
        out["keep"] = format_duration(spec.retention_seconds)
    if spec.notify:
        out["notify"] = [t if secrets else mask_target(t) for t in spec.notify]
    if tuple(spec.notify_on) != NOTIFY_EVENTS:
        out["notify-on"] = list(spec.notify_on)
    if spec.tags:
        out["tags"] = list(spec.tags)
    return out


_SHOWN_DEFAULTS: dict[str, Any] = {
    "description": "", "enabled": True, "on": "", "user": "", "workdir": "", "env": {},
    "secret-env": {}, "secrets": {},
    "timeout": "none", "concurrency": ConcurrencyPolicy.FORBID.value,
    "catch-up": CatchUpPolicy.LATEST.value, "jitter": "0s", "retries": 0,
    "retry-delay": format_duration(DEFAULT_RETRY_DELAY), "output-limit": DEFAULT_OUTPUT_LIMIT,
    "keep": "none", "notify": [], "notify-on": list(NOTIFY_EVENTS), "tags": [],
}  # fmt: skip


def differences(old: JobSpec, new: JobSpec) -> list[tuple[str, str, str]]:
    """Return (key, old, new) for each key that differs, values as the file writes them.

    Webhook URLs are compared whole but shown masked.
    """
    full_old, full_new = fields(old, secrets=True), fields(new, secrets=True)
    shown_old, shown_new = fields(old), fields(new)
    out = []
    for key in KEYS:
        a = full_old.get(key, _SHOWN_DEFAULTS.get(key))
        b = full_new.get(key, _SHOWN_DEFAULTS.get(key))
        if a != b:
            sa = shown_old.get(key, _SHOWN_DEFAULTS.get(key))
            sb = shown_new.get(key, _SHOWN_DEFAULTS.get(key))
            out.append((key, "-" if sa is None else _value(sa), "-" if sb is None else _value(sb)))
    return out


def render(specs: list[JobSpec], secrets: bool = False) -> str:
    """Return the TOML text of `specs`, in the order given."""
    parts = [HEADER_TEXT]
    for spec in specs:
        body = "".join(f"{_key(k)} = {_value(v)}\n" for k, v in fields(spec, secrets).items())
        parts.append("\n[[job]]\n" + body)
    return "".join(parts)


def has_secrets(specs: list[JobSpec]) -> bool:
    """Return whether writing `specs` with secrets would put a webhook URL or a value in it."""
    return any(t.startswith("webhook:") for s in specs for t in s.notify) or any(
        s.secret_env for s in specs
    )


# -- reading ----------------------------------------------------------------------------------


def _locate(text: str) -> list[tuple[int, dict[str, int]]]:
    """Return, per [[job]] header in order, its line and the line of each key under it.

    A key of a `[job.KEY]` table (env, secret-env, secrets written as tables) is KEY.NAME.
    """
    found: list[tuple[int, dict[str, int]]] = []
    within = ""  # the job's sub-table the lines belong to, if any
    for number, line in enumerate(text.splitlines(), start=1):
        sub = _SUB_HEADER.fullmatch(line)
        if _HEADER.fullmatch(line):
            found.append((number, {}))
            within = ""
        elif found and sub:
            within = sub.group(1)
            found[-1][1].setdefault(within, number)
        elif found and line.lstrip().startswith("["):
            found.append((number, {}))  # another table: keys below are not the job's
            found[-1][1]["\0other"] = number
        elif found:
            m = _KEY_LINE.match(line)
            if m:
                found[-1][1].setdefault(f"{within}.{m.group(1)}" if within else m.group(1), number)
    return [f for f in found if "\0other" not in f[1]]


def parse(text: str, source: str, default_tz: str) -> list[Entry]:
    """Return the jobs `text` defines; raise FileError naming SOURCE:LINE and the field."""
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column \d+\)|\(at end of document\)", str(e))
        line = m.group(1) if m and m.group(1) else str(len(text.splitlines()) or 1)
        what = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", str(e))
        raise FileError(f"{source}:{line}: not valid TOML: {what}; fix that line") from None
    extra = sorted(set(data) - {"job"})
    if extra:
        raise FileError(
            f"{source}:{_top_line(text, extra[0])}: unknown key {extra[0]!r}: a job file holds "
            f"only [[job]] tables"
        )
    jobs = data.get("job", [])
    if not isinstance(jobs, list) or not all(isinstance(j, dict) for j in jobs):
        raise FileError(f"{source}:1: job: write each job as a [[job]] table")
    places = _locate(text)
    entries: list[Entry] = []
    seen: dict[str, int] = {}
    for i, table in enumerate(jobs):
        line, lines = places[i] if i < len(places) else (1, {})
        entry = _entry(table, source, line, lines, default_tz)
        name = entry.spec.name
        if name in seen:
            raise FileError(
                f"{source}:{lines.get('name', line)}: name: job {name!r} is defined twice (also "
                f"at line {seen[name]}): keep one"
            )
        seen[name] = lines.get("name", line)
        entries.append(entry)
    return entries


def _top_line(text: str, key: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        m = _KEY_LINE.match(line) or re.match(r"\s*\[+\s*\"?([A-Za-z0-9_-]+)", line)
        if m and m.group(1) == key:
            return number
    return 1


class _Reader:
    """Typed access to one [[job]] table that names the line and key of any problem."""

    def __init__(self, table: dict[str, Any], source: str, line: int, lines: dict[str, int]):
        self.table, self.source, self.line, self.lines = table, source, line, lines

    def fail(self, key: str, message: str) -> FileError:
        return FileError(f"{self.source}:{self.lines.get(key, self.line)}: {key}: {message}")

    def get(self, key: str, kind: type | tuple[type, ...], what: str) -> Any:
        value = self.table.get(key)
        if value is None:
            return None
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if not ok:
            raise self.fail(key, f"must be {what}, not {_kind(value)}")
        return value

    def strings(self, key: str) -> list[str] | None:
        value = self.get(key, list, "a list of strings")
        if value is not None and not all(isinstance(v, str) for v in value):
            raise self.fail(key, "must be a list of strings")
        return None if value is None else [str(v) for v in value]

    def duration(self, key: str) -> int | None:
        value = self.get(key, (str, int), 'a duration such as "90s", "5m", "1h30m"')
        if value is None or isinstance(value, int):
            return value
        try:
            return parse_duration(value, what=key)
        except ValidationError as e:
            raise self.fail(key, str(e)) from None


def _kind(value: Any) -> str:
    return {bool: "true/false", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)  # fmt: skip


def _entry(
    table: dict[str, Any], source: str, line: int, lines: dict[str, int], default_tz: str
) -> Entry:
    r = _Reader(table, source, line, lines)
    unknown = [k for k in table if k not in KEYS]
    if unknown:
        key = unknown[0] if _BARE_KEY.fullmatch(unknown[0]) else ascii(unknown[0])
        raise r.fail(key, f"unknown key; a job takes {', '.join(KEYS)}")
    for needed in ("name", "schedule"):
        if needed not in table:
            raise FileError(f"{source}:{line}: {needed}: missing; every [[job]] needs one")
    name = r.get("name", str, "a string")
    if "command" in table and "shell" in table:
        raise r.fail("shell", "give either command (a list) or shell (one string), not both")
    if "shell" in table:
        shell_text = r.get("shell", str, "one string run by /bin/sh -c")
        command: tuple[str, ...] = (shell_text,)
    elif "command" in table:
        command = tuple(r.strings("command") or ())
    else:
        raise FileError(
            f'{source}:{line}: command: missing; give command = ["/path", "arg"] or shell = "..."'
        )
    env = r.get("env", dict, 'a table of NAME = "value"') or {}
    for k, v in env.items():
        if not isinstance(v, str):
            raise r.fail("env", f"{k}: must be a string, not {_kind(v)}")
    hidden = r.get("secret-env", dict, 'a table of NAME = "value"') or {}
    for k, v in hidden.items():
        if not isinstance(v, str):
            raise r.fail("secret-env", f"{k}: must be a string, not {_kind(v)}")
        if k in env:
            raise r.fail("secret-env", f"{k} is in env too: keep it in one of them")
    secrets = r.get("secrets", dict, 'a table of NAME = "file:PATH" or "credential:ID"') or {}
    for k, v in secrets.items():
        if not isinstance(v, str):
            raise r.fail("secrets", f"{k}: must be a string, not {_kind(v)}")
    retries = r.get("retries", int, "a whole number")
    output_limit = r.get("output-limit", int, "a number of bytes")
    notify_on = r.strings("notify-on")
    targets = tuple(r.strings("notify") or ())
    masked = tuple(t for t in targets if t.startswith("webhook:") and t.endswith("***"))
    policies: tuple[tuple[str, type[ConcurrencyPolicy] | type[CatchUpPolicy]], ...] = (
        ("concurrency", ConcurrencyPolicy), ("catch-up", CatchUpPolicy)
    )  # fmt: skip
    for key, kind in policies:
        value = r.get(key, str, "a string")
        if value is not None and value not in {m.value for m in kind}:
            raise r.fail(key, f"{value!r}: use one of {', '.join(m.value for m in kind)}")
    defaults = JobSpec(name="", schedule="", timezone="", command=())
    spec = JobSpec(
        name=name,
        schedule=r.get("schedule", str, "a string"),
        timezone=r.get("tz", str, "a string") or default_tz,
        command=command,
        shell="shell" in table,
        timeout_seconds=r.duration("timeout"),
        concurrency=ConcurrencyPolicy(table.get("concurrency", defaults.concurrency)),
        catch_up=CatchUpPolicy(table.get("catch-up", defaults.catch_up)),
        jitter_seconds=r.duration("jitter") or 0,
        retries=defaults.retries if retries is None else retries,
        retry_delay_seconds=pick_int(r.duration("retry-delay"), DEFAULT_RETRY_DELAY),
        env=tuple(sorted({**env, **hidden}.items())),
        secret_env=tuple(sorted(hidden)),
        secrets=tuple(sorted(secrets.items())),
        workdir=r.get("workdir", str, "a string") or None,
        run_as_user=r.get("user", str, "a string") or None,
        description=r.get("description", str, "a string") or "",
        tags=tuple(r.strings("tags") or ()),
        enabled=pick_bool(r.get("enabled", bool, "true or false"), True),
        output_limit_bytes=pick_int(output_limit, DEFAULT_OUTPUT_LIMIT),
        retention_seconds=r.duration("keep"),
        notify=targets,
        notify_on=tuple(notify_on) if notify_on is not None else NOTIFY_EVENTS,
        placement=r.get("on", str, "a string") or "",
    )
    kept = tuple(sorted(k for k, v in hidden.items() if v == MASK))
    return Entry(spec, line, masked, lines, kept)


def pick_int(value: int | None, default: int) -> int:
    """Return `value` unless it is None."""
    return default if value is None else value


def pick_bool(value: bool | None, default: bool) -> bool:
    """Return `value` unless it is None."""
    return default if value is None else value


# The file key of each JobSpec field, in the order their validation is tried.
_SPEC_KEYS = (
    ("name", "name"), ("schedule", "schedule"), ("timezone", "tz"), ("command", "command"),
    ("timeout_seconds", "timeout"), ("jitter_seconds", "jitter"), ("retries", "retries"),
    ("retry_delay_seconds", "retry-delay"), ("env", "env"), ("secrets", "secrets"),
    ("workdir", "workdir"),
    ("run_as_user", "user"), ("tags", "tags"), ("output_limit_bytes", "output-limit"),
    ("retention_seconds", "keep"), ("notify", "notify"), ("notify_on", "notify-on"),
    ("description", "description"), ("placement", "on"),
)  # fmt: skip


def field_of(spec: JobSpec) -> str:
    """Return the file key whose value makes `spec` invalid: each is tried on a valid job."""
    from dataclasses import replace

    from schedctl.validate import validate_spec

    base = JobSpec(name="x", schedule="@daily", timezone="UTC", command=("true",))
    for attr, key in _SPEC_KEYS:
        changes: dict[str, Any] = {attr: getattr(spec, attr)}
        if attr == "command":
            changes["shell"] = spec.shell
        try:
            validate_spec(replace(base, **changes))
        except ValidationError:
            if attr == "env" and _bad_entry(spec, "") in spec.secret_env:
                return "secret-env"  # the file keeps the secret ones apart
            return "shell" if attr == "command" and spec.shell else key
    return "job"


def _bad_entry(spec: JobSpec, key: str) -> str | None:
    """Return the first NAME of the file's `key` table (env, secret-env, secrets; '' for env
    and secret-env together) that makes `spec` invalid on its own, or None."""
    from dataclasses import replace

    from schedctl.validate import validate_spec

    base = JobSpec(name="x", schedule="@daily", timezone="UTC", command=("true",))
    if key == "secrets":
        tries = [(pair[0], replace(base, secrets=(pair,))) for pair in spec.secrets]
    else:
        tries = [
            (pair[0], replace(base, env=(pair,)))
            for pair in sorted(spec.env)  # in the order validation meets them
            if not key or (pair[0] in spec.secret_env) == (key == "secret-env")
        ]
    for name, one in tries:
        try:
            validate_spec(one)
        except ValidationError:
            return name
    return None


def line_of(spec: JobSpec, key: str, lines: dict[str, int], default: int) -> int:
    """Return the line of the file's `key` that makes `spec` invalid: the bad entry's own line
    where the key is a table of entries."""
    name = _bad_entry(spec, key) if key in ("env", "secret-env", "secrets") else None
    if name is not None and f"{key}.{name}" in lines:
        return lines[f"{key}.{name}"]
    return lines.get(key, default)
