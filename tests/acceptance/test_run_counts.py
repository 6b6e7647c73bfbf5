"""`schedctl_runs_total`, through the installed binary: counted as runs finish, on both backends.

The counters are Prometheus counters: `prune` must not lower them, and they must equal the
runs that really finished, whoever wrote the result (concurrent runs, a spooled result).
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

from cli_helpers import BIN, Cli, age_runs, ok, run_rows
from prometheus_client.parser import text_string_to_metric_families
from test_spool import spool_file


def totals(cli: Cli) -> dict[tuple[str, str], float]:
    """Return metrics' schedctl_runs_total by (job, status)."""
    return {
        (s.labels["job"], s.labels["status"]): s.value
        for f in text_string_to_metric_families(ok(cli("metrics")).out)
        for s in f.samples
        if s.name == "schedctl_runs_total"
    }


def finished(url: str) -> Counter[tuple[str, str]]:
    """Count the finished runs the database holds, by (job, status)."""
    return Counter((r["job_name"], r["status"]) for r in run_rows(url) if r["status"] != "running")


def test_runs_total_does_not_drop_when_prune_deletes_runs(
    backend: tuple[Cli, str, dict[str, str]],
) -> None:
    cli, url, _ = backend
    ok(cli("add", "fine", "-s", "@daily", "--", "true"))
    ok(cli("add", "broken", "-s", "@daily", "--", "false"))
    for _ in range(3):
        ok(cli("run", "fine", "--now"))
        assert cli("run", "broken", "--now").rc == 1
    before = totals(cli)
    assert before == {("fine", "succeeded"): 3, ("broken", "failed"): 3}
    for job in ("fine", "broken"):
        age_runs(url, job, 3 * 86400)
    ok(cli("prune", "--older-than", "1d", "--keep-failed", "1d"))
    assert run_rows(url) == []  # manual runs hold no slot: prune took them all
    assert totals(cli) == before
    ok(cli("run", "fine", "--now"))  # and counting goes on from there
    assert totals(cli) == {("fine", "succeeded"): 4, ("broken", "failed"): 3}


def test_runs_total_equals_the_finished_runs_after_parallel_runs(
    backend: tuple[Cli, str, dict[str, str]],
) -> None:
    cli, url, env = backend
    # Two runners per job at once: one runs, the other may find it running (skipped_overlap).
    for k in range(10):
        ok(cli("add", f"j{k}", "-s", "@daily", "--shell", "--", f"sleep 0.2; exit {k % 3}"))
    procs = [
        subprocess.Popen(
            [str(BIN), "run", f"j{k % 10}", "--now"], env=env, stdout=subprocess.DEVNULL
        )
        for k in range(20)
    ]
    for p in procs:
        p.communicate(timeout=300)
    real = finished(url)
    assert sum(real.values()) == 20, real
    assert totals(cli) == real


def test_a_spooled_result_is_counted_once_when_it_lands(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    from schedctl import __version__
    from schedctl.clock import SystemClock
    from schedctl.config import parse_database_url
    from schedctl.db.repository import Claim, open_repository
    from schedctl.models import Trigger

    cli, url, _ = backend
    ok(cli("add", "job", "-s", "@daily", "--", "true"))
    # Runs claimed on a session that stays open while their results wait in the spool, as
    # when the database went away before they ended: not lost, not yet finished.
    db = open_repository(parse_database_url(url), SystemClock(), "test")
    try:
        found = db.load_job("job")
        claim = Claim(found, None, Trigger.MANUAL, 1, "elsewhere", 1, db.now(), 0.0, __version__)
        ids = [db.claim(claim) for _ in range(3)]
        assert None not in ids
        assert totals(cli) == {}  # running runs are not counted (schedctl_running shows them)
        for run_id in ids:
            assert run_id is not None
            spool_file(tmp_path / "data", run_id, status="timed_out", exit_code=124)
        ok(cli("list"))  # flushes the spool
        assert list((tmp_path / "data" / "spool").glob("run-*.json")) == []
        assert totals(cli) == {("job", "timed_out"): 3} == finished(url)
        ok(cli("list"))
        assert totals(cli) == {("job", "timed_out"): 3}
    finally:
        db.close()


def test_a_removed_jobs_counter_stays_with_its_history_and_goes_with_a_purge(
    backend: tuple[Cli, str, dict[str, str]],
) -> None:
    cli, _, _ = backend
    for job in ("kept", "purged"):
        ok(cli("add", job, "-s", "@daily", "--", "true"))
        ok(cli("run", job, "--now"))
    ok(cli("remove", "kept", "--yes"))
    ok(cli("remove", "purged", "--purge", "--yes"))
    assert totals(cli) == {("kept", "succeeded"): 1}
    ok(cli("add", "purged", "-s", "@daily", "--", "true"))  # the name again: counting goes on
    ok(cli("run", "purged", "--now"))
    assert totals(cli) == {("kept", "succeeded"): 1, ("purged", "succeeded"): 2}
