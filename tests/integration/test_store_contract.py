"""The store contract, run identically on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from dbtools import engine_of

from schedctl import services
from schedctl.clock import FixedClock
from schedctl.db.repository import Repository
from schedctl.db.tables import runs
from schedctl.errors import ConflictError, NotFoundError, ValidationError
from schedctl.models import ConcurrencyPolicy, JobChanges, JobSpec

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
CLOCK = FixedClock(T0)
SPEC = JobSpec(
    name="backup",
    schedule="30 2 * * *",
    timezone="Europe/Berlin",
    command=("/usr/local/bin/backup", "--full", "a b", "100%"),
    env=(("LANG", "C.UTF-8"),),
    tags=("nightly",),
    timeout_seconds=3600,
)


def _add_run(store: Repository, job_id: int, name: str) -> None:
    with engine_of(store).begin() as conn:
        conn.execute(
            runs.insert().values(
                job_id=job_id,
                job_name=name,
                trigger="manual",
                attempt=1,
                status="succeeded",
                host="h1",
                claimed_at=T0,
                output_bytes=0,
                output_truncated=False,
                schedctl_version="test",
            )
        )


def test_add_get_roundtrip(store: Repository) -> None:
    added = services.add_job(store, SPEC, CLOCK)
    got = services.get_job(store, "backup")
    assert got == added
    assert got.spec.command == ("/usr/local/bin/backup", "--full", "a b", "100%")
    assert got.revision == 1
    assert got.created_at == T0 and got.created_at.tzinfo is not None


def test_duplicate_name_is_a_conflict_and_changes_nothing(store: Repository) -> None:
    services.add_job(store, SPEC, CLOCK)
    with pytest.raises(ConflictError, match="already exists"):
        services.add_job(store, replace(SPEC, schedule="@hourly"), CLOCK)
    assert [j.spec.schedule for j in store.list_jobs()] == ["30 2 * * *"]


def test_invalid_spec_is_not_stored(store: Repository) -> None:
    with pytest.raises(ValidationError):
        services.add_job(store, replace(SPEC, schedule="0 0 30 2 *"), CLOCK)
    assert store.list_jobs() == []


def test_edit_bumps_revision_only_on_change(store: Repository) -> None:
    services.add_job(store, SPEC, CLOCK)
    later = FixedClock(T0 + timedelta(minutes=5))
    same = services.edit_job(store, "backup", JobChanges(schedule="30  2 * * *"), later)
    assert not same.changed and same.job.revision == 1
    result = services.edit_job(
        store,
        "backup",
        JobChanges(
            schedule="@hourly",
            set_env=(("X", "1"),),
            unset_env=("LANG",),
            add_tags=("hourly",),
            remove_tags=("nightly",),
            concurrency=ConcurrencyPolicy.QUEUE,
            clear_timeout=True,
        ),
        later,
    )
    assert result.changed
    job = services.get_job(store, "backup")
    assert job.revision == 2
    assert job.spec.schedule == "@hourly"
    assert job.spec.env == (("X", "1"),)
    assert job.spec.tags == ("hourly",)
    assert job.spec.concurrency is ConcurrencyPolicy.QUEUE
    assert job.spec.timeout_seconds is None
    assert job.updated_at == T0 + timedelta(minutes=5)


def test_stale_update_is_refused(store: Repository) -> None:
    job = services.add_job(store, SPEC, CLOCK)
    store.update_job(job, replace(job.spec, description="first"), T0)
    with pytest.raises(ConflictError, match="changed or removed by someone else"):
        store.update_job(job, replace(job.spec, description="second"), T0)
    assert services.get_job(store, "backup").spec.description == "first"


def test_enable_disable(store: Repository) -> None:
    services.add_job(store, SPEC, CLOCK)
    assert services.set_enabled(store, "backup", False, CLOCK).changed
    assert not services.set_enabled(store, "backup", False, CLOCK).changed
    assert services.get_job(store, "backup").spec.enabled is False


def test_list_filters_by_tag(store: Repository) -> None:
    services.add_job(store, SPEC, CLOCK)
    services.add_job(store, replace(SPEC, name="cleanup", tags=("hourly",)), CLOCK)
    assert [j.name for j in services.list_jobs(store)] == ["backup", "cleanup"]
    assert [j.name for j in services.list_jobs(store, "hourly")] == ["cleanup"]


def test_remove_keeps_history_unless_purged(store: Repository) -> None:
    kept = services.add_job(store, SPEC, CLOCK)
    _add_run(store, kept.id, kept.name)
    result = services.remove_job(store, "backup", purge=False)
    assert (result.runs_kept, result.runs_deleted) == (1, 0)
    with engine_of(store).connect() as conn:
        row = conn.execute(sa.select(runs.c.job_id, runs.c.job_name)).one()
    assert tuple(row) == (None, "backup")

    purged = services.add_job(store, replace(SPEC, name="other"), CLOCK)
    _add_run(store, purged.id, purged.name)
    assert services.remove_job(store, "other", purge=True).runs_deleted == 1
    with pytest.raises(NotFoundError):
        services.get_job(store, "other")


def test_add_jobs_is_all_or_nothing(store: Repository) -> None:
    store.add_job(replace(SPEC, name="taken"), T0)
    specs = [replace(SPEC, name=n) for n in ("first", "second", "taken", "last")]
    with pytest.raises(ConflictError, match="taken"):
        store.add_jobs(specs, T0)
    assert [j.name for j in store.list_jobs()] == ["taken"]
    added = store.add_jobs([specs[0], specs[1]], T0)
    assert [j.name for j in added] == ["first", "second"]
    assert [j.name for j in store.list_jobs()] == ["first", "second", "taken"]


def test_unknown_job(store: Repository) -> None:
    with pytest.raises(NotFoundError, match="no job named 'ghost'"):
        services.get_job(store, "ghost")
    with pytest.raises(NotFoundError):
        services.edit_job(store, "ghost", JobChanges(schedule="@daily"), CLOCK)


def test_slot_claim_is_unique_per_job_and_slot(store: Repository) -> None:
    job = services.add_job(store, SPEC, CLOCK)
    values = {
        "job_id": job.id,
        "job_name": job.name,
        "slot": T0,
        "trigger": "timer",
        "attempt": 1,
        "status": "running",
        "host": "h1",
        "claimed_at": T0,
        "output_bytes": 0,
        "output_truncated": False,
        "schedctl_version": "test",
    }
    with engine_of(store).begin() as conn:
        conn.execute(runs.insert().values(values))
    with pytest.raises(sa.exc.IntegrityError), engine_of(store).begin() as conn:
        conn.execute(runs.insert().values({**values, "host": "h2"}))
    with engine_of(store).begin() as conn:  # a retry of the same slot is attempt 2
        conn.execute(runs.insert().values({**values, "attempt": 2}))
