"""Deleting old run history in short batches, and remembering how far it was pruned."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from schedctl.db.repo import Store
from schedctl.db.tables import prune_marks, runs
from schedctl.models import FAILURE_STATUSES


@dataclass(frozen=True)
class Cutoffs:
    """One job's runs claimed before these instants may go (job_id None: removed jobs').

    First attempts of slots from `claimable_from` on stay whatever their age: a firing may
    still pick those slots, and only that row stops it from running one twice.
    """

    job_id: int | None
    others_before: datetime
    failures_before: datetime
    claimable_from: datetime | None = None


def _expired(c: Cutoffs) -> sa.ColumnElement[bool]:
    failed = runs.c.status.in_(sorted(FAILURE_STATUSES))
    # Job by job on (job_id, claimed_at): each batch is a short index range scan.
    which = runs.c.job_id.is_(None) if c.job_id is None else runs.c.job_id == c.job_id
    return sa.and_(
        which,
        runs.c.claimed_at < max(c.others_before, c.failures_before),
        runs.c.status != "running",  # a live run is never deleted under its runner
        sa.or_(
            sa.and_(failed, runs.c.claimed_at < c.failures_before),
            sa.and_(sa.not_(failed), runs.c.claimed_at < c.others_before),
        ),
    )


def _claimable(c: Cutoffs) -> sa.ColumnElement[bool]:
    if c.claimable_from is None:
        return sa.false()
    # Only a first attempt blocks a claim (the unique index is on attempt 1).
    return sa.and_(runs.c.attempt == 1, runs.c.slot.is_not(None), runs.c.slot >= c.claimable_from)


def _doomed(c: Cutoffs) -> sa.ColumnElement[bool]:
    return sa.and_(_expired(c), sa.not_(_claimable(c)))


def _count(store: Store, plan: list[Cutoffs], which: Callable[[Cutoffs], Any]) -> Counter[str]:
    out: Counter[str] = Counter()
    with store.tx() as conn:
        for c in plan:
            query = (
                sa.select(runs.c.job_name, sa.func.count())
                .where(which(c))
                .group_by(runs.c.job_name)
            )
            out.update({name: n for name, n in conn.execute(query)})
    return out


def count(store: Store, plan: list[Cutoffs]) -> Counter[str]:
    """Return how many runs each job would lose, by job name."""
    return _count(store, plan, _doomed)


def count_claimable(store: Store, plan: list[Cutoffs]) -> Counter[str]:
    """Return how many runs past their retention stay because a firing may still claim their slot."""
    return _count(store, plan, lambda c: sa.and_(_expired(c), _claimable(c)))


def delete(
    store: Store, plan: list[Cutoffs], batch: int, progress: Callable[[int], None]
) -> Counter[str]:
    """Delete what `count` reports, `batch` rows per transaction; return deletions by job."""
    out: Counter[str] = Counter()
    for c in plan:
        while True:
            ids = sa.select(runs.c.id).where(_doomed(c)).limit(batch).scalar_subquery()
            # One short transaction per batch: runners claiming and finishing meanwhile never
            # wait long behind a large deletion.
            with store.tx() as conn:
                names = conn.execute(
                    runs.delete().where(runs.c.id.in_(ids)).returning(runs.c.job_name)
                ).scalars()
                done = Counter(names)
            out.update(done)
            progress(sum(done.values()))
            if sum(done.values()) < batch:
                break
    return out


def mark(store: Store, marks: dict[int, datetime]) -> None:
    """Record, per job, that runs claimed before the instant may be gone."""
    if not marks:
        return
    with store.tx() as conn:
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        stmt = insert(prune_marks).values(
            [{"job_id": j, "pruned_before": at} for j, at in marks.items()]
        )
        newer = sa.func.greatest if conn.dialect.name == "postgresql" else sa.func.max
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[prune_marks.c.job_id],
                set_={
                    "pruned_before": newer(prune_marks.c.pruned_before, stmt.excluded.pruned_before)
                },
            )
        )
