"""Read-only queries behind report, check, metrics and `history --missed`."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from schedctl.models import FAILURE_STATUSES, JobChange, Run, WindowStats
from schedctl.store.repo import RUN_COLUMNS, Store
from schedctl.store.tables import UTCDateTime, job_changes, jobs, prune_marks, runs

_FAILED = runs.c.status.in_(sorted(FAILURE_STATUSES))
_DECIDED = sa.and_(runs.c.duration_seconds.is_not(None), runs.c.status != "skipped_overlap")


def changes_by_job(store: Store) -> dict[int, list[JobChange]]:
    """Return every job's changes, oldest first."""
    query = sa.select(job_changes).order_by(job_changes.c.job_id, job_changes.c.at)
    out: dict[int, list[JobChange]] = defaultdict(list)
    with store.tx() as conn:
        for r in conn.execute(query):
            out[r.job_id].append(JobChange(r.at, bool(r.enabled), r.schedule, r.timezone))
    return out


def pruned_before(store: Store) -> dict[int, datetime]:
    """Return, per job, the instant before which its history may have been pruned."""
    with store.tx() as conn:
        return {r.job_id: r.pruned_before for r in conn.execute(sa.select(prune_marks))}


def window_stats(store: Store, since: datetime) -> dict[int, WindowStats]:
    """Return per-job counts and durations of runs claimed since `since`."""
    inw = runs.c.claimed_at >= since
    dur = runs.c.duration_seconds
    cols = [
        runs.c.job_id,
        sa.func.count().filter(inw).label("runs"),
        sa.func.count().filter(sa.and_(inw, runs.c.status == "succeeded")).label("succeeded"),
        sa.func.count().filter(sa.and_(inw, _FAILED)).label("failed"),
        sa.func.count().filter(sa.and_(inw, runs.c.status == "skipped_overlap")).label("skipped"),
        sa.func.max(dur).filter(sa.and_(inw, _DECIDED)).label("max"),
    ]
    postgres = store.url.backend == "postgresql"
    if postgres:
        for q in (0.5, 0.95):
            ordered: Any = sa.func.percentile_cont(q).within_group(dur)
            cols.append(sa.funcfilter(ordered, sa.and_(inw, _DECIDED)).label(f"p{int(q * 100)}"))
    query = sa.select(*cols).where(inw, runs.c.job_id.is_not(None)).group_by(runs.c.job_id)
    out = {}
    with store.tx() as conn:
        rows = conn.execute(query).mappings().all()
        durations: dict[int, list[float]] = defaultdict(list)
        if not postgres:
            # SQLite has no percentile aggregate; its histories are one host's, so this is small.
            for d in conn.execute(
                sa.select(runs.c.job_id, dur).where(inw, _DECIDED).order_by(runs.c.job_id, dur)
            ):
                durations[d.job_id].append(float(d.duration_seconds))
    for r in rows:
        p50 = r["p50"] if postgres else percentile(durations[r["job_id"]], 0.5)
        p95 = r["p95"] if postgres else percentile(durations[r["job_id"]], 0.95)
        out[r["job_id"]] = WindowStats(
            runs=r["runs"], succeeded=r["succeeded"], failed=r["failed"], skipped=r["skipped"],
            p50=p50, p95=p95, max=r["max"],
        )  # fmt: skip
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


def _newest(where: sa.ColumnElement[bool]) -> sa.ScalarSelect[int]:
    """Return the id of a job's newest run matching `where` (one index probe per job)."""
    return (
        sa.select(runs.c.id)
        .where(runs.c.job_id == jobs.c.id, where)
        .order_by(runs.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def last_runs(store: Store) -> dict[int, dict[str, Run | None]]:
    """Return per job its newest run, newest success and newest failure (any age)."""
    picks = {
        "last": _newest(sa.true()),
        "success": _newest(runs.c.status == "succeeded"),
        "failure": _newest(_FAILED),
    }
    query = sa.select(jobs.c.id, *(v.label(k) for k, v in picks.items()))
    with store.tx() as conn:
        ids = conn.execute(query).mappings().all()
        wanted = {r[k] for r in ids for k in picks if r[k] is not None}
        found = {}
        if wanted:
            for row in conn.execute(
                sa.select(*RUN_COLUMNS).where(runs.c.id.in_(sorted(wanted)))
            ).mappings():
                found[row["id"]] = Run(**row)
    return {r["id"]: {k: found.get(r[k]) if r[k] else None for k in picks} for r in ids}


def heartbeats(store: Store) -> dict[int, datetime | None]:
    """Return the heartbeat of every running run, by run id."""
    query = sa.select(runs.c.id, runs.c.heartbeat_at).where(runs.c.status == "running")
    with store.tx() as conn:
        return {r.id: r.heartbeat_at for r in conn.execute(query)}


def slots_that_ran(store: Store, pairs: Iterable[tuple[int, datetime]]) -> set[tuple[int, float]]:
    """Return which (job id, slot) pairs have a run row, as (job id, POSIX timestamp)."""
    wanted = list(pairs)
    if not wanted:
        return set()
    query = sa.select(runs.c.job_id, runs.c.slot).where(
        runs.c.attempt == 1,
        sa.tuple_(runs.c.job_id, runs.c.slot).in_(wanted),
    )
    with store.tx() as conn:
        return {(r.job_id, r.slot.timestamp()) for r in conn.execute(query)}


def slots_between(store: Store, job_id: int, start: datetime, end: datetime) -> list[datetime]:
    """Return the slots of a job's first attempts in [start, end]."""
    query = sa.select(runs.c.slot).where(
        runs.c.job_id == job_id,
        runs.c.attempt == 1,
        runs.c.slot >= start,
        runs.c.slot <= end,
    )
    with store.tx() as conn:
        return [r.slot for r in conn.execute(query)]


def runs_since(store: Store, since: datetime, job_ids: list[int], limit: int) -> list[Run]:
    """Return the newest `limit` runs of `job_ids` claimed since `since`, oldest first."""
    query = (
        sa.select(*RUN_COLUMNS)
        .where(runs.c.claimed_at >= since, runs.c.job_id.in_(job_ids))
        .order_by(runs.c.id.desc())
        .limit(limit)
    )
    with store.tx() as conn:
        return [Run(**row) for row in conn.execute(query).mappings()][::-1]


def slot_counts(store: Store, ranges: dict[int, tuple[datetime, datetime]]) -> dict[int, int]:
    """Return per job how many first attempts have a slot in its [start, end] range."""
    if not ranges:
        return {}
    wanted = (
        sa.values(
            sa.column("job_id", sa.Integer),
            sa.column("lo", UTCDateTime),
            sa.column("hi", UTCDateTime),
            name="wanted",
        )
        .data([(j, lo, hi) for j, (lo, hi) in ranges.items()])
        .cte()
    )  # a CTE: SQLite takes that form
    query = (
        sa.select(wanted.c.job_id, sa.func.count(runs.c.id))
        .select_from(wanted)
        .join(
            runs,
            sa.and_(
                runs.c.job_id == wanted.c.job_id,
                runs.c.attempt == 1,
                runs.c.slot >= wanted.c.lo,
                runs.c.slot <= wanted.c.hi,
            ),
        )
        .group_by(wanted.c.job_id)
    )
    with store.tx() as conn:
        return {j: n for j, n in conn.execute(query)}


def status_totals(store: Store) -> dict[tuple[str, str], int]:
    """Return how many runs history holds per (job name, status)."""
    query = sa.select(runs.c.job_name, runs.c.status, sa.func.count()).group_by(
        runs.c.job_name, runs.c.status
    )
    with store.tx() as conn:
        return {(j, s): n for j, s, n in conn.execute(query)}
