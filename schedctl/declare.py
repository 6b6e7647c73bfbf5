"""Use cases of `export` and `apply`: job definitions as a file, and the plan that applies one."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from schedctl import jobfile
from schedctl.clock import Clock
from schedctl.errors import ValidationError
from schedctl.jobfile import Entry, FileError
from schedctl.models import Job, JobSpec, mask_target
from schedctl.validate import check_name, validate_spec

if TYPE_CHECKING:
    from schedctl.db.repository import Repository


def export(store: Repository, names: list[str], secrets: bool = False) -> tuple[str, bool]:
    """Return the file text of the named jobs (all when none), and whether it holds secrets."""
    jobs = store.list_jobs()
    if names:
        by_name = {j.name: j for j in jobs}
        for name in names:
            if check_name(name) not in by_name:
                store.load_job(name)  # raises NotFoundError with the usual hint
        jobs = [by_name[n] for n in dict.fromkeys(names)]
    specs = [j.spec for j in jobs]
    return jobfile.render(specs, secrets), secrets and jobfile.has_secrets(specs)


@dataclass(frozen=True)
class Step:
    """What applying the file does to one job."""

    action: str  # create, change, unchanged, remove, keep
    name: str
    job: Job | None = None  # as stored when the plan was read
    spec: JobSpec | None = None  # as the file defines it, validated
    changes: tuple[tuple[str, str, str], ...] = ()  # (key, old, new) as the file writes them


@dataclass(frozen=True)
class Plan:
    """Every job's step, in the file's order, then the jobs the file does not name."""

    steps: tuple[Step, ...]

    def count(self, action: str) -> int:
        """Return how many steps take `action`."""
        return sum(1 for s in self.steps if s.action == action)


def _unmask(entry: Entry, job: Job | None, source: str) -> JobSpec:
    """Put the stored webhook URLs and secret values back where the file has placeholders."""
    spec = _unmask_env(entry, job, source)
    if not entry.masked:
        return spec
    stored = list(job.spec.notify) if job else []
    targets = []
    for target in entry.spec.notify:
        if target not in entry.masked:
            targets.append(target)
            continue
        match = next((t for t in stored if mask_target(t) == target), None)
        if match is None:
            line = entry.lines.get("notify", entry.line)
            raise FileError(
                f"{source}:{line}: notify: {target} is a placeholder for a webhook URL and job "
                f"{entry.spec.name!r} has no stored webhook it stands for: give the full URL"
            )
        stored.remove(match)
        targets.append(match)
    return replace(spec, notify=tuple(targets))


def _unmask_env(entry: Entry, job: Job | None, source: str) -> JobSpec:
    """Put the stored value back for each secret-env entry the file gives as ***."""
    if not entry.kept:
        return entry.spec
    stored = dict(job.spec.env) if job else {}
    env = dict(entry.spec.env)
    for key in entry.kept:
        if job is None or key not in job.spec.secret_env or key not in stored:
            line = entry.lines.get("secret-env", entry.line)
            raise FileError(
                f'{source}:{line}: secret-env: {key} = "***" is export\'s placeholder and job '
                f"{entry.spec.name!r} has no stored secret value {key} it stands for: give the "
                f"value (`schedctl export --with-secrets` writes them)"
            )
        env[key] = stored[key]
    return replace(entry.spec, env=tuple(sorted(env.items())))


def plan(store: Repository, entries: list[Entry], source: str, prune: bool) -> Plan:
    """Compare the file's jobs with the stored ones; raise FileError on any invalid job.

    A malformed stored job raises MalformedJobError: what the file would change is unknown.
    """
    stored = {j.name: j for j in store.list_jobs(skip_malformed=False)}
    steps = []
    for entry in entries:
        job = stored.get(entry.spec.name)
        spec = _unmask(entry, job, source)
        try:
            spec = validate_spec(spec)
        except ValidationError as e:
            key = jobfile.field_of(spec)
            line = jobfile.line_of(spec, key, entry.lines, entry.line)
            raise FileError(f"{source}:{line}: {key}: {e}") from None
        if job is None:
            steps.append(Step("create", spec.name, None, spec, _created(spec)))
        elif spec == job.spec:
            steps.append(Step("unchanged", spec.name, job, spec))
        else:
            diff = tuple(jobfile.differences(job.spec, spec))
            steps.append(Step("change", spec.name, job, spec, diff))
    named = {e.spec.name for e in entries}
    for name, job in sorted(stored.items()):
        if name not in named:
            steps.append(Step("remove" if prune else "keep", name, job))
    return Plan(tuple(steps))


def _created(spec: JobSpec) -> tuple[tuple[str, str, str], ...]:
    shown = jobfile.fields(spec)
    return tuple((k, "-", jobfile.shown(v)) for k, v in shown.items() if k != "name")


def apply(store: Repository, the_plan: Plan, clock: Clock) -> None:
    """Store the plan in one transaction; ConflictError if a job changed since it was read."""
    creates = [s.spec for s in the_plan.steps if s.action == "create" and s.spec]
    updates = [(s.job, s.spec) for s in the_plan.steps if s.action == "change" and s.job and s.spec]
    removes = [s.job for s in the_plan.steps if s.action == "remove" and s.job]
    if creates or updates or removes:
        store.apply_jobs(creates, updates, removes, clock.now())
