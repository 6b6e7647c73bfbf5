"""What a killed runner left behind, found and stopped by the next run: real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import alive

from schedctl import proctree
from schedctl.proctree import Proc, boot_id, identify, record_dir, stop_leftovers

JOB_ID = 42
# Random per test process: parallel workers must not find each other's marked processes.
TOKEN = os.urandom(8).hex()


@pytest.fixture
def procs_dir(tmp_path: Path) -> Path:
    return record_dir(tmp_path / "procs")


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; whatever is left of them is killed afterwards."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        p.kill()
        p.wait()


def sleeper(started: list[subprocess.Popen[bytes]], **env: str) -> Proc:
    p = subprocess.Popen(["sleep", "60"], env={"PATH": "/usr/bin:/bin", **env})
    started.append(p)
    proc = identify(p.pid)
    assert proc is not None
    return proc


def dead_runner() -> Proc:
    """A runner identity that no running process has (its process has exited)."""
    p = subprocess.Popen(["true"])
    p.wait()
    return Proc(p.pid, 1)


def write_record(directory: Path, run_id: int, **fields: Any) -> Path:
    data = {
        "boot": boot_id(),
        "runner": list(dead_runner()),
        "job": "nightly",
        "run_id": run_id,
        "token": TOKEN,
        "cgroup": None,
        "procs": [],
        **fields,
    }
    path = directory / f"{JOB_ID}-{run_id}-1.json"
    path.write_text(json.dumps(data))
    return path


def test_recorded_processes_of_a_dead_runner_are_stopped(
    procs_dir: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    recorded = sleeper(started)
    reused = sleeper(started)  # same pid, other start time: a pid taken over since
    path = write_record(procs_dir, 7, procs=[list(recorded), [reused.pid, reused.start + 1]])
    left = stop_leftovers(procs_dir, JOB_ID, grace=2)
    assert left.runs == [7] and left.stopped == 1 and left.survivors == 0
    started[0].wait(timeout=5)
    assert not alive(recorded.pid)
    assert alive(reused.pid)
    assert not path.exists()


def test_unrecorded_ones_are_found_by_the_run_id_in_their_environment(
    procs_dir: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    # Started after the runner last wrote its record: only the inherited environment says whose.
    marks = {"SCHEDCTL_JOB": "nightly", "SCHEDCTL_RUN_TOKEN": TOKEN}
    marked = sleeper(started, **marks, SCHEDCTL_RUN_ID="7")
    other_run = sleeper(started, **marks, SCHEDCTL_RUN_ID="70")
    other_job = sleeper(started, **{**marks, "SCHEDCTL_JOB": "weekly"}, SCHEDCTL_RUN_ID="7")
    # Another database's (or user's) job `nightly` whose run is also run 7.
    namesake = sleeper(started, SCHEDCTL_JOB="nightly", SCHEDCTL_RUN_ID="7", SCHEDCTL_RUN_TOKEN="0")
    write_record(procs_dir, 7)
    left = stop_leftovers(procs_dir, JOB_ID, grace=2)
    assert left.stopped == 1
    started[0].wait(timeout=5)
    assert not alive(marked.pid)
    assert alive(other_run.pid) and alive(other_job.pid) and alive(namesake.pid)


def test_a_record_without_a_token_stops_only_what_it_lists(
    procs_dir: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    # Written before runs had tokens: job and run id alone could be another database's.
    recorded = sleeper(started)
    namesake = sleeper(started, SCHEDCTL_JOB="nightly", SCHEDCTL_RUN_ID="7")
    path = write_record(procs_dir, 7, procs=[list(recorded)])
    data = json.loads(path.read_text())
    del data["token"]
    path.write_text(json.dumps(data))
    left = stop_leftovers(procs_dir, JOB_ID, grace=2)
    assert left.runs == [7] and left.stopped == 1
    started[0].wait(timeout=5)
    assert not alive(recorded.pid) and alive(namesake.pid)
    assert not path.exists()


def test_a_record_of_a_runner_still_running_is_left_to_it(
    procs_dir: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    # Under the `allow` policy, runs of one job overlap on purpose.
    job = sleeper(started)
    me = identify(os.getpid())
    assert me is not None
    path = write_record(procs_dir, 8, runner=list(me), procs=[list(job)])
    assert stop_leftovers(procs_dir, JOB_ID, grace=2).runs == []
    assert alive(job.pid) and path.exists()


def test_a_record_from_an_earlier_boot_is_dropped_untouched(
    procs_dir: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    job = sleeper(started)
    path = write_record(procs_dir, 9, boot="an-earlier-boot", procs=[list(job)])
    assert stop_leftovers(procs_dir, JOB_ID, grace=2).runs == []
    assert alive(job.pid) and not path.exists()


def test_only_cgroups_schedctl_made_are_killed(
    procs_dir: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    root = proctree.cgroup_root()
    if root is None or not os.access(root, os.W_OK):
        pytest.skip("needs a writable cgroup2 hierarchy (root)")
    other = root / f"not-schedctl-{os.getpid()}"
    other.mkdir()
    try:
        job = sleeper(started)
        (other / "cgroup.procs").write_text(str(job.pid))
        write_record(procs_dir, 10, cgroup=str(other))
        stop_leftovers(procs_dir, JOB_ID, grace=2)
        assert alive(job.pid)  # a forged record cannot have another cgroup killed
    finally:
        started[0].kill()
        started[0].wait()
        other.rmdir()


def test_a_record_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(OSError, match="writable by others"):
        record_dir(shared)


CLEANER = """
import json, sys, time
from pathlib import Path
from schedctl.proctree import stop_leftovers
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.001)
print(json.dumps(stop_leftovers(Path(sys.argv[1]), int(sys.argv[3]), grace=2).runs))
"""


@pytest.mark.parametrize("listed", [True, False], ids=["processes-left", "nothing-started"])
def test_runs_started_together_clean_up_a_record_once_and_none_fails(
    procs_dir: Path, tmp_path: Path, started: list[subprocess.Popen[bytes]], listed: bool
) -> None:
    # Runs of an `allow` job started together after a runner was killed (or lost its session
    # before its job started, leaving an empty record) all find its record: those that lost
    # the race to remove it failed on the file being gone.
    procs = [list(sleeper(started))] if listed else []
    path = write_record(procs_dir, 11, procs=procs)
    go = tmp_path / "go"
    argv = [sys.executable, "-c", CLEANER, str(procs_dir), str(go), str(JOB_ID)]
    pipe = subprocess.PIPE
    cleaners = [subprocess.Popen(argv, stdout=pipe, stderr=pipe, text=True) for _ in range(12)]
    time.sleep(1)  # every one of them waiting for the go
    go.touch()
    done = [(p.communicate(timeout=60), p.returncode) for p in cleaners]
    assert [rc for _, rc in done] == [0] * 12, [err for (_, err), rc in done if rc]
    runs = [json.loads(out) for (out, _), _ in done]
    assert sorted(runs) == ([[]] * 11 + [[11]] if listed else [[]] * 12)  # stopped by one
    assert not path.exists()
    if listed:
        assert not alive(started[0].pid)
