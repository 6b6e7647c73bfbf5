"""A connection storm: 300 hosts fire the same 10 jobs at once at a server of 40 connections."""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import pytest
from cli_helpers import BIN, make_cli, ok, one_line_error
from pgserver import destroy, start_server
from storm import fire, storm_server_user

# The longest budget `run` allows: the 300 clients here share the machine's CPUs with the
# server and with each other, so each holds its connection many times longer than a host
# of its own would.
BUDGET = "45"
REFUSED = re.compile(r"refused \d+ connections? over (\d+) s .*raise its max_connections")


@pytest.mark.slow
def test_three_hundred_hosts_against_forty_connections_run_every_slot_once() -> None:
    server = start_server(settings={"max_connections": "40"})
    work = Path(tempfile.mkdtemp(prefix="schedctl-storm-"))
    try:
        url = storm_server_user(server)
        storm = fire(
            str(BIN), server, url, work, processes=300, jobs=10,
            extra_env={"SCHEDCTL_CONNECT_RETRY": BUDGET}, hold_until_refused=30,
        )  # fmt: skip
    finally:
        destroy(server)
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"\nstorm: exit codes {dict(storm.codes)}, {storm.refused} refused connections, "
        f"launched in {storm.launch_seconds:.2f} s, server held full for "
        f"{storm.held_seconds:.1f} s, settled in {storm.settle_seconds:.1f} s"
    )
    # The server was full when the hosts were released (how fast 300 processes start decides
    # whether they would fill it by themselves: on a quick machine they did not): hosts were
    # refused, and every slot ran once all the same.
    assert storm.refused >= 30, storm
    # Every slot ran, once: one marker line per job, one run row per job.
    assert storm.slots_run == 10 and storm.slots_run_twice == 0, storm
    assert storm.runs_per_slot == {f"storm-{j}": 1 for j in range(10)}, storm
    assert storm.tracebacks == 0, storm.errors
    # Refused connections were tried again: a host fails closed only once the whole budget
    # is spent, with one line saying so, and then rarely (without retries: most hosts).
    assert set(storm.codes) <= {0, 75}, storm.errors
    for line in storm.errors:
        found = REFUSED.search(line)
        assert line.startswith("75: schedctl: error: ") and found, line
        assert int(found.group(1)) >= int(BUDGET), line
    assert storm.codes[75] <= 15, storm.errors
    assert storm.settle_seconds < 110, storm


def test_a_full_server_is_tried_again_within_the_budget_then_refused_in_one_line(
    tmp_path: Path,
) -> None:
    # Five connections, three kept for the superuser: an ordinary role gets two.
    server = start_server(settings={"max_connections": "5"})
    try:
        url = storm_server_user(server)
        cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url)
        ok(cli("db", "upgrade"))
        side = tmp_path / "side"
        ok(cli("add", "late", "-s", "@yearly", "--shell", "--", f"echo ran >> {side}"))
        holders = [psycopg.connect(url, autocommit=True) for _ in range(2)]
        # Full: a one-shot command retries for its budget, then fails closed in one line.
        started = time.monotonic()
        refused = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url, SCHEDCTL_CONNECT_RETRY="2")("list")
        waited = time.monotonic() - started
        one_line_error(refused, 75, "connection slot free: raise its max_connections")
        assert REFUSED.search(refused.err), refused.err
        assert "remaining connection slots are reserved" in refused.err, refused.err
        assert 2 <= waited < 15, waited
        # Every slot taken, the superuser's too: the server's other refusal, same answer.
        reserved = [server.admin() for _ in range(3)]
        full = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url, SCHEDCTL_CONNECT_RETRY="1")("list")
        one_line_error(full, 75, "(sorry, too many clients already); it has no connection slot")
        for r in reserved:
            r.close()

        # A slot freed within `run`'s budget: the run connects and its job runs, late.
        def free() -> None:
            for h in holders:
                h.close()

        threading.Timer(3, free).start()
        started = time.monotonic()
        ran = cli("run", "late", "--now")
        waited = time.monotonic() - started
        assert ran.rc == 0, ran.err
        assert side.read_text() == "ran\n"
        assert 3 <= waited < 30, waited
        # A budget that is no number of seconds in range is refused before anything runs.
        for bad in ("abc", "-1", "nan", "46", "1_0", "\u0663", "1e-320"):
            wrong = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url, SCHEDCTL_CONNECT_RETRY=bad)
            one_line_error(wrong("run", "late", "--now"), 78, "SCHEDCTL_CONNECT_RETRY")
        assert side.read_text() == "ran\n"
    finally:
        destroy(server)
