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

    ~/.local/share/schedctl/venv/bin/python bench/history_bench.py --scaling \
        [--backends postgresql,sqlite] [--hours 10002] [--sqlite-hours 1000] [--before BIN]

times `metrics`, `report --since 7d` (JSON, and the table to a pipe) and `check` end to end
over ~10 k runs and over --hours (PostgreSQL) or --sqlite-hours (SQLite) thousand runs, the
same 1,000 jobs and the same last 10 hours in both, the extra history all older than the
window; with --before, first with another schedctl binary, then with this one after `db
upgrade` over the same rows.
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
    parts: dict[str, Callable[[], Any]] = {
        "jobs": store.list_jobs,
        "window: counts, p50/p95/max, slots present": lambda: store.window_stats(since, slots_to),
        "last success/failure": store.last_outcomes,
        "changes + prune marks": lambda: (
            store.changes_by_job(),
            store.pruned_before(),
        ),
        "running + heartbeats": store.running,
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
    rows.append(["metrics: runs by job and status (run_counts)", "query", f"{totals:.1f}", ""])

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


# -- costs against history size ---------------------------------------------------------------

RECENT_HOURS = 10  # the window's content, the same in both databases
OLDEST_HOURS = 10_000  # how long before the window the jobs were created
SCALE_COMMANDS = {
    "metrics": ["metrics"],
    "report --since 7d --json": ["report", "--since", "7d", "--json"],
    "report --since 7d (table, to a pipe)": ["report", "--since", "7d"],
    "check": ["check"],
}


def _scale_rows(hours: list[int], now_h: datetime) -> Any:
    """Yield the runs of the given hour offsets (0 = the current hour, 9 = nine hours before).

    The same rules as the PostgreSQL loader: 1 in 20 recent slots missed, 1 in 50 runs failed.
    """
    for k in hours:
        for j in range(1, JOBS + 1):
            slot = now_h - timedelta(hours=k, minutes=-(j % 60))
            if slot > datetime.now(UTC) - timedelta(seconds=90):
                continue
            if k < RECENT_HOURS and (k * 1000 + j) % 20 == 0:
                continue
            failed = (k * 7 + j * 13) % 50 == 0
            d = 1 + (k * 31 + j) % 30
            yield (j, f"job-{j:04d}", slot, "failed" if failed else "succeeded",
                   slot + timedelta(seconds=0.4), slot + timedelta(seconds=0.5),
                   slot + timedelta(seconds=0.5 + d), 1 if failed else 0, float(d))  # fmt: skip


def load_scaled(url: str, total_hours: int) -> tuple[int, float, float]:
    """Fill a database with RECENT_HOURS of runs, plus older runs outside a 7-day window.

    The older runs (total_hours - RECENT_HOURS hours of them) end eight days ago. Every size
    has the same jobs with the same changes (created OLDEST_HOURS ago, disabled from eight days
    ago until the recent hours), so all sizes judge the same window the same way.
    Return (runs, seconds to load, seconds to rebuild the run counters from history).
    """
    import sqlalchemy as sa

    from schedctl.config import parse_database_url
    from schedctl.db.schema import make_engine

    engine = make_engine(parse_database_url(url))
    pg = engine.dialect.name == "postgresql"
    start = time.perf_counter()
    now_h = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    recent_from = now_h - timedelta(hours=RECENT_HOURS - 1, seconds=1)
    gap_from = now_h - timedelta(days=8) + timedelta(hours=1)
    old = total_hours - RECENT_HOURS
    assert old <= OLDEST_HOURS
    created = now_h - timedelta(days=8, hours=OLDEST_HOURS, seconds=1)
    with engine.begin() as conn:
        has_counts = sa.inspect(conn).has_table("run_counts")
        for j in range(1, JOBS + 1):
            conn.execute(sa.text(
                "INSERT INTO jobs (id, name, command, shell, schedule, timezone, concurrency,"
                " catch_up, jitter_seconds, retries, retry_delay_seconds, env, description, tags,"
                " enabled, output_limit_bytes, created_at, updated_at, revision) VALUES (:id, :n,"
                " '[\"true\"]', false, :s, 'UTC', 'forbid', 'latest', 0, 0, 30, '{}', '',"
                " '[\"bench\"]', true, 65536, :c, :c, 1)"
            ), {"id": j, "n": f"job-{j:04d}", "s": f"{j % 60} * * * *", "c": _ts(created, pg)})  # fmt: skip
            changes = [(created, True), (gap_from, False), (recent_from, True)]
            for at, enabled in changes:
                conn.execute(sa.text(
                    "INSERT INTO job_changes (job_id, at, enabled, schedule, timezone)"
                    " VALUES (:j, :at, :e, :s, 'UTC')"
                ), {"j": j, "at": _ts(at, pg), "e": enabled, "s": f"{j % 60} * * * *"})  # fmt: skip
        # A bulk load without row triggers; the counters are rebuilt from history below.
        triggers = []
        if pg:
            conn.execute(sa.text("SELECT setval('jobs_id_seq', :n)"), {"n": JOBS})
            conn.execute(sa.text("ALTER TABLE runs DISABLE TRIGGER USER"))
        else:
            found = conn.execute(sa.text(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'runs'"
            )).all()  # fmt: skip
            for name, sql in found:
                conn.execute(sa.text(f"DROP TRIGGER {name}"))
                triggers.append(sql)
    hours = list(range(RECENT_HOURS)) + [8 * 24 + h for h in range(old)]
    insert = sa.text(
        "INSERT INTO runs (job_id, job_name, job_revision, slot, trigger, attempt, status, host,"
        " pid, claimed_at, started_at, finished_at, heartbeat_at, exit_code, duration_seconds,"
        " output_bytes, output_truncated, schedctl_version) VALUES (:j, :n, 1, :s, 'timer', 1,"
        " :st, 'host-1', 1000, :c, :b, :f, :f, :x, :d, 120, false, 'bench')"
    )
    step = 200
    for first in range(0, len(hours), step):
        batch = hours[first : first + step]
        with engine.begin() as conn:
            if pg and batch[0] >= 8 * 24:
                conn.execute(sa.text(
                    "INSERT INTO runs (job_id, job_name, job_revision, slot, trigger, attempt,"
                    " status, host, pid, claimed_at, started_at, finished_at, heartbeat_at,"
                    " exit_code, duration_seconds, output_bytes, output_truncated,"
                    " schedctl_version)"
                    " SELECT j, 'job-' || lpad(j::text, 4, '0'), 1, s, 'timer', 1,"
                    " CASE WHEN f THEN 'failed' ELSE 'succeeded' END, 'host-1', 1000,"
                    " s + interval '0.4 s', s + interval '0.5 s', s + (0.5 + d) * interval '1 s',"
                    " s + (0.5 + d) * interval '1 s', CASE WHEN f THEN 1 ELSE 0 END, d, 120,"
                    " false, 'bench'"
                    " FROM unnest(CAST(:hours AS int[])) k, generate_series(1, CAST(:n AS int)) j,"
                    " LATERAL (SELECT CAST(:now AS timestamptz) - k * interval '1 hour'"
                    "   + (j % 60) * interval '1 minute' AS s, 1 + (k * 31 + j) % 30 AS d,"
                    "   (k * 7 + j * 13) % 50 = 0 AS f) x ORDER BY k DESC, j"
                ), {"hours": batch, "n": JOBS, "now": now_h})  # fmt: skip
            else:
                conn.execute(insert, [
                    {"j": j, "n": n, "s": _ts(s, pg), "st": st, "c": _ts(c, pg), "b": _ts(b, pg),
                     "f": _ts(f, pg), "x": x, "d": d}
                    for j, n, s, st, c, b, f, x, d in _scale_rows(batch, now_h)
                ])  # fmt: skip
    with engine.begin() as conn:
        conn.execute(sa.text(
            "UPDATE runs SET status = 'running', finished_at = NULL, duration_seconds = NULL"
            " WHERE id IN (SELECT id FROM runs WHERE claimed_at >= :r ORDER BY claimed_at DESC"
            " LIMIT 10)"
        ), {"r": _ts(recent_from, pg)})  # fmt: skip
        total = conn.execute(sa.text("SELECT count(*) FROM runs")).scalar_one()
    loaded = time.perf_counter() - start
    rebuild = 0.0
    if has_counts:
        t = time.perf_counter()
        with engine.begin() as conn:
            if pg:
                conn.execute(sa.text("ALTER TABLE runs ENABLE TRIGGER USER"))
            for sql in triggers:
                conn.execute(sa.text(sql))
            conn.execute(sa.text("DELETE FROM run_counts"))
            conn.execute(sa.text(
                "INSERT INTO run_counts (job_name, status, total) SELECT job_name, status,"
                " count(*) FROM runs WHERE status <> 'running' GROUP BY job_name, status"
            ))  # fmt: skip
        rebuild = time.perf_counter() - t
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE" if pg else "ANALYZE"))
    engine.dispose()
    return int(total), loaded, rebuild


def _ts(value: datetime, pg: bool) -> Any:
    return value if pg else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def scaling(urls: dict[str, str], repeat: int, binary: str) -> list[list[str]]:
    """Time each command end to end against each database, interleaved; medians and ratios."""
    import os

    samples: dict[tuple[str, str], list[float]] = {}
    envs = {
        size: {**os.environ, "SCHEDCTL_DATABASE_URL": url, "NO_COLOR": "1", "COLUMNS": "200"}
        for size, url in urls.items()
    }
    for rnd in range(repeat + 1):
        for name, args in SCALE_COMMANDS.items():
            for size, env in envs.items():
                t = time.perf_counter()
                done = subprocess.run([binary, *args], env=env, capture_output=True, check=False)
                took = time.perf_counter() - t
                if done.returncode not in (0, 1, 2):
                    raise SystemExit(f"{name} on {size}: exit {done.returncode}: {done.stderr!r}")
                if rnd:  # the first round warms caches
                    samples.setdefault((name, size), []).append(took * 1000)
    small, big = list(urls)
    out = []
    for name in SCALE_COMMANDS:
        a = statistics.median(samples[(name, small)])
        b = statistics.median(samples[(name, big)])
        out.append([name, f"{a:.0f}", f"{b:.0f}", f"{b / a:.2f}"])
    return out


def run_scaling(args: argparse.Namespace) -> None:
    """Load a small and a large history on each backend and time the commands over both.

    With --before BIN, time that schedctl first, then upgrade the same databases with this one
    (timing the migration) and time this one: before and after over the same rows.
    """
    import os
    import tempfile

    backends = args.backends.split(",")
    sizes = {"sqlite": (RECENT_HOURS, args.sqlite_hours), "postgresql": (RECENT_HOURS, args.hours)}
    server = start_server() if "postgresql" in backends else None
    tmp = tempfile.TemporaryDirectory()
    binaries = ([("before", args.before)] if args.before else []) + [("this", SCHEDCTL)]
    try:
        for backend in backends:
            urls: dict[str, str] = {}
            for hours in sizes[backend]:
                if backend == "postgresql":
                    assert server is not None
                    url = server.url(server.create_database())
                else:
                    url = f"sqlite:///{tmp.name}/h{hours}.db"
                env = {**os.environ, "SCHEDCTL_DATABASE_URL": url}
                subprocess.run([binaries[0][1], "db", "upgrade"], env=env, check=True,
                               capture_output=True)  # fmt: skip
                total, seconds, rebuild = load_scaled(url, hours)
                urls[f"{total:,} runs"] = url
                print(f"{backend}: {JOBS:,} jobs, {total:,} runs (loaded in {seconds:.0f} s;"
                      f" run counters rebuilt from history in {rebuild:.1f} s)", flush=True)  # fmt: skip
            for which, binary in binaries:
                if which == "this" and args.before:
                    for label, url in urls.items():
                        env = {**os.environ, "SCHEDCTL_DATABASE_URL": url}
                        t = time.perf_counter()
                        subprocess.run([binary, "db", "upgrade"], env=env, check=True,
                                       capture_output=True)  # fmt: skip
                        print(f"{backend}: db upgrade with {label}:"
                              f" {time.perf_counter() - t:.1f} s", flush=True)  # fmt: skip
                table(f"Against history size, {backend}, {which} (end to end, median ms of"
                      f" {args.repeat}, interleaved)", ["command", *urls, "ratio"],
                      scaling(urls, args.repeat, binary))  # fmt: skip
                sys.stdout.flush()
    finally:
        tmp.cleanup()
        if server is not None:
            destroy(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=int, default=10_002, help="runs per job (one an hour)")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="time metrics, report and check over ~10 k against --hours runs",
    )
    parser.add_argument("--backends", default="postgresql,sqlite", help="for --scaling")
    parser.add_argument("--sqlite-hours", type=int, default=1_000, help="for --scaling")
    parser.add_argument("--before", help="for --scaling: another schedctl binary to time first")
    args = parser.parse_args()
    if args.scaling:
        run_scaling(args)
        return
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
