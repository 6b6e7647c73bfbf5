"""Read-only queries behind report, check, metrics and `history --missed`."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from schedctl.db.checkdb import percentile
from schedctl.db.repo import RUN_COLUMNS, Store
from schedctl.db.tables import UTCDateTime, job_changes, jobs, prune_marks, runs
from schedctl.history import JobChange, Run, WindowStats
from schedctl.models import FAILURE_STATUSES
from schedctl.schedule import MAX_EARLY

_FAILED = runs.c.status.in_(sorted(FAILURE_STATUSES))
_FAILED_SQL = "status IN (" + ", ".join(f"'{s}'" for s in sorted(FAILURE_STATUSES)) + ")"
# A run is claimed at or after its slot, less what a host ahead of the database may claim early.
CLAIM_MARGIN = MAX_EARLY
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


# Scans claims from `since` only; a first attempt claimed a little before `since` for a slot
# after it (a host whose clock ran ahead) is counted by the `early` subquery.
_PG_WINDOW = sa.text(
    "SELECT j.id AS job_id, w.*, (SELECT count(*) FROM runs e WHERE e.job_id = j.id"
    "  AND e.claimed_at >= :scan_from AND e.claimed_at < :since AND e.attempt = 1"
    "  AND e.slot >= :since AND e.slot <= :slots_to) AS early"
    " FROM jobs j CROSS JOIN LATERAL ("
    " SELECT count(*) AS runs,"
    " count(*) FILTER (WHERE status = 'succeeded') AS succeeded,"
    " count(*) FILTER (WHERE status = 'skipped_overlap') AS skipped,"
    " count(*) FILTER (WHERE status = 'running') AS running,"
    " percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY duration_seconds)"
    "   FILTER (WHERE status <> 'skipped_overlap') AS pct,"
    " max(duration_seconds) FILTER (WHERE status <> 'skipped_overlap') AS max,"
    " count(*) FILTER (WHERE attempt = 1 AND slot >= :since AND slot <= :slots_to) AS present"
    " FROM runs r WHERE r.job_id = j.id AND r.claimed_at >= :since) w"
).bindparams(
    sa.bindparam("since", type_=UTCDateTime),
    sa.bindparam("slots_to", type_=UTCDateTime),
    sa.bindparam("scan_from", type_=UTCDateTime),
)


def window_stats(store: Store, since: datetime, slots_to: datetime) -> dict[int, WindowStats]:
    """Return per-job counts and durations of runs claimed since `since`.

    `slots_present` counts first attempts whose slot lies in [since, slots_to].
    """
    scan_from = since - CLAIM_MARGIN
    out = {}
    if store.url.backend == "postgresql":
        # Job by job on (job_id, claimed_at) INCLUDE (...): measured faster than one scan of
        # the whole window followed by a sort on job_id (bench/history_bench.py).
        with store.tx() as conn:
            found = conn.execute(
                _PG_WINDOW, {"since": since, "slots_to": slots_to, "scan_from": scan_from}
            ).mappings()
            for r in found:
                if r["runs"] or r["early"]:
                    p50, p95 = r["pct"] or (None, None)
                    # Every status that is not success, skip or running is a failure: cheaper
                    # than an IN list per row.
                    failed = r["runs"] - r["succeeded"] - r["skipped"] - r["running"]
                    out[r["job_id"]] = WindowStats(
                        r["runs"], r["succeeded"], failed, r["skipped"], p50, p95, r["max"],
                        r["present"] + r["early"],
                    )  # fmt: skip
        return out
    inw = runs.c.claimed_at >= since
    dur = runs.c.duration_seconds
    query = (
        sa.select(
            runs.c.job_id,
            sa.func.count().filter(inw).label("runs"),
            sa.func.count().filter(sa.and_(inw, runs.c.status == "succeeded")).label("ok"),
            sa.func.count().filter(sa.and_(inw, _FAILED)).label("failed"),
            sa.func.count().filter(sa.and_(inw, runs.c.status == "skipped_overlap")).label("sk"),
            sa.func.max(dur).filter(sa.and_(inw, _DECIDED)).label("max"),
            sa.func.count()
            .filter(runs.c.attempt == 1, runs.c.slot >= since, runs.c.slot <= slots_to)
            .label("present"),
        )
        .where(runs.c.claimed_at >= scan_from, runs.c.job_id.is_not(None))
        .group_by(runs.c.job_id)
    )
    durations: dict[int, list[float]] = defaultdict(list)
    with store.tx() as conn:
        rows = conn.execute(query).mappings().all()
        # SQLite has no percentile aggregate; its histories are one host's, so this is small.
        for d in conn.execute(
            sa.select(runs.c.job_id, dur).where(inw, _DECIDED).order_by(runs.c.job_id, dur)
        ):
            durations[d.job_id].append(float(d.duration_seconds))
    for r in rows:
        mine = durations[r["job_id"]]
        out[r["job_id"]] = WindowStats(
            r["runs"], r["ok"], r["failed"], r["sk"], percentile(mine, 0.5),
            percentile(mine, 0.95), r["max"], r["present"],
        )  # fmt: skip
    return out


def _newest(where: sa.ColumnElement[bool]) -> sa.ScalarSelect[int]:
    """Return the id of a job's newest run matching `where` (one index probe per job)."""
    return (
        sa.select(runs.c.id)
        .where(runs.c.job_id == jobs.c.id, where)
        .order_by(runs.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )


@dataclass(frozen=True)
class Outcome:
    """A job's newest run with a given result."""

    id: int
    status: str
    at: datetime  # finished (or, for a run lost without an end, claimed)
    duration: float | None


_PG_OUTCOMES = sa.text(
    "SELECT j.id, s.id, s.finished_at, s.duration_seconds,"
    " f.id, f.status, f.finished_at, f.claimed_at, f.duration_seconds FROM jobs j"
    " LEFT JOIN LATERAL (SELECT id, finished_at, duration_seconds FROM runs"
    "  WHERE job_id = j.id AND status = 'succeeded' ORDER BY id DESC LIMIT 1) s ON true"
    " LEFT JOIN LATERAL (SELECT id, status, finished_at, claimed_at, duration_seconds FROM runs"
    "  WHERE job_id = j.id AND " + _FAILED_SQL + " ORDER BY id DESC LIMIT 1) f ON true"
)


def last_outcomes(store: Store) -> dict[int, tuple[Outcome | None, Outcome | None]]:
    """Return per job its newest success and newest failure, of any age."""
    if store.url.backend == "postgresql":
        # One statement, two index probes per job on the partial indexes.
        out: dict[int, tuple[Outcome | None, Outcome | None]] = {}
        with store.tx() as conn:
            for j, sid, sat, sdur, fid, fst, fat, fclaim, fdur in conn.execute(_PG_OUTCOMES):
                ok = None if sid is None else Outcome(sid, "succeeded", sat, sdur)
                bad = None if fid is None else Outcome(fid, fst, fat or fclaim, fdur)
                out[j] = (ok, bad)
        return out
    query = sa.select(
        jobs.c.id, _newest(runs.c.status == "succeeded").label("ok"), _newest(_FAILED).label("bad")
    )
    with store.tx() as conn:
        picks = conn.execute(query).all()
        wanted = sorted({i for _, ok, bad in picks for i in (ok, bad) if i is not None})
        found = {}
        if wanted:
            cols = (runs.c.id, runs.c.status, runs.c.finished_at, runs.c.claimed_at,
                    runs.c.duration_seconds)  # fmt: skip
            for r in conn.execute(sa.select(*cols).where(runs.c.id.in_(wanted))):
                found[r.id] = Outcome(r.id, r.status, r.finished_at or r.claimed_at,
                                      r.duration_seconds)  # fmt: skip
    return {
        job_id: (found.get(ok) if ok else None, found.get(bad) if bad else None)
        for job_id, ok, bad in picks
    }


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


def status_totals(store: Store) -> dict[tuple[str, str], int]:
    """Return how many runs history holds per (job name, status)."""
    query = sa.select(runs.c.job_name, runs.c.status, sa.func.count()).group_by(
        runs.c.job_name, runs.c.status
    )
    with store.tx() as conn:
        return {(j, s): n for j, s, n in conn.execute(query)}
