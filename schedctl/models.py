"""Domain records and enums shared by every layer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from schedctl.errors import MalformedJobError


class ConcurrencyPolicy(StrEnum):
    """What `run` does when the job's lock is already held."""

    FORBID = "forbid"
    ALLOW = "allow"
    QUEUE = "queue"


class CatchUpPolicy(StrEnum):
    """What happens to slots missed while a host was down."""

    LATEST = "latest"  # run the most recent missed slot once (systemd Persistent=true)
    SKIP = "skip"  # wait for the next slot


class RunStatus(StrEnum):
    """Outcome of one run attempt."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    KILLED = "killed"
    SKIPPED_OVERLAP = "skipped_overlap"
    LOCK_LOST = "lock_lost"
    LOST = "lost"


# Outcomes that count as failures in reports, checks and retention ("failures kept longer").
FAILURE_STATUSES = frozenset({"failed", "timed_out", "killed", "lock_lost", "lost"})

# What a job can notify about (--notify-on); all three unless the job says otherwise.
NOTIFY_EVENTS = ("failure", "recovery", "missed")


class Trigger(StrEnum):
    """What started a run."""

    TIMER = "timer"
    CRON = "cron"
    MANUAL = "manual"
    DAEMON = "daemon"
    CATCH_UP = "catch-up"


DEFAULT_OUTPUT_LIMIT = 64 * 1024
# What schedctl prints in place of a secret value.
MASK = "***"
DEFAULT_RETRY_DELAY = 30
# SIGTERM -> SIGKILL grace of `schedctl run` for a job it stops; units size their stop timeouts on it.
KILL_GRACE_SECONDS = 10
# How often `schedctl run` proves its session (and so its lock) alive; SCHEDCTL_HEARTBEAT.
DEFAULT_HEARTBEAT_SECONDS = 5.0
# The range SCHEDCTL_HEARTBEAT may take: fast enough for tests, slow enough to stay a fence.
MIN_HEARTBEAT_SECONDS = 0.1
MAX_HEARTBEAT_SECONDS = 300.0
# A heartbeat unanswered for this long, or for one interval if that is longer, counts as a lost
# session: a dead network may never answer, and waiting for it would keep the job running.
MIN_HEARTBEAT_REPLY_SECONDS = 5.0
# Slack for the supervisor's loop and the kill itself on top of the fence's terms.
FENCE_MARGIN_SECONDS = 1.0


def heartbeat_reply_seconds(interval: float) -> float:
    """Return how long a heartbeat sent every `interval` seconds may take to be answered."""
    return max(interval, MIN_HEARTBEAT_REPLY_SECONDS)


def fence_seconds(interval: float, grace: float) -> float:
    """Return how long after its last heartbeat a runner has certainly stopped its job.

    A runner that cannot renew its heartbeat stops the job when the next heartbeat goes
    unanswered (one interval, plus the reply timeout) and kills it after `grace`. The next
    holder of the lock waits this long after that runner's last heartbeat (the fence).
    """
    return interval + heartbeat_reply_seconds(interval) + grace + FENCE_MARGIN_SECONDS


# The fence of a run row that does not say its own (written before schedctl recorded it).
DEFAULT_FENCE_SECONDS = fence_seconds(DEFAULT_HEARTBEAT_SECONDS, KILL_GRACE_SECONDS)
# The longest fence a runner can record; a stored value beyond it (or not a number: written
# by an older schedctl that took any SCHEDCTL_HEARTBEAT) counts as this long.
MAX_FENCE_SECONDS = fence_seconds(MAX_HEARTBEAT_SECONDS, KILL_GRACE_SECONDS)


def sane_fence(value: float | None) -> float | None:
    """Return `value` clamped to [0, MAX_FENCE_SECONDS]; NaN counts as the maximum."""
    if value is None:
        return None
    if not value <= MAX_FENCE_SECONDS:  # NaN and infinity alike
        return MAX_FENCE_SECONDS
    return max(value, 0.0)


def mask_target(target: str) -> str:
    """Return a notification target as it may be shown: a webhook's path and query as ***.

    A chat webhook's URL is its credential (the token sits in the path), so only the scheme
    and host are ever printed.
    """
    kind, _, rest = target.partition(":")
    if kind != "webhook":
        return target
    scheme, sep, after = rest.partition("://")
    host = after.split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1]
    return f"webhook:{scheme}{sep}{host}/***" if sep else "webhook:***"


def webhook_secret(target: str) -> str:
    """Return the part of a webhook target that `mask_target` hides (path and query)."""
    rest = target.partition("://")[2]
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    return rest[cut:]


def iso(dt: datetime | None) -> str | None:
    """Return `dt` in ISO 8601 with its offset, None for None (JSON and log fields)."""
    return None if dt is None else dt.isoformat()


@dataclass(frozen=True)
class JobSpec:
    """Everything a user defines about a job; validated before it is stored."""

    name: str
    schedule: str
    timezone: str
    command: tuple[str, ...]
    shell: bool = False
    timeout_seconds: int | None = None
    concurrency: ConcurrencyPolicy = ConcurrencyPolicy.FORBID
    catch_up: CatchUpPolicy = CatchUpPolicy.LATEST
    jitter_seconds: int = 0
    retries: int = 0
    retry_delay_seconds: int = DEFAULT_RETRY_DELAY
    env: tuple[tuple[str, str], ...] = ()
    workdir: str | None = None
    run_as_user: str | None = None
    description: str = ""
    tags: tuple[str, ...] = ()
    enabled: bool = True
    output_limit_bytes: int = DEFAULT_OUTPUT_LIMIT
    retention_seconds: int | None = None
    notify: tuple[str, ...] = ()  # targets: webhook:URL, mailto:ADDR, exec:/PATH
    notify_on: tuple[str, ...] = NOTIFY_EVENTS
    # A label selector (placement.py) in its stored form; '' places the job on every host.
    placement: str = ""
    # NAME -> REF (hostsecrets.py): where each host finds the value; the value is never stored.
    secrets: tuple[tuple[str, str], ...] = ()
    # Names of `env` entries whose values are masked (***) wherever schedctl prints them.
    secret_env: tuple[str, ...] = ()

    def shown_env(self) -> tuple[tuple[str, str], ...]:
        """Return the environment as it may be printed: secret values as ***."""
        return tuple((k, MASK if k in self.secret_env else v) for k, v in self.env)


class Seal(NamedTuple):
    """An operator's signature over a job's canonical definition (signing.py)."""

    signature: str  # armored SSHSIG, namespace signing.NAMESPACE
    signer: str  # the principal named in the hosts' allowed-signers files
    key: str  # the signing key's fingerprint, SHA256:... (as stored: verify reads the signature's)
    # The canonical definition the signature covers, as signed: what `verify` compares the
    # stored definition with. "" for signatures stored before it was kept.
    signed: str = ""


@dataclass(frozen=True)
class Job:
    """A stored job: its spec plus identity and bookkeeping."""

    id: int
    spec: JobSpec
    revision: int
    created_at: datetime
    updated_at: datetime
    seal: Seal | None = None  # None: unsigned

    @property
    def name(self) -> str:
        """Return the job's name."""
        return self.spec.name

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready form used by `list --json` and `show --json`."""
        s = self.spec
        return {
            "id": self.id,
            "name": s.name,
            "schedule": s.schedule,
            "timezone": s.timezone,
            "command": list(s.command),
            "shell": s.shell,
            "enabled": s.enabled,
            "timeout_seconds": s.timeout_seconds,
            "concurrency": s.concurrency.value,
            "catch_up": s.catch_up.value,
            "jitter_seconds": s.jitter_seconds,
            "retries": s.retries,
            "retry_delay_seconds": s.retry_delay_seconds,
            "env": dict(s.shown_env()),
            "secret_env": list(s.secret_env),
            "secrets": dict(s.secrets),
            "workdir": s.workdir,
            "user": s.run_as_user,
            "description": s.description,
            "tags": list(s.tags),
            "output_limit_bytes": s.output_limit_bytes,
            "retention_seconds": s.retention_seconds,
            "notify": [mask_target(t) for t in s.notify],
            "notify_on": list(s.notify_on),
            "on": s.placement or None,
            "revision": self.revision,
            "signed_by": self.seal.signer if self.seal else None,
            "signing_key": self.seal.key if self.seal else None,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


class JobChanges(NamedTuple):
    """Fields to change on an existing job; None means leave as is.

    A NamedTuple, not a dataclass: only edits use it, yet every `run` and `check` defines it.
    """

    schedule: str | None = None
    timezone: str | None = None
    command: tuple[str, ...] | None = None
    shell: bool | None = None
    timeout_seconds: int | None = None
    clear_timeout: bool = False
    concurrency: ConcurrencyPolicy | None = None
    catch_up: CatchUpPolicy | None = None
    jitter_seconds: int | None = None
    retries: int | None = None
    retry_delay_seconds: int | None = None
    set_env: tuple[tuple[str, str], ...] = ()
    unset_env: tuple[str, ...] = ()
    workdir: str | None = None
    run_as_user: str | None = None
    description: str | None = None
    add_tags: tuple[str, ...] = ()
    remove_tags: tuple[str, ...] = ()
    enabled: bool | None = None
    output_limit_bytes: int | None = None
    retention_seconds: int | None = None
    clear_retention: bool = False
    notify: tuple[str, ...] | None = None  # replaces the job's targets; () clears them
    notify_on: tuple[str, ...] | None = None
    placement: str | None = None  # '' places the job on every host again
    secret_env: tuple[str, ...] = ()  # names in set_env whose values are masked from now on
    set_secrets: tuple[tuple[str, str], ...] = ()
    unset_secrets: tuple[str, ...] = ()


# How each stored field is checked and what `schedctl edit` option rewrites it ({} is the
# job's name). A field without a default (None) must be given again by the edit that repairs it.
_LIST = "list"
_MAP = "map"
_TEXT = "text"
_OPT_TEXT = "optional text"
_INT = "int"
_OPT_INT = "optional int"
_FLAG = "flag"
_FIELDS: dict[str, tuple[str, str]] = {
    "command": (_LIST, "schedctl edit {} -- COMMAND [ARG...]"),
    "shell": (_FLAG, "schedctl edit {} --shell (or --no-shell)"),
    "schedule": (_TEXT, "schedctl edit {} --schedule CRON"),
    "timezone": (_TEXT, "schedctl edit {} --tz ZONE"),
    "timeout_seconds": (_OPT_INT, "schedctl edit {} --timeout DURATION"),
    "concurrency": (_TEXT, "schedctl edit {} --concurrency forbid"),
    "catch_up": (_TEXT, "schedctl edit {} --catch-up latest"),
    "jitter_seconds": (_INT, "schedctl edit {} --jitter DURATION"),
    "retries": (_INT, "schedctl edit {} --retries N"),
    "retry_delay_seconds": (_INT, "schedctl edit {} --retry-delay DURATION"),
    "env": (_MAP, "schedctl edit {} --env NAME=VALUE"),
    "workdir": (_OPT_TEXT, "schedctl edit {} --workdir DIR"),
    "run_as_user": (_OPT_TEXT, "schedctl edit {} --user USER"),
    "description": (_TEXT, "schedctl edit {} --description TEXT"),
    "tags": (_LIST, "schedctl edit {} --tag TAG"),
    "enabled": (_FLAG, "schedctl enable {}"),
    "output_limit_bytes": (_INT, "schedctl edit {} --output-limit SIZE"),
    "retention_seconds": (_OPT_INT, "schedctl edit {} --keep DURATION"),
    "notify": (_LIST, "schedctl edit {} --notify TARGET"),
    "notify_on": (_LIST, "schedctl edit {} --notify-on failure"),
    "placement": (_OPT_TEXT, "schedctl edit {} --on SELECTOR"),
    "secrets": (_MAP, "schedctl edit {} --secret NAME=REF"),
    "secret_env": (_LIST, "schedctl edit {} --secret-env NAME=VALUE"),
}
# Stored fields an edit that repairs the job must give again: they have no default.
REQUIRED_FIELDS = ("command", "schedule", "timezone")
_CHOICES: dict[str, frozenset[str]] = {
    "concurrency": frozenset(p.value for p in ConcurrencyPolicy),
    "catch_up": frozenset(p.value for p in CatchUpPolicy),
    "notify_on": frozenset(NOTIFY_EVENTS),
}
# What a dropped field becomes while the edit that repairs it is applied; a dropped `enabled`
# leaves the job disabled until `schedctl enable` says otherwise.
_REPAIRED: dict[str, Any] = {
    "command": [], "schedule": "", "timezone": "", "shell": False, "enabled": False,
    "env": {}, "secrets": {}, "tags": [], "notify": [], "notify_on": list(NOTIFY_EVENTS),
    "secret_env": [], "description": "", "concurrency": ConcurrencyPolicy.FORBID.value,
    "catch_up": CatchUpPolicy.LATEST.value, "jitter_seconds": 0, "retries": 0,
    "retry_delay_seconds": DEFAULT_RETRY_DELAY, "output_limit_bytes": DEFAULT_OUTPUT_LIMIT,
}  # fmt: skip


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return repr(value)


def _problem(field: str, shape: str, value: Any) -> str | None:
    """Return what is wrong with a stored value of `field`, or None if it has its shape."""
    if shape == _LIST:
        if not isinstance(value, list):
            return f"is {_kind(value)}, not a list of strings"
        if not all(isinstance(v, str) for v in value):
            return "is a list holding more than strings"
        if field == "command" and not value:
            return "is an empty list"
        choices = _CHOICES.get(field)
        if choices is not None and not set(value) <= choices:
            return f"holds other than {', '.join(sorted(choices))}"
        return None
    if shape == _MAP:
        if not isinstance(value, dict):
            return f"is {_kind(value)}, not an object of strings"
        if not all(isinstance(v, str) for v in value.values()):
            return "is an object holding more than strings"
        return None
    if shape in (_TEXT, _OPT_TEXT):
        if value is None and shape == _OPT_TEXT:
            return None
        if not isinstance(value, str):
            return f"is {_kind(value)}, not text"
        choices = _CHOICES.get(field)
        if choices is not None and value not in choices:
            return f"is {value!r}, not one of {', '.join(sorted(choices))}"
        return None
    if shape in (_INT, _OPT_INT):
        if value is None and shape == _OPT_INT:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            return f"is {_kind(value)}, not a whole number"
        return None
    # _FLAG: PostgreSQL stores a boolean, SQLite 0 or 1.
    if isinstance(value, bool) or value in (0, 1):
        return None
    return f"is {_kind(value)}, not a boolean"


def job_problems(row: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Return (field, problem, fix) for every field of a decoded `jobs` row of the wrong type."""
    name = str(row["name"])
    out = []
    for field, (shape, fix) in _FIELDS.items():
        problem = _problem(field, shape, row.get(field, _REPAIRED.get(field)))
        if problem is not None:
            out.append((field, problem, fix.format(name)))
    return out


def job_from_row(
    row: Mapping[str, Any], repair: bool = False
) -> tuple[Job, tuple[MalformedJobError, ...]]:
    """Build a Job from a `jobs` row whose JSON and timestamp columns are already decoded.

    A field of the wrong type raises MalformedJobError naming the job and the field; with
    `repair`, each such field takes its default instead and its error is returned.
    """
    from schedctl.errors import MalformedJobError

    name = str(row["name"])
    dropped = tuple(MalformedJobError(name, *p) for p in job_problems(row))
    if dropped and not repair:
        raise dropped[0]
    if dropped:
        row = {**row, **{e.field: _REPAIRED.get(e.field) for e in dropped}}
    spec = JobSpec(
        name=row["name"],
        schedule=row["schedule"],
        timezone=row["timezone"],
        command=tuple(row["command"]),
        shell=bool(row["shell"]),
        timeout_seconds=row["timeout_seconds"],
        concurrency=ConcurrencyPolicy(row["concurrency"]),
        catch_up=CatchUpPolicy(row["catch_up"]),
        jitter_seconds=row["jitter_seconds"],
        retries=row["retries"],
        retry_delay_seconds=row["retry_delay_seconds"],
        env=tuple(sorted(row["env"].items())),
        workdir=row["workdir"],
        run_as_user=row["run_as_user"],
        description=row["description"],
        tags=tuple(row["tags"]),
        enabled=bool(row["enabled"]),
        output_limit_bytes=row["output_limit_bytes"],
        retention_seconds=row["retention_seconds"],
        notify=tuple(row["notify"]),
        notify_on=tuple(row["notify_on"]),
        placement=row.get("placement") or "",
        secrets=tuple(sorted((row.get("secrets") or {}).items())),
        secret_env=tuple(sorted(row.get("secret_env") or ())),
    )
    seal = None
    if row.get("signature"):
        seal = Seal(row["signature"], row.get("signer") or "", row.get("signing_key") or "",
                    row.get("signed_definition") or "")  # fmt: skip
    job = Job(row["id"], spec, row["revision"], row["created_at"], row["updated_at"], seal)
    return job, dropped
