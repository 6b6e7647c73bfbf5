"""Use cases: what each command does, independent of how it is printed."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from schedctl.clock import Clock
from schedctl.errors import NotFoundError, ValidationError
from schedctl.models import Job, JobChanges, JobSpec
from schedctl.schedule import Schedule
from schedctl.validate import check_name, validate_spec

if TYPE_CHECKING:
    from schedctl.store.repo import Store

T = TypeVar("T")


def add_job(store: Store, spec: JobSpec, clock: Clock) -> Job:
    """Validate and store a new job."""
    return store.add_job(validate_spec(spec), clock.now())


def get_job(store: Store, name: str) -> Job:
    """Return the job called `name`."""
    return store.get_job(check_name(name))


def list_jobs(store: Store, tag: str | None = None) -> list[Job]:
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
    )


def pick(new: T | None, old: T) -> T:
    """Return `new` unless it is None."""
    return old if new is None else new


@dataclass(frozen=True)
class EditResult:
    """A job after an edit, and whether anything changed."""

    job: Job
    changed: bool


def edit_job(store: Store, name: str, changes: JobChanges, clock: Clock) -> EditResult:
    """Apply `changes` to the job; bump its revision only if something changed."""
    job = get_job(store, name)
    new_spec = validate_spec(apply_changes(job.spec, changes))
    if new_spec == job.spec:
        return EditResult(job, changed=False)
    return EditResult(store.update_job(job, new_spec, clock.now()), changed=True)


def set_enabled(store: Store, name: str, enabled: bool, clock: Clock) -> EditResult:
    """Enable or disable a job."""
    return edit_job(store, name, JobChanges(enabled=enabled), clock)


@dataclass(frozen=True)
class RemoveResult:
    """What `remove` deleted and kept."""

    job: Job
    runs_deleted: int
    runs_kept: int


def remove_job(store: Store, name: str, purge: bool) -> RemoveResult:
    """Delete a job; keep its history unless `purge`."""
    job = get_job(store, name)
    total = store.count_runs(job.id)
    deleted = store.remove_job(job, purge)
    return RemoveResult(job, deleted, total - deleted)


def next_fires(job: Job, after: datetime, count: int) -> list[datetime]:
    """Return the next `count` fire instants of `job` after `after`, in the job's zone."""
    if count < 1:
        raise ValidationError("--count must be at least 1")
    return Schedule.of(job.spec.schedule, job.spec.timezone).next_after(after, count)


SAMPLE_JOB = "hello"


def ensure_sample_job(store: Store, timezone: str, clock: Clock) -> tuple[Job, bool]:
    """Create the quickstart sample job unless it exists; return it and whether it was added."""
    try:
        return store.get_job(SAMPLE_JOB), False
    except NotFoundError:
        pass
    spec = JobSpec(
        name=SAMPLE_JOB,
        schedule="*/5 * * * *",
        timezone=timezone,
        command=("echo", "hello from schedctl"),
        description="Sample job added by `schedctl quickstart`; remove with `schedctl remove hello`",
        tags=("sample",),
    )
    return add_job(store, spec, clock), True
