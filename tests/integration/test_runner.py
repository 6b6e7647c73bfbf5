"""The job supervisor with real processes: exit codes, output, timeouts, signals, memory."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import alive, cgroup_usable

from schedctl import proctree
from schedctl.runner import RunRequest, Supervisor

DRIVER = Path(__file__).with_name("runner_driver.py")


def drive(spec: dict[str, Any], *, send: int | None = None, after: float = 0.5) -> dict[str, Any]:
    """Run the driver; optionally send it `send` once the job has had `after` seconds to start."""
    proc = subprocess.Popen(
        [sys.executable, str(DRIVER), json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if send is not None:
        time.sleep(after)
        proc.send_signal(send)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def test_exit_code_output_and_environment(tmp_path: Path) -> None:
    out_file = tmp_path / "out"
    with out_file.open("wb") as out:
        outcome = Supervisor(
            RunRequest(
                ["sh", "-c", 'echo "$GREETING from $(pwd)"; echo oops >&2; exit 3'],
                env={"GREETING": "hello", "PATH": "/usr/bin:/bin"},
                cwd=str(tmp_path),
            ),
            stdout_fd=out.fileno(),
            stderr_fd=out.fileno(),
        ).run()
    assert outcome.exit_code == 3
    assert outcome.signal is None and not outcome.timed_out
    assert out_file.read_text() == f"hello from {tmp_path}\noops\n"  # streamed through unchanged
    assert outcome.tail == f"hello from {tmp_path}\noops\n"
    assert outcome.total_bytes == len(outcome.tail) and not outcome.truncated


def test_tail_is_bounded_and_keeps_the_end() -> None:
    script = "import sys; sys.stdout.write('x' * 1_000_000 + 'THE END\\n')"
    result = drive({"argv": [sys.executable, "-c", script], "output_limit": 1024})
    assert result["total_bytes"] == 1_000_008
    assert result["truncated"] is True
    assert len(result["tail"]) == 1024
    assert result["tail"].endswith("THE END\n")


def test_non_utf8_output_is_kept_with_replacement_characters(tmp_path: Path) -> None:
    out_file = tmp_path / "out"
    with out_file.open("wb") as out:
        outcome = Supervisor(
            RunRequest(["printf", "caf\\351 \\377\\n"], env={"PATH": "/usr/bin:/bin"}),
            stdout_fd=out.fileno(),
        ).run()
    assert out_file.read_bytes() == b"caf\xe9 \xff\n"  # passed through byte for byte
    assert outcome.tail == "caf\ufffd \ufffd\n"


def test_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = f"sleep 60 & echo $! > {pids}; sleep 60"
    started = time.monotonic()
    outcome = Supervisor(
        RunRequest(["sh", "-c", script], env={"PATH": "/usr/bin:/bin"}, timeout=0.5, grace=2)
    ).run()
    assert time.monotonic() - started < 3
    assert outcome.timed_out and outcome.exit_code == 124
    grandchild = int(pids.read_text())
    assert not alive(grandchild)


def test_a_job_ignoring_sigterm_is_killed_after_the_grace() -> None:
    started = time.monotonic()
    outcome = Supervisor(
        RunRequest(
            ["sh", "-c", "trap '' TERM; sleep 60"],
            env={"PATH": "/usr/bin:/bin"},
            timeout=0.3,
            grace=0.7,
        )
    ).run()
    elapsed = time.monotonic() - started
    assert outcome.exit_code == 124 and outcome.signal == signal.SIGKILL
    assert 0.9 < elapsed < 3


def test_leftover_background_processes_are_stopped(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # The leftover closes its output, so only the process-group sweep can find it.
    script = f"nohup sleep 60 >/dev/null 2>&1 & echo $! > {pids}; exit 0"
    outcome = Supervisor(
        RunRequest(["sh", "-c", script], env={"PATH": "/usr/bin:/bin"}, grace=2)
    ).run()
    assert outcome.exit_code == 0
    assert not alive(int(pids.read_text()))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signals_to_schedctl_are_forwarded_to_the_group(tmp_path: Path, sig: int) -> None:
    pids = tmp_path / "pids"
    script = f"sleep 60 & echo $! > {pids}; sleep 60"
    result = drive({"argv": ["sh", "-c", script], "grace": 2}, send=sig, after=0.7)
    assert result["forwarded"] == sig
    assert result["exit_code"] == 128 + sig
    assert result["duration"] < 5
    assert not alive(int(pids.read_text()))


def test_stop_from_the_heartbeat_tick_ends_the_job() -> None:
    # This is how a lost database session stops a job (lock_lost).
    result = drive(
        {"argv": ["sleep", "60"], "tick_interval": 0.2, "stop_after_ticks": 2, "grace": 2}
    )
    assert result["stopped"] == "lock_lost"
    assert result["ticks"] >= 2
    assert result["exit_code"] == 128 + signal.SIGTERM
    assert result["duration"] < 5


def test_200_mb_of_output_in_bounded_memory() -> None:
    script = "import os\nblock = b'y' * 1048576\nfor _ in range(200):\n    os.write(1, block)\n"
    result = drive({"argv": [sys.executable, "-c", script]})
    assert result["exit_code"] == 0
    assert result["total_bytes"] == 200 * 1048576
    assert len(result["tail"]) == 65536
    # The supervisor's peak RSS stays far below the output size (Python itself is ~20 MiB).
    assert result["peak_rss_kib"] < 48 * 1024, result["peak_rss_kib"]


# -- processes that leave the job's process group ---------------------------------------------

ESCAPE = (
    # A grandchild in a session of its own, its output elsewhere: neither the process group nor
    # the pipes lead to it.
    "setsid sh -c 'echo $$ > {pids}; exec sleep 60' </dev/null >/dev/null 2>&1 &\n"
    "while [ ! -s {pids} ]; do sleep 0.02; done\n"
)


@pytest.mark.parametrize("cgroup", [True, False], ids=["cgroup", "subreaper-only"])
@pytest.mark.parametrize("how", ["main-exits", "timeout", "signal", "lock-lost"])
def test_processes_that_left_the_group_are_stopped(tmp_path: Path, how: str, cgroup: bool) -> None:
    if cgroup and not cgroup_usable():
        pytest.skip("no cgroup2 hierarchy schedctl may write to here (needs root, not read-only)")
    pids = tmp_path / "pids"
    script = ESCAPE.format(pids=pids) + ("exit 0" if how == "main-exits" else "sleep 60")
    spec: dict[str, Any] = {"argv": ["sh", "-c", script], "grace": 2, "cgroup": cgroup}
    if how == "timeout":
        spec["timeout"] = 1
    if how == "lock-lost":
        spec.update(tick_interval=0.5, stop_after_ticks=2)
    result = drive(spec, send=signal.SIGTERM if how == "signal" else None, after=1)
    escaped = int(pids.read_text())
    assert not alive(escaped), f"pid {escaped} outlived its run ({how})"
    assert result["duration"] < 5
    assert result["survivors"] == 0
    assert result["in_cgroup"] is cgroup
    expected = {
        "main-exits": ("exit_code", 0),
        "timeout": ("timed_out", True),
        "signal": ("forwarded", signal.SIGTERM),
        "lock-lost": ("stopped", "lock_lost"),
    }[how]
    assert result[expected[0]] == expected[1]


def test_timeout_is_enforced_while_an_escaped_process_holds_the_output(tmp_path: Path) -> None:
    # The leftover keeps the job's stdout open: reading until EOF alone would wait for it.
    script = "setsid sleep 20 & sleep 20"
    result = drive({"argv": ["sh", "-c", script], "timeout": 1, "grace": 2})
    assert result["timed_out"] and result["exit_code"] == 124
    assert result["duration"] < 5


def test_a_job_that_closes_its_output_still_times_out() -> None:
    result = drive(
        {"argv": ["sh", "-c", "exec >/dev/null 2>&1; sleep 20"], "timeout": 1, "grace": 2}
    )
    assert result["timed_out"] and result["exit_code"] == 124
    assert result["duration"] < 5


def test_a_leftover_ignoring_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = (
        f"setsid sh -c 'trap \"\" TERM; echo $$ > {pids}; while :; do sleep 0.1; done' "
        f"</dev/null >/dev/null 2>&1 &\nwhile [ ! -s {pids} ]; do sleep 0.02; done\nexit 0"
    )
    result = drive({"argv": ["sh", "-c", script], "grace": 1})
    assert result["exit_code"] == 0
    assert 1 <= result["duration"] < 4
    assert not alive(int(pids.read_text()))


def test_orphans_that_exit_are_reaped_and_the_runner_stays_no_subreaper() -> None:
    before = proctree.set_subreaper(False)
    ours = set(proctree.children(os.getpid()))
    try:
        outcome = Supervisor(
            RunRequest(
                ["sh", "-c", "for i in 1 2 3; do (sleep 0.1 &) ; done; sleep 0.5"],
                env={"PATH": "/usr/bin:/bin"},
            )
        ).run()
        assert outcome.exit_code == 0
        assert set(proctree.children(os.getpid())) <= ours  # no zombie left behind
        assert proctree.set_subreaper(False) is False  # the setting was put back
    finally:
        proctree.set_subreaper(before)


# -- the stored tail ---------------------------------------------------------------------------


def test_tail_of_invalid_utf8_is_bounded_in_bytes_and_memory(tmp_path: Path) -> None:
    limit = 16 * 1024 * 1024
    data = random.Random(15).randbytes(20_000_000)
    source = tmp_path / "random.bin"
    source.write_bytes(data)
    result = drive({"argv": ["cat", str(source)], "output_limit": limit})
    assert result["total_bytes"] == len(data) and result["truncated"] is True
    # Replacement characters take 3 bytes each: the limit holds for what is stored.
    assert limit - 4 < result["tail_bytes"] <= limit
    assert data.decode("utf-8", "replace").replace("\0", "\ufffd").endswith(result["tail"])
    # The raw tail plus its replaced text, not many copies of it (it was 4.8 times the limit).
    grown = result["peak_rss_kib"] - result["base_rss_kib"]
    assert grown < 3.5 * limit / 1024, grown


def test_an_error_while_supervising_stops_the_whole_job(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = ESCAPE.format(pids=pids) + "sleep 60"

    def failing_tick() -> None:
        raise BrokenPipeError("stderr went away")  # as when the runner's own stderr is gone

    supervisor = Supervisor(RunRequest(["sh", "-c", script], env={"PATH": "/usr/bin:/bin"}))
    with pytest.raises(BrokenPipeError):
        supervisor.run(tick=failing_tick, tick_interval=1)
    assert not alive(int(pids.read_text()))
    assert supervisor.pid is not None and not alive(supervisor.pid)
