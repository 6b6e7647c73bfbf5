"""Run one job under the Supervisor in its own process (so tests can signal it and measure it).

Usage: python runner_driver.py JSON_REQUEST; the job's output goes to /dev/null unless
"passthrough" is set, and the outcome is printed as JSON on the last line of stdout.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from schedctl.runner import RunRequest, Supervisor

spec = json.loads(sys.argv[1])
request = RunRequest(
    argv=spec["argv"],
    env={**os.environ, **spec.get("env", {})},
    cwd=spec.get("cwd"),
    timeout=spec.get("timeout"),
    output_limit=spec.get("output_limit", 65536),
    grace=spec.get("grace", 10.0),
    cgroup=spec.get("cgroup", True),
)
null = os.open(os.devnull, os.O_WRONLY)
out_fd = 1 if spec.get("passthrough") else null
supervisor = Supervisor(request, stdout_fd=out_fd, stderr_fd=out_fd if out_fd != 1 else 2)
stop_after = spec.get("stop_after_ticks")
ticks: list[float] = []


def tick() -> None:
    ticks.append(1.0)
    if stop_after is not None and len(ticks) >= stop_after:
        supervisor.stop("lock_lost")


def vm(key: str) -> int:
    """Return a /proc/self/status memory figure in KiB."""
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith(key))


base_rss_kib = vm("VmRSS:")
print(f"started {os.getpid()}", file=sys.stderr, flush=True)
outcome = supervisor.run(tick=tick, tick_interval=spec.get("tick_interval", 5.0))
# VmHWM, not getrusage(): ru_maxrss survives execve and would include the forking parent.
peak_rss_kib = vm("VmHWM:")  # before anything below makes copies of the tail
result = {
    "exit_code": outcome.exit_code,
    "signal": outcome.signal,
    "timed_out": outcome.timed_out,
    "forwarded": outcome.forwarded,
    "stopped": outcome.stopped,
    "duration": outcome.duration,
    "tail": outcome.tail,
    "tail_bytes": len(outcome.tail.encode()),
    "total_bytes": outcome.total_bytes,
    "truncated": outcome.truncated,
    "in_cgroup": outcome.in_cgroup,
    "survivors": outcome.survivors,
    "ticks": len(ticks),
    "peak_rss_kib": peak_rss_kib,
    "base_rss_kib": base_rss_kib,
}
sys.stdout.write("\n" + json.dumps(result) + "\n")
