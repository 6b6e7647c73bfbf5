"""Use cases: what each command does, independent of how it is printed."""

from __future__ import annotations

import contextlib
import os
import pwd
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from schedctl import redact
from schedctl.clock import Clock
from schedctl.db import spool
from schedctl.db.repository import (
    Claim,
    RecordRefusedError,
    RunDB,
    RunGoneError,
    Runner,
    RunResult,
)
from schedctl.errors import (
    ChangedAfterSigningError,
    ConfigError,
    DatabaseUnavailableError,
    ExitCode,
    MalformedJobError,
    NotFoundError,
    SecretUnavailableError,
    ValidationError,
)
from schedctl.locking import JobLock
from schedctl.models import (
    DEFAULT_HEARTBEAT_SECONDS,
    KILL_GRACE_SECONDS,
    REQUIRED_FIELDS,
    CatchUpPolicy,
    ConcurrencyPolicy,
    Job,
    JobChanges,
    JobSpec,
    RunStatus,
    Trigger,
    fence_seconds,
    heartbeat_reply_seconds,
)
from schedctl.placement import selector_of
from schedctl.schedule import FIRING_EARLY, MAX_TOLERANCE, Schedule, pick_slot
from schedctl.validate import check_name, validate_spec

if TYPE_CHECKING:
    from schedctl.db.repository import Repository
    from schedctl.proctree import ProcRecord
    from schedctl.runner import RunOutcome, RunRequest
    from schedctl.trust import Admitted, Refusal

T = TypeVar("T")
AT_SLOT_DELAY = timedelta(minutes=2)
# A firing this much later than its slot (plus the job's jitter), by the clock that fired it,
# follows downtime: `--catch-up skip` skips it.
START_GRACE = timedelta(minutes=5)
# Never handed down to jobs from schedctl's own environment: the database URL holds the
# fleet's password, and libpq reads PG* variables (PGPASSWORD, PGPASSFILE, PGSERVICE,
# PGSERVICEFILE, PGSYSCONFDIR, PGHOST, PGUSER, ...) to find and prove who connects where.
# A job that needs any of them gets them from its own --env.
SECRET_ENV = frozenset({"SCHEDCTL_DATABASE_URL"})
LIBPQ_ENV_PREFIX = "PG"


def inherited_env(base: Mapping[str, str]) -> dict[str, str]:
    """Return what a job inherits of schedctl's environment: all but the database secrets."""
    return {
        k: v for k, v in base.items() if k not in SECRET_ENV and not k.startswith(LIBPQ_ENV_PREFIX)
    }


def add_job(store: Repository, spec: JobSpec, clock: Clock) -> Job:
    """Validate and store a new job."""
    return store.add_job(validate_spec(spec), clock.now())


def get_job(store: Repository, name: str) -> Job:
    """Return the job called `name`."""
    return store.load_job(check_name(name))


def list_jobs(store: Repository, tag: str | None = None) -> list[Job]:
    """Return all jobs, or those carrying `tag`."""
    found = store.list_jobs()
    return [j for j in found if tag is None or tag in j.spec.tags]


def apply_changes(spec: JobSpec, ch: JobChanges) -> JobSpec:
    """Return `spec` with `ch` applied (not yet validated)."""
    env = dict(spec.env)
    for key in ch.unset_env:
        if key not in env:
            raise ValidationError(f"--unset-env {key}: the job has no such variable")
        del env[key]
    env.update(ch.set_env)
    secret_env = (set(spec.secret_env) - set(ch.unset_env)) | set(ch.secret_env)
    secrets = dict(spec.secrets)
    for key in ch.unset_secrets:
        if key not in secrets:
            raise ValidationError(f"--unset-secret {key}: the job has no such secret")
        del secrets[key]
    secrets.update(ch.set_secrets)
    tags = set(spec.tags)
    for tag in ch.remove_tags:
        if tag not in tags:
            raise ValidationError(f"--untag {tag}: the job has no such tag")
        tags.discard(tag)
    tags.update(ch.add_tags)

    return replace(
        spec,
        schedule=pick(ch.schedule, spec.schedule),
        timezone=pick(ch.timezone, spec.timezone),
        command=pick(ch.command, spec.command),
        shell=pick(ch.shell, spec.shell),
        timeout_seconds=None
        if ch.clear_timeout
        else pick(ch.timeout_seconds, spec.timeout_seconds),
        concurrency=pick(ch.concurrency, spec.concurrency),
        catch_up=pick(ch.catch_up, spec.catch_up),
        jitter_seconds=pick(ch.jitter_seconds, spec.jitter_seconds),
        retries=pick(ch.retries, spec.retries),
        retry_delay_seconds=pick(ch.retry_delay_seconds, spec.retry_delay_seconds),
        env=tuple(sorted(env.items())),
        workdir=pick(ch.workdir, spec.workdir or "") or None,
        run_as_user=pick(ch.run_as_user, spec.run_as_user or "") or None,
        description=pick(ch.description, spec.description),
        tags=tuple(sorted(tags)),
        enabled=pick(ch.enabled, spec.enabled),
        output_limit_bytes=pick(ch.output_limit_bytes, spec.output_limit_bytes),
        retention_seconds=(
            None if ch.clear_retention else pick(ch.retention_seconds, spec.retention_seconds)
        ),
        notify=pick(ch.notify, spec.notify),
        notify_on=pick(ch.notify_on, spec.notify_on),
        placement=pick(ch.placement, spec.placement),
        secrets=tuple(sorted(secrets.items())),
        secret_env=tuple(sorted(secret_env)),
    )


def pick(new: T | None, old: T) -> T:
    """Return `new` unless it is None."""
    return old if new is None else new


class EditResult(NamedTuple):
    """A job after an edit, whether anything changed, and the malformed fields it dropped."""

    job: Job
    changed: bool
    dropped: tuple[MalformedJobError, ...] = ()


def edit_job(
    store: Repository, name: str, changes: JobChanges, clock: Clock, accept_changes: bool = False
) -> EditResult:
    """Apply `changes` to the job; bump its revision only if something changed.

    A job changed after it was signed is refused (ChangedAfterSigningError) unless
    `accept_changes`: the operator has seen that change and stores what they mean.
    A field stored with the wrong type is dropped (it takes its default) and the edit is
    stored: that is how such a job is repaired. A dropped command, schedule or zone has no
    default, so the edit must give it.
    """
    job, dropped = store.load_job_for_repair(check_name(name))
    for e in dropped:
        if e.field in REQUIRED_FIELDS and getattr(changes, e.field) is None:
            raise e
    new_spec = validate_spec(apply_changes(job.spec, changes))
    if new_spec == job.spec and not dropped:
        return EditResult(job, changed=False)
    new = store.update_job(job, new_spec, clock.now(), accept_changes)
    return EditResult(new, True, dropped)


def set_enabled(store: Repository, name: str, enabled: bool, clock: Clock) -> EditResult:
    """Enable or disable a job."""
    if enabled:
        return edit_job(store, name, JobChanges(enabled=True), clock)
    # Disabling checks nothing else: it is how a stored definition that today's validation
    # refuses (sync names it) is taken out of every host's timers and crontab.
    job = get_job(store, name)
    if not job.spec.enabled:
        return EditResult(job, changed=False)
    spec = replace(job.spec, enabled=False)
    try:
        new = store.update_job(job, spec, clock.now())
    except ChangedAfterSigningError:
        # Taken off every host all the same, but not signed: the old signature stays, so the
        # change stays evident and a later `enable` or `edit` is refused as this one would be.
        new = store.update_job(job, spec, clock.now(), keep_seal=True)
    return EditResult(new, changed=True)


def resign_guard(allowed_signers: Path | None) -> Callable[[Job], None]:
    """Return the check run before a signed job is stored again (Repository.guard)."""
    from schedctl import signing

    def guard(job: Job) -> None:
        why = signing.unsafe_to_resign(job, allowed_signers)
        if why is not None:
            raise ChangedAfterSigningError(
                f"job {job.name!r} not stored: {why}; see what changed with `schedctl verify "
                f"{job.name}`, then re-sign it with `schedctl sign {job.name} --accept-changes` "
                f"only if the change is intended (or store the definition you mean with "
                f"`schedctl edit {job.name} --accept-changes ...`)",
                reason=why,
            )

    return guard


class SignResult(NamedTuple):
    """What `schedctl sign` signed, and what it left alone and why."""

    signed: list[Job]
    skipped: list[tuple[Job, str]]


def sign_jobs(
    store: Repository, names: list[str], clock: Clock, accept_changes: bool = False
) -> SignResult:
    """Store each named job again, signed by the store's sealer; with no names, every job.

    The revision goes up, as for any edit: the signature covers the new one. A named job
    changed after it was signed is refused (ChangedAfterSigningError) unless `accept_changes`;
    with no names such jobs are skipped, each with why.
    """
    if accept_changes and not names:
        raise ValidationError(
            "--accept-changes signs what changed after signing: name the jobs you reviewed "
            "with `schedctl verify JOB`"
        )
    now = clock.now()
    if names:
        jobs = [get_job(store, n) for n in names]
        return SignResult([store.update_job(j, j.spec, now, accept_changes) for j in jobs], [])
    signed: list[Job] = []
    skipped: list[tuple[Job, str]] = []
    for job in store.list_jobs():
        try:
            signed.append(store.update_job(job, job.spec, now))
        except ChangedAfterSigningError as e:
            skipped.append((job, f"{e.reason} (`schedctl verify {job.name}` shows it)"))
    return SignResult(signed, skipped)


class RemoveResult(NamedTuple):
    """What `remove` deleted and kept."""

    job: Job
    runs_deleted: int
    runs_kept: int


def remove_job(store: Repository, name: str, purge: bool) -> RemoveResult:
    """Delete a job; keep its history unless `purge`."""
    job = store.load_job_for_repair(check_name(name))[0]  # a malformed job can be removed
    total = store.count_runs(job.id)
    deleted = store.remove_job(job, purge)
    return RemoveResult(job, deleted, total - deleted)


MAX_NEXT_COUNT = 10_000  # about 30 years of a daily job; the search horizon ends there anyway


def next_fires(job: Job, after: datetime, count: int) -> list[datetime]:
    """Return the next `count` fire instants of `job` after `after`, in the job's zone."""
    if not 1 <= count <= MAX_NEXT_COUNT:
        raise ValidationError(f"--count must be between 1 and {MAX_NEXT_COUNT}")
    try:
        return Schedule.of(job.spec.schedule, job.spec.timezone).next_after(after, count)
    except OverflowError:
        raise ValidationError(
            f"no {count} fire times after {after.isoformat()} within the years 1 to 9999: "
            f"choose another --after or a smaller --count"
        ) from None


SAMPLE_JOB = "hello"


def ensure_sample_job(
    store: Repository, timezone: str, clock: Clock, enabled: bool = True
) -> tuple[Job, bool]:
    """Create the quickstart sample job unless it exists; return it and whether it was added."""
    try:
        return store.load_job(SAMPLE_JOB), False
    except NotFoundError:
        pass
    spec = JobSpec(
        name=SAMPLE_JOB,
        schedule="*/5 * * * *",
        timezone=timezone,
        command=("echo", "hello from schedctl"),
        description="Sample job added by `schedctl quickstart`; remove with `schedctl remove hello`",
        tags=("sample",),
        enabled=enabled,
    )
    return add_job(store, spec, clock), True


# -- schedctl run ---------------------------------------------------------------------------

DEFAULT_QUEUE_WAIT = 3600.0  # `queue` without a job timeout waits at most this long
QUEUE_POLL_SECONDS = 0.5  # how often a queued run tries the lock (and notices a signal)
FENCE_POLL_SECONDS = 0.5  # how often a fenced run looks whether the old run has ended
# A session lost between the claim and the job's start is replaced within this long: the
# slot is still worth running seconds late, and is missed rather than run much later.
REOWN_BUDGET_SECONDS = 10.0
REOWN_POLL_SECONDS = 0.5
# The clocks are compared across one round trip; one longer than this (the statement waited on
# the server) is too vague a moment to compare them at, and is read again.
SKEW_ROUND_TRIP = timedelta(seconds=1)
MAX_REOWNS = 3  # sessions lost one after another before the start: the slot is given up
# The supervisor calls the heartbeat check this often; the check itself keeps the interval.
_TICK_SECONDS = 0.05


@dataclass
class RunContext:
    """Everything `run_job` needs from outside: database, locks, time, identity, output."""

    db: RunDB
    lock_for: Callable[[Job], JobLock]
    # A new session; its argument, when given, bounds how long a full server is retried.
    reconnect: Callable[..., RunDB]
    clock: Clock
    host: str
    version: str
    spool_dir: Path
    procs_dir: Path | None  # where a running job's processes are recorded; None: not at all
    emit: Callable[..., None]  # emit(event, level=..., **fields): a log line, printed by the CLI
    error: Callable[[str], None]  # one line saying what went wrong and what to do
    base_env: Mapping[str, str]
    heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS
    grace_seconds: float = float(KILL_GRACE_SECONDS)
    cgroup: bool = True  # hold each job in a cgroup of its own where the host allows it
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    # Delivers the notifications of these runs within a small budget; never raises.
    notify: Callable[[list[int]], None] | None = None
    # This host's labels, `host=NAME` included: they decide which jobs it runs.
    labels: Mapping[str, str] = field(default_factory=dict)
    # The host's secrets directory (for file: secrets), asked only by a job that has some.
    secrets_dir: Callable[[], Path | None] = lambda: None
    # $CREDENTIALS_DIRECTORY: where systemd put the credentials of the unit that started us.
    credentials_dir: str | None = None
    # Why this host will not run a job, or what it runs when it will (trust.admit); None: no
    # checks.
    judge: Callable[[Job], Refusal | Admitted] | None = None
    # The host's clock when `run` started, before it waited for anything (a full server, a
    # commit held up): the firing's instant, from which its slot is chosen. None: read it now.
    fired_at: datetime | None = None

    @property
    def fence_seconds(self) -> float:
        """Return how long after its last heartbeat this runner has surely stopped its job."""
        return fence_seconds(self.heartbeat_seconds, self.grace_seconds)


def _status_of(outcome: RunOutcome) -> RunStatus:
    if outcome.stopped == "lock_lost":
        return RunStatus.LOCK_LOST
    if outcome.timed_out:
        return RunStatus.TIMED_OUT
    if outcome.forwarded is not None:
        return RunStatus.KILLED
    return RunStatus.SUCCEEDED if outcome.exit_code == 0 else RunStatus.FAILED


def level_of(status: RunStatus) -> str:
    """Return the log level of a run's result: a failure is an error, an overlap a warning."""
    if status is RunStatus.SUCCEEDED:
        return "info"
    return "warning" if status is RunStatus.SKIPPED_OVERLAP else "error"


class Clocks(NamedTuple):
    """The firing's instant and both clocks as `run` decides (docs/how-run-works.md, step 2)."""

    fired: datetime  # the host's clock when `run` started
    db_now: datetime  # the database's clock now
    host_now: datetime  # the host's clock now
    skew: timedelta  # host minus database, both read at the same moment


def _pick_slot(
    ctx: RunContext,
    job: Job,
    schedule: Schedule,
    clocks: Clocks,
    trigger: Trigger,
    fields: dict[str, Any],
    late: dict[str, Any],
) -> datetime | None:
    """Return the slot this firing serves (docs/how-run-works.md, step 2), or None.

    A late firing puts its lateness into `late`.
    """
    skew = clocks.skew
    daemon = trigger is Trigger.DAEMON
    # The daemon fires by the database clock; timers, cron and catch-up by the host's. The
    # slot is named by that clock at the firing's instant, not after a wait to connect.
    fired = clocks.fired - skew if daemon else clocks.fired
    pick = pick_slot(schedule, fired, clocks.db_now)
    if abs(skew) > pick.tolerance:
        ctx.emit(
            "run.clock_skew", level="warning" if pick.in_window else "error", **fields,
            skew_seconds=round(skew.total_seconds(), 3),
            tolerance_seconds=pick.tolerance.total_seconds(),
            slot=_iso(pick.slot), fired_for=_iso(pick.fired_for),
            hint="this host's clock is off the database's: fix its time sync (chrony, "
            "systemd-timesyncd)",
        )  # fmt: skip
    elif not pick.in_window and pick.fired_for is not None:
        # Not the clocks: the database answered only after the firing's slot left the window.
        ctx.emit(
            "run.held_up", level="warning", **fields, slot=_iso(pick.slot),
            fired_for=_iso(pick.fired_for),
            waited_seconds=round((clocks.host_now - clocks.fired).total_seconds(), 3),
            hint="the database answered this firing only after its slot's claim window had "
            "passed: it serves the latest slot instead",
        )  # fmt: skip
    slot = pick.slot
    if slot is None or slot < job.created_at - MAX_TOLERANCE:
        return None  # nothing scheduled since the job was defined
    # Measured on the clock that fired, as the job would start: a wait to connect is delay,
    # lateness from clock skew alone is not downtime.
    lateness = pick.lateness
    if pick.in_window:
        lateness = (clocks.db_now if daemon else clocks.host_now) - slot
    if lateness > timedelta(seconds=job.spec.jitter_seconds) + START_GRACE:
        # Said once the slot is ours (run_job), or with the skip: a host that loses the claim
        # has nothing to report.
        late["late_seconds"] = round(lateness.total_seconds(), 3)
        if job.spec.catch_up is CatchUpPolicy.SKIP:
            return None
    return slot


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def _fired_at_slot(schedule: Schedule, host_now: datetime) -> bool:
    """Return whether a slot lies on the firing the host's cron daemon made just now.

    The daemon fires by the host's clock, so the host's clock decides. A slot up to
    AT_SLOT_DELAY old still counts: cron starts jobs a second into the minute, and a busy
    host can take a while to start Python.
    """
    latest = schedule.latest_at_or_before(host_now + FIRING_EARLY)
    return latest is not None and host_now - latest <= AT_SLOT_DELAY


def _record(ctx: RunContext, run_id: int, result: RunResult, fields: dict[str, Any]) -> str:
    """Write the result; on a dead session reconnect once; failing that, spool it locally.

    Return "own" when the run's own session wrote it, "new" when it did not (that session,
    and on PostgreSQL the job's lock with it, is gone), "gone" when the run's own session finds
    its row gone: its job was removed with `--purge` meanwhile, and the result is dropped with a
    warning (a row a new session does not find is spooled like any failure). When even
    the spool fails, say so in one line: the run then ends `lost` in history, and only this
    line and the job's own exit status tell how it went.
    """
    error = ""
    for attempt in range(2):
        try:
            if attempt:
                # Whoever ends the run closes ctx.db: make it the new session, and end the
                # old one here (on PostgreSQL it may still hold the job's lock).
                dead, ctx.db = ctx.db, ctx.reconnect()
                with contextlib.suppress(Exception):
                    dead.close()
            ctx.db.finish(run_id, result, Runner(ctx.host, os.getpid()))
            return "new" if attempt else "own"
        except RunGoneError as e:
            if attempt:
                # Gone from the server this new session reached: after a failover that lost
                # the claim, the promoted server never had the row. Kept on the host, where
                # the next flush sets it aside saying so, rather than dropped.
                error = str(e)
                break
            _removed(ctx, fields, status=result.status.value, recorded=False)
            return "gone"
        except RecordRefusedError as e:
            # The session is fine; the spool keeps the result, and the next flush sets it
            # aside with a warning saying why.
            error = str(e)
            if attempt == 0:
                _spool(ctx, run_id, result, fields, error)
                return "own"
            break
        except Exception as e:  # any failure here means "not recorded yet"
            error = (str(e).splitlines() or [type(e).__name__])[0]
    _spool(ctx, run_id, result, fields, error)
    return "new"


def _removed(ctx: RunContext, fields: dict[str, Any], **more: Any) -> None:
    """Say that the run's job was removed with --purge while it ran: its result is dropped."""
    ctx.emit(
        "run.job_removed", level="warning", **fields, **more,
        hint="the job was removed with --purge during this run; the run goes on to its end "
        "and its result is not recorded",
    )  # fmt: skip


def _spool(
    ctx: RunContext, run_id: int, result: RunResult, fields: dict[str, Any], error: str
) -> None:
    status = result.status.value
    try:
        path = spool.write(ctx.spool_dir, run_id, result, Runner(ctx.host, os.getpid()))
    except spool.SpoolWriteError as e:
        code = "" if result.exit_code is None else f", exit {result.exit_code}"
        ctx.error(
            f"the result of run {run_id} of job {fields['job']} ({status}{code}) could not be "
            f"recorded: the database failed ({error}) and {e}; history will show the run as lost"
        )
        return
    ctx.emit("run.spooled", level="warning", **fields, status=status, path=str(path), error=error)


def settle_spool(db: RunDB, spool_dir: Path, emit: Callable[..., None]) -> None:
    """Write the results spooled on this host; set aside, with a warning, what never can be.

    Every command that touches the database does this first (`run`, `check` and the rest),
    and one spool file, however broken, stops none of them.
    """
    report = spool.flush(spool_dir, db)
    for bad in report.set_aside:
        emit("spool.bad_record", level="warning", path=str(bad.path), reason=bad.reason)
    if report.stored:
        emit("spool.flushed", count=report.stored)
    if report.kept:
        emit("spool.kept", level="warning", count=report.kept, error=report.error)


def run_job(
    ctx: RunContext, name: str, trigger: Trigger, manual: bool, at_slot: bool = False
) -> int:
    """Claim this slot fleet-wide, lock the job, run it with retries, record; return exit code.

    With `at_slot`, return 0 at once unless a slot falls on this firing (see _fired_at_slot).
    `ctx.db` must already be checked to have the current schema.
    """
    db = ctx.db
    settle_spool(db, ctx.spool_dir, ctx.emit)
    job = db.load_job(check_name(name))
    schedule = Schedule.of(job.spec.schedule, job.spec.timezone)
    fired = ctx.fired_at or ctx.clock.now()
    if at_slot and not _fired_at_slot(schedule, fired):
        return 0  # a superset crontab line's other instants: expected, so silent
    if isinstance(admitted := _admit(ctx, job, schedule, manual, fired), int):
        return admitted
    clocks, unregistered = _register(ctx, None if manual else SCHEDULERS.get(trigger), fired)

    def said() -> int:
        # Said once the run goes on or is skipped: a run that fails anyway (a role that may
        # write nothing) says only why it failed.
        if unregistered:
            ctx.emit("host.register_failed", level="warning", host=ctx.host, error=unregistered)
        return 0

    skew = clocks.skew.total_seconds()
    fields: dict[str, Any] = {"job": job.name, "host": ctx.host}
    if not job.spec.enabled and not manual:
        ctx.emit("run.skipped.disabled", **fields)
        return said()
    if not selector_of(job.spec.placement).matches(ctx.labels):
        if not manual:
            # A timer or crontab line left over from before the job moved: not this host's.
            ctx.emit("run.skipped.not_placed", **fields, on=job.spec.placement)
            return said()
        # By hand, an operator means it: run, and say that the job is placed elsewhere.
        ctx.emit(
            "run.not_placed", level="warning", **fields, on=job.spec.placement,
            hint="this host's labels do not match the job's --on; it runs because of --now",
        )  # fmt: skip
    # Before the claim: through a transaction pooler the lock would not be ours to hold.
    db.require_own_session()
    late: dict[str, Any] = {}
    slot = None if manual else _pick_slot(ctx, job, schedule, clocks, trigger, fields, late)
    if slot is None and not manual:
        _not_due(ctx, job, schedule, clocks.db_now, {**fields, **late})
        return said()
    fields["slot"] = slot.isoformat() if slot else None

    def claim(attempt: int) -> int | None:
        return ctx.db.claim(
            Claim(job, slot, Trigger.MANUAL if manual else trigger, attempt, ctx.host,
                  os.getpid(), clocks.db_now if attempt == 1 else ctx.db.now(), skew, ctx.version,
                  ctx.fence_seconds)
        )  # fmt: skip

    lock = ctx.lock_for(job)
    lock.prepare()  # a lock file that is not safe is refused before the slot is taken
    # Only a slot from before the job was (re)defined can have run under an earlier job of
    # the same name; checking just then keeps the common claim to one round trip.
    ran = slot is not None and slot < job.created_at and ctx.db.ran_before_readded(job.name, slot)
    run_id = None if ran else claim(1)
    if run_id is None:
        lock.release()
        ctx.emit("run.skipped.duplicate", **fields)
        return said()
    fields["run_id"] = run_id
    ctx.emit("run.claimed", **fields, clock_skew_seconds=round(skew, 3))
    said()
    if late:
        # Started well after its time (the host was down or busy): a person may want to know.
        ctx.emit("run.late", level="warning", **fields, **late, catch_up=job.spec.catch_up.value)
    run_ids = [run_id]
    held = [lock]
    try:
        code = _settle_and_lock(ctx, job, held, run_id, fields)
        if code is None:
            code = _attempts(ctx, job, slot, run_id, claim, fields, run_ids, admitted)
    finally:
        held[-1].release()
    if job.spec.notify and ctx.notify is not None:
        # After the lock is free and the result recorded; what this leaves undelivered the
        # minutely `schedctl notify` sends.
        ctx.notify(run_ids)
    return code


def _admit(
    ctx: RunContext, job: Job, schedule: Schedule, manual: bool, fired: datetime
) -> int | Admitted | None:
    """Return the exit code of this host's refusal of the job, else what it runs (or None).

    Judged before anything else about the job is believed: its user, its placement and its
    enabled flag are all part of what was signed.
    """
    admitted = None
    if ctx.judge is not None:
        from schedctl.trust import Refusal  # loaded already by whoever made the judge

        found = ctx.judge(job)
        if isinstance(found, Refusal):
            return _refuse(ctx, job, schedule, manual, found, fired)
        admitted = found
    _check_user(job)
    return admitted


def _refuse(
    ctx: RunContext, job: Job, schedule: Schedule, manual: bool, refusal: Refusal, fired: datetime
) -> int:
    """Record that this host refuses the job, say what to do, and return the refusal's code.

    The slot is not claimed: a host whose allowed-signers file is stale must not keep hosts
    that trust the definition from running it.
    """
    from schedctl.trust import fix_for

    slot = None if manual else schedule.latest_at_or_before(fired)
    recorded: str | None = None
    try:
        ctx.db.record_refusal(job, ctx.host, refusal, slot)
    except DatabaseUnavailableError:
        raise
    except Exception as e:  # the refusal stands; the line below still says it
        recorded = (str(e).splitlines() or [type(e).__name__])[0]
    ctx.emit(
        refusal.event, level="error", job=job.name, host=ctx.host, slot=_iso(slot),
        revision=job.revision, reason=refusal.reason, hint=f"not run: {fix_for(refusal.kind, job.name)}",
        **({"record_error": recorded} if recorded else {}),
    )  # fmt: skip
    return int(ExitCode.REFUSED)


# What each trigger says about how the host schedules; a manual run or catch-up says nothing.
SCHEDULERS = {Trigger.TIMER: "systemd", Trigger.CRON: "cron", Trigger.DAEMON: "daemon"}


def _register(ctx: RunContext, scheduler: str | None, fired: datetime) -> tuple[Clocks, str]:
    """Record this host as seen; return the clocks and why the record failed, if it did.

    The upsert reads the database clock itself, so on PostgreSQL it costs `run` no round trip
    over reading the clock alone. A database that is down ends the run as before (fail
    closed); any other failure (a role without write access to `hosts`) is said and the job
    runs anyway.
    """
    why = ""
    before = ctx.clock.now()
    try:
        db_now = ctx.db.register_host(ctx.host, ctx.labels, ctx.version, scheduler)
    except DatabaseUnavailableError:
        raise
    except Exception as e:
        why = (str(e).splitlines() or [type(e).__name__])[0]
        before = ctx.clock.now()
        db_now = ctx.db.now()
    after = ctx.clock.now()
    if ctx.db.backend != "postgresql":
        return Clocks(fired, db_now, db_now, timedelta(0)), why  # SQLite's clock is the host's
    if after - before > SKEW_ROUND_TRIP:
        # Held up (a commit waiting for a standby, a row lock): the server read its clock
        # somewhere in that wait. Compare the clocks again, on a quick round trip.
        before = ctx.clock.now()
        db_now = ctx.db.now()
        after = ctx.clock.now()
    return Clocks(fired, db_now, after, before + (after - before) / 2 - db_now), why


def _not_due(
    ctx: RunContext, job: Job, schedule: Schedule, db_now: datetime, fields: dict[str, Any]
) -> None:
    """Say that no slot is due, and when the next one is (the CLI words it for a person)."""
    upcoming = schedule.next_after(db_now)
    ctx.emit(
        "run.skipped.no_slot", **fields, db_now=db_now.isoformat(),
        next_slot=upcoming[0].isoformat() if upcoming else None, timezone=job.spec.timezone,
    )  # fmt: skip


def _check_user(job: Job) -> None:
    user = job.spec.run_as_user
    if user and os.geteuid() != 0 and pwd.getpwuid(os.geteuid()).pw_name != user:
        who = "root" if user == "root" else f"root or as {user}"
        raise ConfigError(f"job {job.name!r} runs as user {user!r}: start `schedctl run` as {who}")
    if user and os.geteuid() == 0:
        try:
            pwd.getpwnam(user)
        except KeyError:
            raise ConfigError(
                f"job {job.name!r} runs as user {user!r}, who does not exist on this host: "
                f"create the user or change the job's --user"
            ) from None


class SlotNotRunError(DatabaseUnavailableError):
    """The session was lost after the claim and before the job started: the job did not run."""


def _settle_and_lock(
    ctx: RunContext, job: Job, held: list[JobLock], run_id: int, fields: dict[str, Any]
) -> int | None:
    """Settle dead runners' rows, then take the lock and the fence, on a session that lives.

    A session lost on the way (the server ended it, a statement_timeout, a restart) had not
    started the job: the row is taken back on a new session within REOWN_BUDGET_SECONDS and
    the lock taken on that one (its successor lock goes to `held`), so the claimed slot still
    runs. When that cannot be done, SlotNotRunError says the job did not run. Return as
    _take_lock does.
    """
    for replaced in range(MAX_REOWNS + 1):
        owner = ctx.db.backend_pid()
        try:
            # Only the owner of the slot settles dead runners' rows: a racer that lost the
            # claim exits at once (at the top of the hour, every round trip before the exit is
            # paid per host).
            ctx.db.reconcile_lost(ctx.host)
            return _take_lock(ctx, job, held[-1], run_id, fields)
        except DatabaseUnavailableError as e:
            with contextlib.suppress(Exception):
                held[-1].release()  # on PostgreSQL it went with the session anyway
            if replaced == MAX_REOWNS:
                # A session that keeps failing here (a statement_timeout too short for the
                # wait) gets no more tries: the row says the job did not start.
                why = (str(e).splitlines() or [type(e).__name__])[0]
                _abandon(ctx, run_id, owner)
                raise _not_run(run_id, fields, why, "so were the sessions replacing it") from None
            _reown(ctx, run_id, owner, ctx.monotonic() + REOWN_BUDGET_SECONDS, fields, e)
            held.append(ctx.lock_for(job))
            held[-1].prepare()
    raise AssertionError("unreachable")


def _abandon(ctx: RunContext, run_id: int, owner: int | None) -> None:
    """Mark the unstarted run lost with no start, on a new session if need be; never raise."""
    with contextlib.suppress(Exception):
        dead, ctx.db = ctx.db, ctx.reconnect()
        with contextlib.suppress(Exception):
            dead.close()
        ctx.db.abandon(run_id, owner)


def _reown(
    ctx: RunContext,
    run_id: int,
    owner: int | None,
    deadline: float,
    fields: dict[str, Any],
    lost: DatabaseUnavailableError,
) -> None:
    """Replace the lost session and take the unstarted run's row back on the new one.

    Raise SlotNotRunError when no session comes back before `deadline`, or another host has
    marked the row lost meanwhile (its session was gone): either way the job never started
    and the row ends `lost` with no start, which `history --missed`, `report` and `check`
    count as a missed slot.
    """
    why = (str(lost).splitlines() or [type(lost).__name__])[0]
    while True:
        try:
            fresh = ctx.reconnect(max(0.0, deadline - ctx.monotonic()))
            break
        except DatabaseUnavailableError as e:
            why = (str(e).splitlines() or [type(e).__name__])[0]
            if ctx.monotonic() >= deadline:
                raise _not_run(run_id, fields, why, "no new session came back") from None
            ctx.sleep(REOWN_POLL_SECONDS)
    dead, ctx.db = ctx.db, fresh
    with contextlib.suppress(Exception):
        dead.close()  # a session that is still alive (a cancelled statement) ends here
    try:
        ours = ctx.db.reown(run_id, owner)
    except DatabaseUnavailableError as e:
        why = (str(e).splitlines() or [type(e).__name__])[0]
        raise _not_run(run_id, fields, why, "the new session failed too") from None
    if not ours:
        raise _not_run(run_id, fields, why, "another host marked the run lost meanwhile")
    ctx.emit("run.session_replaced", level="warning", **fields, error=why)


def _not_run(run_id: int, fields: dict[str, Any], why: str, then: str) -> SlotNotRunError:
    what = f"slot {fields['slot']}" if fields.get("slot") else "this manual run"
    return SlotNotRunError(
        f"the database session was lost after run {run_id} of job {fields['job']} claimed "
        f"{what} and before the job started ({why}), and {then}: the job did not run, and "
        f"the run is recorded lost with no start (a missed slot); check the server and run "
        f"`schedctl run {fields['job']} --now` if it must run"
    )


def _take_lock(
    ctx: RunContext, job: Job, lock: JobLock, run_id: int, fields: dict[str, Any]
) -> int | None:
    """Take the job's lock under its concurrency policy, then the fence.

    Return None to go on and run the job, or the exit code to end with instead.
    """
    if not lock.try_acquire():
        policy = job.spec.concurrency
        ctx.emit("run.lock.busy", level="warning", **fields, policy=policy.value)
        if policy is ConcurrencyPolicy.ALLOW:
            return None  # beside the holder, as the policy says: nothing to fence either
        acquired = False
        if policy is ConcurrencyPolicy.QUEUE:
            deadline = ctx.monotonic() + float(job.spec.timeout_seconds or DEFAULT_QUEUE_WAIT)

            def queued() -> bool | None:
                if lock.try_acquire():
                    return True
                return False if ctx.monotonic() >= deadline else None

            acquired, signum = _wait(ctx, run_id, queued, QUEUE_POLL_SECONDS)
            if signum is not None:
                return _killed_waiting(ctx, run_id, signum, fields)
        if not acquired:
            now = ctx.db.now()
            skipped = RunResult(
                RunStatus.SKIPPED_OVERLAP, None, None, None, now, None, "", 0, False
            )
            _record(ctx, run_id, skipped, fields)
            return 0
    return _fence(ctx, job, run_id, fields)


def _fence(ctx: RunContext, job: Job, run_id: int, fields: dict[str, Any]) -> int | None:
    """Hold off until every other runner that started the job has surely stopped it.

    A runner whose session ended (a restarted server) lost its lock at once, but stops its
    job only once a heartbeat fails, then grants it a grace period: its row says by when,
    counted from its last heartbeat by the database clock. A row it finished itself ends the
    wait earlier.
    """
    left = ctx.db.fence_left(job.id, run_id)
    if left is None or left <= 0:
        return None
    ctx.emit("run.fence.wait", level="warning", **fields, seconds=round(left, 1))

    def fenced() -> bool | None:
        remaining = ctx.db.fence_left(job.id, run_id)
        return True if remaining is None or remaining <= 0 else None

    _, signum = _wait(ctx, run_id, fenced, FENCE_POLL_SECONDS)
    if signum is not None:
        return _killed_waiting(ctx, run_id, signum, fields)
    ctx.db.reconcile_lost(ctx.host)  # a runner that never came back is `lost` from now on
    return None


def _wait(
    ctx: RunContext, run_id: int, step: Callable[[], bool | None], poll: float
) -> tuple[bool, int | None]:
    """Call `step` every `poll` s until it answers True or False, heartbeating meanwhile.

    Return (answer, None), or (False, signal) when SIGTERM, SIGINT or SIGHUP ended the wait:
    a waiting run has nothing to pass the signal on to, so it stops waiting instead.
    """
    import signal

    got: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        got.append(signum)

    stops = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {s: signal.signal(s, on_signal) for s in stops}
    reply = heartbeat_reply_seconds(ctx.heartbeat_seconds)
    try:
        next_beat = ctx.monotonic() + ctx.heartbeat_seconds
        while not got:
            ctx.sleep(poll)
            if got:
                break
            if ctx.monotonic() >= next_beat:
                # A waiting run is alive too: `check` must not take it for a stuck one.
                next_beat = ctx.monotonic() + ctx.heartbeat_seconds
                ctx.db.heartbeat(run_id, timeout=reply)
            answer = step()
            if answer is not None and not got:
                return answer, None
        return False, got[0]
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _killed_waiting(ctx: RunContext, run_id: int, signum: int, fields: dict[str, Any]) -> int:
    """Record a run stopped by a signal before its command started; return 128 + signal."""
    code = 128 + signum
    killed = RunResult(
        RunStatus.KILLED, code, None, None, _now_or(ctx, ctx.clock.now()), None, "", 0, False
    )
    ctx.emit("run.finished", level="error", **fields, status=killed.status.value, exit_code=code,
             started=False)  # fmt: skip
    _record(ctx, run_id, killed, fields)
    return code


def _attempts(
    ctx: RunContext,
    job: Job,
    slot: datetime | None,
    run_id: int,
    claim: Callable[[int], int | None],
    fields: dict[str, Any],
    run_ids: list[int],
    admitted: Admitted | None = None,
) -> int:
    # Imported only by a run that won its claim: subprocess and its imports cost every racer
    # that lost ~5 ms of CPU, and at the top of the hour those racers share the host's cores.
    from schedctl.hostsecrets import mask, maskables, secret_values
    from schedctl.runner import RunRequest, identity

    spec = job.spec
    secrets = _secrets(ctx, job, run_id, fields)
    if secrets is None:
        return int(ExitCode.SECRET)
    procs_dir = _stop_leftovers(ctx, job, fields)
    argv = ["/bin/sh", "-c", spec.command[0]] if spec.shell else list(spec.command)
    executable = None
    if admitted is not None and admitted.executable is not None:
        # The host checked this file against its COMMAND_DIRS: start it, with no PATH lookup
        # (or shell) that could find another; a checked shell command is plain words.
        argv, executable = list(admitted.argv or argv), admitted.executable
    env = inherited_env(ctx.base_env)
    # Root starts the job as its user; the environment then says who it is, as systemd's
    # User= and cron do, unless the job's own --env says otherwise.
    user = spec.run_as_user if os.geteuid() == 0 else None
    cwd = spec.workdir
    if user:
        who = identity(user)
        env.update(HOME=who.home, USER=who.name, LOGNAME=who.name, SHELL=who.shell)
        if cwd is None:
            cwd = who.home if os.path.isdir(who.home) else "/"
    env.update(spec.env)
    env.update(secrets)
    hide = maskables([*secrets.values(), *secret_values(dict(spec.env), spec.secret_env)])
    attempt, exit_code = 1, 0
    # Marks this run's processes for the next run to find should this runner be killed. Job
    # and run id alone are not unique on a host: another user's or another database's job of
    # the same name and run id would match, and its processes would be stopped.
    token = os.urandom(8).hex()
    while True:
        env.update(
            SCHEDCTL_JOB=job.name,
            SCHEDCTL_RUN_ID=str(run_id),
            SCHEDCTL_SLOT=slot.isoformat() if slot else "",
            SCHEDCTL_RUN_TOKEN=token,
        )
        request = RunRequest(
            argv, env, cwd=cwd, timeout=spec.timeout_seconds,
            output_limit=spec.output_limit_bytes, grace=ctx.grace_seconds, user=user,
            cgroup=ctx.cgroup, executable=executable,
        )  # fmt: skip
        record = _record_for(ctx, procs_dir, job, run_id, token, fields)
        result, exit_code = _run_once(ctx, request, run_id, {**fields, "attempt": attempt}, record)
        if hide:
            # Before it is stored or notified: the job's output may show a secret it was given.
            result = result._replace(output_tail=mask(result.output_tail or "", hide))
        recorded = _record(ctx, run_id, result, fields)
        retryable = result.status in (RunStatus.FAILED, RunStatus.TIMED_OUT)
        if not retryable or attempt > spec.retries or recorded == "gone":
            return exit_code
        if recorded == "new" and ctx.db.backend == "postgresql":
            # The lock lived on the session that is gone: another host may hold it by now.
            ctx.emit("run.retry.abandoned", level="warning", **fields, attempt=attempt,
                     reason="session lost")  # fmt: skip
            return exit_code
        ctx.sleep(spec.retry_delay_seconds * 2 ** (attempt - 1))
        attempt += 1
        next_id = claim(attempt)
        assert next_id is not None  # only attempt 1 can conflict
        run_id = next_id
        run_ids.append(run_id)
        fields = {**fields, "run_id": run_id}


def _secrets(
    ctx: RunContext, job: Job, run_id: int, fields: dict[str, Any]
) -> dict[str, str] | None:
    """Return the job's secret values; None once a missing one is said and recorded.

    Fail closed: without one of its secrets the job is not started, and the run is recorded
    failed with the reason as its output (`schedctl logs`).
    """
    if not job.spec.secrets:
        return {}
    from schedctl.hostsecrets import resolve

    files = any(ref.startswith("file:") for _, ref in job.spec.secrets)
    try:
        values = resolve(
            job.spec.secrets, ctx.secrets_dir() if files else None, ctx.credentials_dir
        )
    except SecretUnavailableError as e:
        why = str(e)
        ctx.error(why)
        code = int(ExitCode.SECRET)
        ctx.emit("run.finished", level="error", **fields, status="failed", exit_code=code,
                 started=False, reason="secret unavailable")  # fmt: skip
        now = _now_or(ctx, ctx.clock.now())
        text = f"schedctl: {why}\n"
        failed = RunResult(RunStatus.FAILED, code, None, None, now, None, text, len(text), False)
        _record(ctx, run_id, failed, fields)
        return None
    # Nothing schedctl prints may show them either (an error line, a --debug traceback).
    redact.remember(*values.values())
    return values


def _stop_leftovers(ctx: RunContext, job: Job, fields: dict[str, Any]) -> Path | None:
    """Stop what runners of this job that were killed left running; return the record dir.

    Runs once the lock is ours and before the job starts, so the job never overlaps itself
    on this host even after a `kill -9` of its runner.
    """
    from schedctl.proctree import record_dir, stop_leftovers

    if ctx.procs_dir is None:
        return None
    try:
        directory = record_dir(ctx.procs_dir)
    except OSError as e:
        ctx.emit("run.procs_unrecorded", level="warning", **fields, error=str(e))
        return None
    left = stop_leftovers(directory, job.id, ctx.grace_seconds)
    if left.runs:
        ctx.emit(
            "run.leftovers_stopped", level="warning", **fields, runs=",".join(map(str, left.runs)),
            processes=left.stopped, survivors=left.survivors,
        )  # fmt: skip
    return directory


def _record_for(
    ctx: RunContext,
    directory: Path | None,
    job: Job,
    run_id: int,
    token: str,
    fields: dict[str, Any],
) -> ProcRecord | None:
    """Start the record of this run's processes; None (and say so) where it cannot be kept."""
    from schedctl.proctree import ProcRecord, record_path

    if directory is None:
        return None
    record = ProcRecord(record_path(directory, job.id, run_id), job.name, run_id, token)
    try:
        record.write(())
    except OSError as e:
        ctx.emit("run.procs_unrecorded", level="warning", **fields, error=e.strerror or str(e))
        return None
    return record


def _run_once(
    ctx: RunContext,
    request: RunRequest,
    run_id: int,
    fields: dict[str, Any],
    record: ProcRecord | None = None,
) -> tuple[RunResult, int]:
    from schedctl.runner import CannotStart, Supervisor

    interval = ctx.heartbeat_seconds
    reply = heartbeat_reply_seconds(interval)
    sent = ctx.monotonic()
    owner = ctx.db.backend_pid()
    try:
        # Also the first heartbeat, stamped by the database after `sent`: the fence counts
        # from it.
        started = ctx.db.mark_started(run_id)
    except DatabaseUnavailableError as e:
        # The lock went with the session: the job may not start. Say so on the row, on a new
        # session if one comes, so the slot counts as missed instead of ran.
        why = (str(e).splitlines() or [type(e).__name__])[0]
        if record is not None:
            record.remove()  # nothing started: nothing for the next run to stop
        _abandon(ctx, run_id, owner)
        raise _not_run(run_id, fields, why, "its lock went with it") from None
    ctx.emit("run.started", **fields, command=request.argv[0])
    supervisor = Supervisor(request, record=record)
    next_beat = sent + interval
    lost = removed = False

    def heartbeat() -> None:
        # Called every few hundredths of a second; keeps the interval itself, so that the job
        # is stopped no later than the fence promises after the last heartbeat that got through.
        nonlocal next_beat, lost, removed
        now = ctx.monotonic()
        if lost or now < next_beat:
            return
        next_beat = now + interval
        try:
            there = ctx.db.heartbeat(run_id, timeout=reply)
        except Exception:  # a dead or silent session means the lock is gone
            lost = True
            ctx.emit("run.lock_lost", level="warning", **fields)
            supervisor.stop("lock_lost")
            return
        if not there and not removed:
            removed = True  # said once; the lock is still held on this live session
            _removed(ctx, fields)

    try:
        outcome = supervisor.run(tick=heartbeat, tick_interval=_TICK_SECONDS)
    except CannotStart as e:
        # Could not start it at all: report like a shell does (127 missing, 126 not executable).
        if e.workdir is not None:
            # The command may well be there: it is the directory it should start in that is
            # not, and saying the command is missing would send the operator the wrong way.
            code = 126
            message = (
                f"schedctl: cannot enter the working directory {e.workdir} to run "
                f"{request.argv[0]}: {e.error.strerror}\n"
            )
        else:
            code = 127 if isinstance(e.error, FileNotFoundError) else 126
            message = f"schedctl: cannot execute {request.argv[0]}: {e.error.strerror}\n"
        finished = _now_or(ctx, started)
        ctx.emit("run.finished", level="error", **fields, status="failed", exit_code=code)
        return RunResult(
            RunStatus.FAILED, code, None, started, finished, 0.0, message, len(message), False
        ), code
    if outcome.survivors:
        ctx.emit("run.processes_survived", level="warning", **fields, count=outcome.survivors)
    status = _status_of(outcome)
    finished = _now_or(ctx, started + timedelta(seconds=outcome.duration))
    ctx.emit(
        "run.finished", level=level_of(status), **fields, status=status.value,
        exit_code=outcome.exit_code,
        duration_seconds=round(outcome.duration, 3),
    )  # fmt: skip
    result = RunResult(
        status, outcome.exit_code, outcome.signal, started, finished, outcome.duration,
        outcome.tail, outcome.total_bytes, outcome.truncated,
    )  # fmt: skip
    return result, outcome.exit_code


def _now_or(ctx: RunContext, fallback: datetime) -> datetime:
    """Return the database clock, or `fallback` when the database is unreachable."""
    try:
        return ctx.db.now()
    except Exception:  # the result is spooled later; any time will do
        return fallback
