"""History at scale (run on demand, not a test): 1,000 jobs and 10,000,000 runs in PostgreSQL.

    ~/.local/share/schedctl/venv/bin/python bench/history_bench.py [--hours N] [--repeat N]

Starts its own PostgreSQL (like the test suite), loads 1,000 hourly jobs with one run per
hour each for --hours hours (default 10,002: just over 10 M rows), leaves some slots missed
and some runs going, then prints:
1. query time (medians, wall time of the database calls from Python) of `history JOB
   --limit 20`, of the queries behind `report --since 7d`, and `check` end to end (the
   installed binary in a subprocess), with the report's Python share shown apart;
2. the report window query under the index choices considered (covering B-tree, plain
   B-tree, BRIN) — why migration 0002 creates the covering one.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from dbtools import engine_of  # noqa: E402
from pgserver import destroy, start_server  # noqa: E402

PY = sys.executable
SCHEDCTL = str(Path(PY).parent / "schedctl")
JOBS = 1000


def median_ms(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm caches and plans
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1000


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))


def load(url: str, hours: int) -> tuple[int, float]:
    """Fill the database; return (runs inserted, seconds)."""
    import sqlalchemy as sa

    from schedctl.config import parse_database_url
    from schedctl.db.schema import make_engine
    from schedctl.db.tables import runs

    engine = make_engine(parse_database_url(url))
    start = time.perf_counter()
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    base = now - timedelta(hours=hours - 1)
    created = base - timedelta(days=1)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO jobs (id, name, command, shell, schedule, timezone, concurrency, catch_up,"
            " jitter_seconds, retries, retry_delay_seconds, env, description, tags, enabled,"
            " output_limit_bytes, created_at, updated_at, revision)"
            " SELECT g, 'job-' || lpad(g::text, 4, '0'), '[\"true\"]', false, (g % 60) || ' * * * *',"
            " 'UTC', 'forbid', 'latest', 0, 0, 30, '{}', '', '[\"bench\"]', true, 65536, :c, :c, 1"
            " FROM generate_series(1, CAST(:n AS int)) g"
        ), {"c": created, "n": JOBS})  # fmt: skip
        conn.execute(sa.text("SELECT setval('jobs_id_seq', :n)"), {"n": JOBS})
        conn.execute(sa.text(
            "INSERT INTO job_changes (job_id, at, enabled, schedule, timezone)"
            " SELECT id, created_at, enabled, schedule, timezone FROM jobs"
        ))  # fmt: skip
        for idx in runs.indexes:  # a bulk load is faster without them; rebuilt below
            idx.drop(conn)
    step = 1000
    for first in range(0, hours, step):
        last = min(hours, first + step) - 1
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO runs (job_id, job_name, job_revision, slot, trigger, attempt, status,"
                " host, pid, claimed_at, started_at, finished_at, heartbeat_at, exit_code,"
                " duration_seconds, output_bytes, output_truncated, schedctl_version)"
                " SELECT j, 'job-' || lpad(j::text, 4, '0'), 1, s, 'timer', 1,"
                " CASE WHEN r < 0.02 THEN 'failed' ELSE 'succeeded' END, 'host-' || (j % 20),"
                " 1000, s + interval '0.4 s', s + interval '0.5 s', s + (0.5 + d) * interval '1 s',"
                " s + (0.5 + d) * interval '1 s', CASE WHEN r < 0.02 THEN 1 ELSE 0 END, d, 120,"
                " false, 'bench'"
                " FROM generate_series(CAST(:a AS int), CAST(:b AS int)) k, generate_series(1, CAST(:n AS int)) j,"
                " LATERAL (SELECT CAST(:base AS timestamptz) + k * interval '1 hour' + (j % 60) * interval '1 minute' AS s,"
                "   1 + random() * 30 + j * 0 AS d, random() + j * 0 AS r) x"
                " WHERE s <= now() - interval '90 seconds'"
                " ORDER BY k, j"
            ), {"a": first, "b": last, "n": JOBS, "base": base})  # fmt: skip
        print(f"  loaded {min(hours, last + 1) * JOBS:,} runs", file=sys.stderr, flush=True)
    with engine.begin() as conn:
        # Some slots of the last week never ran; some runs are going on right now.
        conn.execute(sa.text(
            "DELETE FROM runs WHERE id IN (SELECT id FROM runs WHERE claimed_at > :since"
            " ORDER BY md5(id::text) LIMIT 500)"
        ), {"since": now - timedelta(days=7)})  # fmt: skip
        conn.execute(sa.text(
            "UPDATE runs SET status = 'running', finished_at = NULL, duration_seconds = NULL,"
            " heartbeat_at = now() WHERE id IN (SELECT id FROM runs ORDER BY id DESC LIMIT 10)"
        ))  # fmt: skip
        for idx in runs.indexes:
            idx.create(conn)
        total = conn.execute(sa.text("SELECT count(*) FROM runs")).scalar_one()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))
    engine.dispose()
    return int(total), time.perf_counter() - start


def measure(url: str, repeat: int, env: dict[str, str]) -> list[list[str]]:
    from schedctl import operate
    from schedctl.clock import SystemClock
    from schedctl.config import parse_database_url
    from schedctl.db.repository import open_current

    store = open_current(parse_database_url(url), SystemClock())
    clock = SystemClock()
    now = clock.now()
    since = now - timedelta(days=7)
    rows = []
    ms = median_ms(lambda: operate.history(store, clock, "job-0500", limit=20), repeat)
    rows.append(["history job-0500 --limit 20", "query", f"{ms:.1f}", "50"])

    slots_to = now - timedelta(minutes=1)
    parts = {
        "jobs": store.list_jobs,
        "window: counts, p50/p95/max, slots present": lambda: store.window_stats(since, slots_to),
        "last success/failure": store.last_outcomes,
        "changes + prune marks": lambda: (
            store.changes_by_job(),
            store.pruned_before(),
        ),
        "running + heartbeats": lambda: (store.running_by_job(), store.heartbeats()),
    }
    total = 0.0
    for name, fn in parts.items():
        part = median_ms(fn, repeat)
        total += part
        rows.append([f"  report: {name}", "query", f"{part:.1f}", ""])
    rows.append(["report --since 7d (sum of its queries)", "query", f"{total:.1f}", "200"])
    whole = median_ms(lambda: operate.report(store, clock, 7 * 86400), max(3, repeat // 4))
    rows.append(["report --since 7d (queries + Python)", "call", f"{whole:.1f}", ""])
    rep = operate.report(store, clock, 7 * 86400)
    rows.append(["  (missed slots found in 7 d)", "", str(sum(r.missed for r in rep.rows)), ""])

    def render() -> None:
        import io

        from rich.console import Console

        from schedctl.cli.ops import _table

        Console(file=io.StringIO(), width=1000).print(_table(rep.rows, rep.until))

    rows.append(["report: printing the 1,000-row table", "call", f"{median_ms(render, 3):.1f}", ""])
    totals = median_ms(store.status_totals, 3)
    rows.append(["metrics: runs by job and status (all history)", "query", f"{totals:.1f}", ""])

    def cli(*args: str) -> Callable[[], Any]:
        return lambda: subprocess.run([SCHEDCTL, *args], env=env, capture_output=True, check=False)

    rows.append(
        ["check (1,000 jobs)", "end to end", f"{median_ms(cli('check'), repeat):.1f}", "300"]
    )
    rows.append(["history job-0500 --limit 20", "end to end",
                 f"{median_ms(cli('history', 'job-0500', '--limit', '20'), 5):.1f}", ""])  # fmt: skip
    rows.append(["report --since 7d", "end to end",
                 f"{median_ms(cli('report', '--since', '7d'), 3):.1f}", ""])  # fmt: skip
    rows.append(["metrics", "end to end", f"{median_ms(cli('metrics'), 3):.1f}", ""])
    store.close()
    return rows


def _global_window() -> str:
    """The shipped window query's aggregates, over one scan of the window instead of per job."""
    from schedctl.db import queries

    with open(queries.PATH, encoding="utf-8") as f:
        raw = queries.parse(f.read())[("window_stats", "postgresql")]
    text = " " + " ".join(raw.split())
    select = text[text.index(" SELECT count(*) AS runs") : text.index(" FROM runs r WHERE")]
    return select.replace(" SELECT ", "SELECT job_id, ", 1) + (
        " FROM runs WHERE claimed_at >= :since GROUP BY job_id"
    )


def index_choice(url: str, repeat: int) -> list[list[str]]:
    """Time the report window: job by job (what ships) against one scan of the window."""
    import sqlalchemy as sa

    from schedctl.clock import SystemClock
    from schedctl.config import parse_database_url
    from schedctl.db.repository import open_current

    store = open_current(parse_database_url(url), SystemClock())
    since = datetime.now(UTC) - timedelta(days=7)
    to = datetime.now(UTC) - timedelta(minutes=1)

    def size(name: str) -> str:
        with engine_of(store).begin() as conn:
            query = sa.text("SELECT pg_size_pretty(pg_relation_size(:i))")
            return str(conn.execute(query, {"i": name}).scalar_one())

    query = sa.text(_global_window())
    params = {"since": since, "slots_to": to, "scan_from": since - timedelta(minutes=10)}

    def global_scan() -> None:
        with engine_of(store).begin() as conn:
            conn.execute(query, params).all()

    out = [[
        "per job: (job_id, claimed_at) INCLUDE (status, attempt, slot, duration) [ships]",
        size("ix_runs_job_claimed"),
        f"{median_ms(lambda: store.window_stats(since, to), repeat):.1f}",
    ]]  # fmt: skip
    candidates = {
        "one scan: claimed_at INCLUDE (job_id, status, attempt, slot, duration) + sort":
            "CREATE INDEX ix_alt ON runs (claimed_at)"
            " INCLUDE (job_id, status, attempt, slot, duration_seconds)",
        "one scan: BRIN on claimed_at + sort": "CREATE INDEX ix_alt ON runs USING brin (claimed_at)",
    }  # fmt: skip
    for name, ddl in candidates.items():
        with engine_of(store).begin() as conn:
            conn.execute(sa.text("DROP INDEX IF EXISTS ix_alt"))
            conn.execute(sa.text(ddl))
            conn.execute(sa.text("ANALYZE runs"))
        out.append([name, size("ix_alt"), f"{median_ms(global_scan, repeat):.1f}"])
    with engine_of(store).begin() as conn:
        conn.execute(sa.text("DROP INDEX IF EXISTS ix_alt"))
    store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=int, default=10_002, help="runs per job (one an hour)")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    server = start_server()
    try:
        url = server.url(server.create_database())
        import os

        env = {**os.environ, "SCHEDCTL_DATABASE_URL": url, "NO_COLOR": "1", "COLUMNS": "200"}
        subprocess.run([SCHEDCTL, "db", "upgrade"], env=env, check=True, capture_output=True)
        total, seconds = load(url, args.hours)
        print(
            f"\n{JOBS:,} jobs, {total:,} runs in PostgreSQL (loaded and indexed in {seconds:.0f} s)"
        )
        table("History at scale (median ms)", ["operation", "measured", "ms", "target"],
              measure(url, args.repeat, env))  # fmt: skip
        table("Report window query by index (median ms)", ["plan and index", "size", "ms"],
              index_choice(url, args.repeat))  # fmt: skip
    finally:
        destroy(server)


if __name__ == "__main__":
    main()
