"""What `metrics`, `report` and `check` read does not grow with history (PostgreSQL).

History older than the report window is written straight into the database; the test counts,
from PostgreSQL's own statistics, how many rows of `runs` (table and index entries) each
command read. A command that scans history reads them all.
"""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
from cli_helpers import make_cli, ok

OLD_RUNS_PER_JOB = 8000
JOBS = 5


def runs_read(url: str) -> int:
    """Return the rows of `runs` (heap and index entries) read so far, once the count settles."""
    query = (
        "SELECT coalesce(seq_tup_read, 0) + coalesce((SELECT sum(idx_tup_read)"
        " FROM pg_stat_user_indexes WHERE relname = 'runs'), 0)"
        " FROM pg_stat_user_tables WHERE relname = 'runs'"
    )
    seen = None
    deadline = time.monotonic() + 10
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            # A backend reports its statistics as it exits: wait until the command's has.
            others = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
            conn.execute("SELECT pg_stat_clear_snapshot()")
            row = conn.execute(query).fetchone()
            assert others is not None and row is not None
            if others[0] == 0 and row[0] == seen:
                return int(row[0])
            seen = row[0]
            assert time.monotonic() < deadline, "the statistics never settled"
            time.sleep(0.3)


def test_metrics_report_and_check_read_no_history_outside_their_window(
    pg_url: str, tmp_path: Path
) -> None:
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url)
    ok(cli("db", "upgrade"))
    for k in range(JOBS):
        ok(cli("add", f"job{k}", "-s", "@hourly", "--", "true"))
        ok(cli("run", f"job{k}", "--now"))
    with psycopg.connect(pg_url, autocommit=True) as conn:
        # Hourly runs of the year before last week, as an older schedctl left them.
        conn.execute(
            "INSERT INTO runs (job_id, job_name, job_revision, slot, trigger, attempt, status,"
            " host, claimed_at, started_at, finished_at, duration_seconds, exit_code,"
            " output_bytes, output_truncated, schedctl_version)"
            " SELECT j.id, j.name, 1, s, 'timer', 1, CASE WHEN h %% 7 = 0 THEN 'failed'"
            " ELSE 'succeeded' END, 'old-host', s, s, s + interval '2 s', 2,"
            " CASE WHEN h %% 7 = 0 THEN 1 ELSE 0 END, 0, false, 'old'"
            " FROM jobs j, generate_series(1, %s) h,"
            " LATERAL (SELECT date_trunc('hour', now()) - interval '8 days'"
            "   - h * interval '1 hour' AS s) x",
            (OLD_RUNS_PER_JOB,),
        )
        conn.execute("ANALYZE runs")
    history = JOBS * OLD_RUNS_PER_JOB
    read = {}
    for args in (["metrics"], ["report", "--since", "7d", "--json"], ["check"]):
        before = runs_read(pg_url)
        assert cli(*args).rc in (0, 1, 2)
        read[args[0]] = runs_read(pg_url) - before
    # A few index entries per job (newest run, newest success and failure, the window), never
    # the history behind them.
    assert all(n < history / 20 for n in read.values()), read
