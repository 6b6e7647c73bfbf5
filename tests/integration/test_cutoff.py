"""A host cut off from PostgreSQL without its TCP connection closing: both ends give up in time."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from schedctl.db.connector import PG_SESSION_OPTIONS
from schedctl.models import DEFAULT_FENCE_SECONDS, DEFAULT_HEARTBEAT_SECONDS


def _server_setting(name: str) -> float:
    found = re.search(rf"-c {name}=(\d+)", PG_SESSION_OPTIONS)
    assert found, name
    return float(found.group(1))


@pytest.mark.slow
def test_a_host_cut_off_loses_its_lock_on_the_server_and_stops_its_job_in_time() -> None:
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("unshare", "nsenter", "ip")):
        pytest.skip("needs root, unshare, nsenter and ip to build two network namespaces")
    done = subprocess.run(
        ["unshare", "--net", sys.executable, str(Path(__file__).with_name("cutoff_driver.py"))],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.splitlines()[-1])
    print(f"\ncut off: {figures}")
    # The server: its keepalives probe an idle session after tcp_keepalives_idle, and give up
    # after tcp_keepalives_count unanswered probes tcp_keepalives_interval apart (sooner with
    # tcp_user_timeout): the session ends and the advisory lock with it.
    window = _server_setting("tcp_keepalives_idle") + _server_setting(
        "tcp_keepalives_interval"
    ) * _server_setting("tcp_keepalives_count")
    assert figures["lock_freed"] < window, figures
    assert figures["session_gone"] < window, figures
    # The host: the first heartbeat after the cut goes unanswered, the job is stopped; within
    # the fence the next holder of the lock waits out (heartbeat, reply timeout, kill grace).
    assert figures["job_gone"] < DEFAULT_FENCE_SECONDS, figures
    assert figures["job_gone"] > DEFAULT_HEARTBEAT_SECONDS / 2, figures  # it did run on first
    assert "run.lock_lost" in figures["events"] and "run.spooled" in figures["events"], figures
    # The spooled result, written by the host's next command once the network is back.
    assert figures["statuses"] == ["lock_lost"], figures
    assert not figures["traceback"], figures
