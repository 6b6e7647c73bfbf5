"""What `schedctl check` reads, on the run path's plain drivers (no SQLAlchemy to import).

Monitoring runs `check` every minute on every host; it must start and answer fast.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any, NamedTuple

from schedctl.db.rundb import RunDB, as_time, time_param
from schedctl.history import JobChange, Run
from schedctl.models import Job, JobSpec

_RUN_COLUMNS = (
    "id", "job_id", "job_name", "slot", "trigger", "attempt", "status", "host", "pid",
    "claimed_at", "started_at", "finished_at", "exit_code", "signal", "duration_seconds",
    "output_bytes", "output_truncated", "clock_skew_seconds",
)  # fmt: skip
_TIMES = ("slot", "claimed_at", "started_at", "finished_at")
# Fewer finished runs say little about how long the job usually takes.
MIN_SAMPLES = 5


class CheckData(NamedTuple):
    """Everything `check` judges, read in a handful of queries."""

    jobs: list[Job]
    changes: dict[int, list[JobChange]]
    pruned_before: dict[int, datetime]
    last: dict[int, Run]
    running: dict[int, Run]
    heartbeats: dict[int, datetime | None]
    p95: dict[int, float]


def _judged_job(row: tuple[Any, ...]) -> Job:
    """Build a job from the fields `check` judges by.

    Its command, environment and other settings are left at their defaults: decoding them
    for a thousand jobs was a tenth of `check`'s time, and nothing here runs or shows them.
    """
    job_id, name, schedule, zone, timeout, jitter, enabled, created, updated, revision = row
    spec = JobSpec(name=name, schedule=schedule, timezone=zone, command=(),
                   timeout_seconds=timeout, jitter_seconds=jitter, enabled=bool(enabled))  # fmt: skip
    created_at, updated_at = as_time(created), as_time(updated)
    assert created_at is not None and updated_at is not None
    return Job(job_id, spec, revision, created_at, updated_at)


def _run(row: tuple[Any, ...]) -> Run:
    values = dict(zip(_RUN_COLUMNS, row, strict=True))
    for col in _TIMES:
        values[col] = as_time(values[col])
    values["output_truncated"] = bool(values["output_truncated"])
    return Run(**values)


def read(db: RunDB, names: list[str] | None, p95_since: datetime) -> CheckData:
    """Read the jobs (all, or `names`) and the history facts `check` needs."""
    jobs = [_judged_job(row) for row in db.select(
        "SELECT id, name, schedule, timezone, timeout_seconds, jitter_seconds, enabled,"
        " created_at, updated_at, revision FROM jobs ORDER BY name"
    )]  # fmt: skip
    if names is not None:
        jobs = [j for j in jobs if j.name in names]
    changes: dict[int, list[JobChange]] = defaultdict(list)
    for job_id, at, enabled, schedule, zone in db.select(
        "SELECT job_id, at, enabled, schedule, timezone FROM job_changes ORDER BY job_id, at"
    ):
        when = as_time(at)
        assert when is not None
        changes[job_id].append(JobChange(when, bool(enabled), schedule, zone))
    marks = {}
    for job_id, at in db.select("SELECT job_id, pruned_before FROM prune_marks"):
        when = as_time(at)
        assert when is not None
        marks[job_id] = when

    # Each job's newest run, in one round trip: an index probe per job on (job_id, id).
    cols = ", ".join(f"r.{c}" for c in _RUN_COLUMNS)
    sql = (
        f"SELECT {cols} FROM jobs j CROSS JOIN LATERAL (SELECT * FROM runs WHERE job_id = j.id"
        " ORDER BY id DESC LIMIT 1) r"
        if db.backend == "postgresql"
        else f"SELECT {cols} FROM runs r WHERE r.id IN (SELECT (SELECT id FROM runs x"
        " WHERE x.job_id = j.id ORDER BY id DESC LIMIT 1) FROM jobs j)"
    )
    last = {run.job_id: run for run in map(_run, db.select(sql)) if run.job_id is not None}
    running_rows = db.select(
        f"SELECT {', '.join(_RUN_COLUMNS)}, heartbeat_at FROM runs WHERE status = 'running' "
        "ORDER BY id"
    )
    running: dict[int, Run] = {}
    beats: dict[int, datetime | None] = {}
    for row in running_rows:
        run = _run(row[:-1])
        if run.job_id is not None:
            running[run.job_id] = run
            beats[run.id] = as_time(row[-1])
    return CheckData(jobs, changes, marks, last, running, beats, _p95(db, running, p95_since))


def _p95(db: RunDB, running: dict[int, Run], since: datetime) -> dict[int, float]:
    """Return the p95 duration of the jobs that are running now (what "too long" compares to)."""
    if not running:
        return {}
    if db.backend == "postgresql":
        rows = db.select(
            "SELECT job_id, percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_seconds),"
            " count(*) FROM runs WHERE job_id = ANY(%s) AND claimed_at >= %s"
            " AND status = 'succeeded' AND duration_seconds IS NOT NULL GROUP BY job_id",
            (sorted(running), since),
        )
        return {j: float(p) for j, p, n in rows if n >= MIN_SAMPLES}
    out: dict[int, float] = {}
    for job_id in running:
        durations = sorted(
            float(d)
            for (d,) in db.select(
                "SELECT duration_seconds FROM runs WHERE job_id = %s AND claimed_at >= %s "
                "AND status = 'succeeded' AND duration_seconds IS NOT NULL",
                (job_id, time_param(db, since)),
            )
        )
        p95 = percentile(durations, 0.95)
        if len(durations) >= MIN_SAMPLES and p95 is not None:
            out[job_id] = p95
    return out


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Return the q-quantile with linear interpolation, as PostgreSQL's percentile_cont."""
    if not sorted_values:
        return None
    pos = q * (len(sorted_values) - 1)
    i = int(pos)
    if i + 1 >= len(sorted_values):
        return sorted_values[-1]
    return sorted_values[i] + (sorted_values[i + 1] - sorted_values[i]) * (pos - i)


def slots_that_ran(db: RunDB, pairs: Iterable[tuple[int, datetime]]) -> set[tuple[int, float]]:
    """Return which (job id, slot) pairs have a first attempt, as (job id, POSIX time)."""
    wanted = list(pairs)
    if not wanted:
        return set()
    if db.backend == "postgresql":
        # One round trip for all jobs: an index probe on (job_id, slot) per pair. Slots are
        # whole seconds, so POSIX times as float8 are exact and cheaper to send than datetimes.
        rows = db.select(
            "SELECT job_id, slot FROM runs WHERE attempt = 1 AND (job_id, slot) IN "
            "(SELECT j, to_timestamp(e) FROM unnest(%s::int[], %s::float8[]) AS u(j, e))",
            ([j for j, _ in wanted], [s.timestamp() for _, s in wanted]),
        )
    else:  # in-process: a probe per pair costs microseconds
        rows = [
            (job_id, slot)
            for job_id, slot in wanted
            if db.select(
                "SELECT 1 FROM runs WHERE job_id = %s AND slot = %s AND attempt = 1",
                (job_id, time_param(db, slot)),
            )
        ]
    out = set()
    for job_id, slot in rows:
        when = as_time(slot)
        assert when is not None
        out.add((job_id, when.timestamp()))
    return out
