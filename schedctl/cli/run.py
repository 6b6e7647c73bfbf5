"""`schedctl run JOB`: the hot path, dispatched before Typer, rich or SQLAlchemy are loaded."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from schedctl import __version__, boundary, config, datadir, log, redact
from schedctl.clock import SystemClock
from schedctl.errors import SchemaError, ValidationError
from schedctl.models import Job, Trigger

if TYPE_CHECKING:
    from schedctl.db.repository import Repository
    from schedctl.locking import JobLock
    from schedctl.services import RunContext

USAGE = """\
Usage: schedctl run [OPTIONS] JOB

  Run JOB's current scheduled slot: exactly once across all hosts, under the
  job's lock, with its output streamed through and the result recorded.
  Exit status is the job's own (124 on timeout, 0 when skipped, 75 when the
  database is unavailable, 78 through a transaction pooler).

Options:
  --now            Run now as a manual run (no slot; still locked).
  --at-slot        Do nothing unless one of JOB's slots falls on this minute
                   (crontab lines for a job in another zone than cron's).
  --trigger KIND   What started it: timer, cron, daemon or catch-up
                   [default: timer under systemd, else cron].
  --db URL         Database URL [default: $SCHEDCTL_DATABASE_URL, config file,
                   or the embedded SQLite file]; visible to all users in ps.
  --json           Print the result as one JSON document on stdout at the end
                   (run id, slot, attempt, status, exit code...); the job's
                   own output then passes through on stderr.
  --debug          Show tracebacks on errors.
  -h, --help       Show this message and exit.

Events go to stderr: every one to a terminal or the journal, else warnings
and errors only; SCHEDCTL_LOG_LEVEL=debug|info|warning|error and
SCHEDCTL_LOG_FORMAT=logfmt|json change that (docs/logging.md).

Example: schedctl run nightly-backup --now
"""
_TRIGGERS = {t.value: t for t in Trigger if t is not Trigger.MANUAL}


class _Collected:
    """With --json: what the run's events said, for the document printed at the end."""

    fields: dict[str, Any] | None = None


def emit(event: str, level: str = "info", **fields: Any) -> None:
    """Write one event line to stderr (schedctl/log.py); to a person, say `not due` in words."""
    if _Collected.fields is not None:
        _remember(_Collected.fields, event, fields)
    if event == "run.skipped.no_slot" and log.config().terminal and fields.get("next_slot"):
        _say(f"not due: next slot {_local(fields['next_slot'], fields.get('timezone'))}; "
             "use --now to run it now\n")  # fmt: skip
        return
    log.emit(event, level, **fields)


def _remember(result: dict[str, Any], event: str, fields: dict[str, Any]) -> None:
    if event == "run.finished":
        result.update(fields)
        result["runs"] = [*result.get("runs", []), fields.get("run_id")]
    elif event.startswith("run.refused."):
        result.update(fields)
        result["status"] = "refused"
        result["reason"] = event.removeprefix("run.")
    elif event.startswith("run.skipped.") or event == "run.claimed":
        result.update(fields)
        if event != "run.claimed":
            result["status"] = "skipped"
            result["reason"] = event.removeprefix("run.skipped.")


def _local(iso_instant: str, zone: str | None) -> str:
    """Return `iso_instant` as the job's wall clock: `14:05 CET`, with the date if not today."""
    from zoneinfo import ZoneInfo

    at = datetime.fromisoformat(iso_instant)
    if zone:
        at = at.astimezone(ZoneInfo(zone))
    today = datetime.now(at.tzinfo).date()
    return at.strftime("%H:%M %Z" if at.date() == today else "%Y-%m-%d %H:%M %Z")


def _say(line: str) -> None:
    log.say(line)


def error(message: str) -> None:
    """Write one `schedctl: error:` line to stderr."""
    _say(f"{log.prefix('error')}schedctl: error: {redact.scrub(message)}\n")


def _parse(args: list[str]) -> tuple[str, bool, Trigger, str | None, bool]:
    args = [a for a in args if a != "--json"]
    job: str | None = None
    now = False
    at_slot = False
    trigger: Trigger | None = None
    db: str | None = None
    it = iter(args)
    for arg in it:
        name, eq, inline = arg.partition("=")
        if arg == "--now":
            now = True
        elif arg == "--at-slot":
            at_slot = True
        elif name in ("--trigger", "--db"):
            value = inline if eq else next(it, None)
            if value is None:
                raise ValidationError(f"{name} needs a value (see `schedctl run --help`)")
            if name == "--db":
                db = value
            elif value in _TRIGGERS:
                trigger = _TRIGGERS[value]
            else:
                raise ValidationError(
                    f"unknown --trigger {value!r}: use one of {', '.join(_TRIGGERS)}"
                )
        elif arg == "--debug":
            continue
        elif arg.startswith("-"):
            raise ValidationError(f"no such option {arg!r} (see `schedctl run --help`)")
        elif job is None:
            job = arg
        else:
            raise ValidationError(f"unexpected argument {arg!r}: give one JOB")
    if job is None:
        raise ValidationError("missing JOB: schedctl run JOB (see `schedctl run --help`)")
    if trigger is None:
        trigger = Trigger.TIMER if os.environ.get("INVOCATION_ID") else Trigger.CRON
    if now and at_slot:
        raise ValidationError("--now and --at-slot contradict each other: give one of them")
    return job, now, trigger, db, at_slot


def main(args: list[str], db_flag: str | None = None) -> int:
    """Run `schedctl run ARGS`; return the exit code."""
    # The firing's instant: before anything that can wait (a full server, a held-up commit).
    fired_at = SystemClock().now()
    if "-h" in args or "--help" in args:
        sys.stdout.write(USAGE)
        return 0
    ctx: RunContext | None = None
    document = None
    if "--json" in args:
        # stdout carries only the document: the job's output goes to stderr meanwhile.
        _Collected.fields = {}
        document = os.dup(1)
        os.dup2(2, 1)

    def body() -> int:
        nonlocal ctx
        name, manual, trigger, own_db, at_slot = _parse(args)
        log.configure()
        settings = config.resolve(os.environ, own_db or db_flag)
        warn_db_flag(settings)
        if settings.database.backend == "postgresql":
            # Other jobs of this user may be running (a daemon's, a container's): close this
            # process, which holds the password, to them from the start. (libpq loads ctypes
            # anyway; an SQLite run closes itself before its job starts, in the runner.)
            redact.hide_from_same_user()
        datadir.check(settings.data_dir)  # before anything in it is opened
        from schedctl import services

        ctx = _context(settings, fired_at)
        # Start-up ran with the collector off (entry.py); a job may run for hours, so collect
        # again from here on, leaving what start-up loaded out of every scan.
        gc.freeze()
        gc.enable()
        return services.run_job(ctx, name, trigger, manual, at_slot)

    code = 1
    try:
        code = boundary.guarded(body, boundary.debug_requested(args))
        return code
    finally:
        if ctx is not None:
            # The session current at the end: a reconnect may have replaced the first one.
            ctx.db.close()
        if document is not None:
            _write_document(document, code)


def _write_document(fd: int, code: int) -> None:
    """Write the --json document on the saved stdout, after everything the job wrote."""
    import json

    result = _Collected.fields or {}
    sys.stdout.flush()
    data = {
        "job": result.get("job"),
        "run_id": result.get("run_id"),
        "runs": result.get("runs", []),
        "slot": result.get("slot"),
        "attempt": result.get("attempt"),
        "status": result.get("status", "error" if code else None),
        "reason": result.get("reason"),
        "exit_code": result.get("exit_code"),
        "duration_seconds": result.get("duration_seconds"),
        "host": result.get("host"),
        "exit_status": code,
    }
    with open(fd, "w", encoding="utf-8") as out:
        out.write(json.dumps(data, ensure_ascii=False) + "\n")


def warn_db_flag(settings: config.Settings) -> None:
    """Say on stderr when --db carries a password (`ps` shows it), or a password file is refused."""
    for warning in (config.db_flag_warning(settings), settings.passfile_warning):
        if warning:
            _say(f"{log.prefix('warning')}schedctl: warning: {redact.scrub(warning)}\n")


def _context(settings: config.Settings, fired_at: datetime) -> RunContext:
    """Connect and assemble what run_job needs; only the chosen backend's driver is imported."""
    from schedctl.db.connector import CONNECT_RETRY_RUN, SQLITE_BUSY_RUN
    from schedctl.db.repository import Repository, open_repository
    from schedctl.services import RunContext

    url = settings.database
    clock = SystemClock()
    # A bad label, host name or heartbeat ends the run before it connects.
    labels = config.host_labels(os.environ)
    heartbeat = config.heartbeat_seconds(os.environ)

    # Checked before anything is claimed, like the heartbeat.
    retry = config.connect_retry_seconds(os.environ, CONNECT_RETRY_RUN)

    def connect(within: float | None = None) -> Repository:
        # `within`: a reconnect that has a deadline of its own retries no longer than that.
        budget = retry if within is None else min(retry, within)
        return open_repository(url, clock, "schedctl run", SQLITE_BUSY_RUN, budget)

    if url.backend == "postgresql":
        from schedctl.locking import PgAdvisoryLock

        def lock_for(job: Job) -> JobLock:
            # On the run's own session: the lock lives exactly as long as that session.
            assert isinstance(ctx.db, Repository)
            return PgAdvisoryLock(ctx.db.session, job.id, ctx.db.pooled_pid)
    else:
        from schedctl.locking import FileLock

        def lock_for(job: Job) -> JobLock:
            return FileLock(settings.data_dir / "locks", job.id)

    host = config.host_name(os.environ)
    judge = _judge()

    def notify(run_ids: list[int]) -> None:
        from schedctl import notify as outbox

        try:
            found = outbox.settings_from({**config.file_values(os.environ), **os.environ})
            if found.budget > 0:
                assert isinstance(ctx.db, Repository)
                owner = f"{host}:{os.getpid()}"
                outbox.deliver(ctx.db, found, emit, owner, host, run_ids, found.budget)
        except Exception as e:  # the job's status stands; `schedctl notify` sends it later
            emit("notify.deferred", level="warning", error=redact.describe(e))

    db = _with_current_schema(settings, connect)
    ctx = RunContext(
        db=db,
        lock_for=lock_for,
        reconnect=connect,
        clock=clock,
        host=host,
        labels=labels,
        version=__version__,
        spool_dir=settings.data_dir / "spool",
        procs_dir=settings.data_dir / "procs",
        emit=emit,
        error=error,
        base_env=dict(os.environ),
        heartbeat_seconds=heartbeat,
        cgroup=os.environ.get("SCHEDCTL_RUN_CGROUP", "auto") != "off",
        notify=notify,
        secrets_dir=lambda: config.secrets_dir(os.environ),
        credentials_dir=os.environ.get("CREDENTIALS_DIRECTORY") or None,
        judge=judge,
        fired_at=fired_at,
    )
    return ctx


def _judge() -> Callable[[Job], Any] | None:
    """Return this host's judge of jobs (trust.py), or None when it has no such settings.

    A host without them pays nothing for the check: not even the module is loaded.
    """
    values = {**config.file_values(os.environ), **os.environ}
    if not any(values.get(k) for k in _TRUST_VARS):
        return None
    from schedctl import trust

    settings = trust.host_trust(os.environ)
    if not settings.active:
        return None
    env = dict(os.environ)
    return lambda job: trust.admit(job, settings, env)


# trust.TRUST_VARS, here so that a host without them does not load trust.py.
_TRUST_VARS = (
    "SCHEDCTL_REQUIRE_SIGNATURE", "SCHEDCTL_ALLOWED_SIGNERS", "SCHEDCTL_ALLOWED_USERS",
    "SCHEDCTL_COMMAND_DIRS",
)  # fmt: skip


def _with_current_schema(
    settings: config.Settings, connect: Callable[[], Repository]
) -> Repository:
    """Connect and check the schema once; the embedded database is upgraded on first use."""
    db = connect()
    try:
        db.check_schema()
        return db
    except SchemaError:
        db.close()
        if settings.database.backend != "sqlite":
            raise
    _create_sqlite(settings)
    return connect()


def _create_sqlite(settings: config.Settings) -> None:
    """Migrate the embedded database (created 0600, in a 0700 directory, on connecting)."""
    from schedctl.db.repository import open_current

    open_current(settings.database, SystemClock()).close()
