"""What structlog would cost `schedctl run` (run on demand, not a test): prints a table.

    .venv/bin/python bench/log_bench.py [--repeat N]

On the embedded SQLite database in a temporary directory, with the installed schedctl next
to the interpreter: `python -X importtime -c 'import structlog'` (its own cumulative import
time and module count), and the whole-process time of `schedctl run JOB --now` (command
`true`) as shipped beside the same run with structlog imported first, timed round-robin so
a change in the machine's speed affects both alike. Medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable
RUN = "import sys; from schedctl.entry import run; sys.argv = ['schedctl', 'run', 'quick', '--now']; run()"


def import_cost() -> tuple[float, int]:
    """Return structlog's cumulative import time (ms) and how many modules it loads."""
    done = subprocess.run([PY, "-X", "importtime", "-c", "import structlog"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    rows = [ln for ln in done.stderr.splitlines() if ln.startswith("import time:") and "|" in ln]
    base = subprocess.run([PY, "-X", "importtime", "-c", "pass"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    before = {ln.rsplit("|", 1)[-1].strip() for ln in base.stderr.splitlines() if "|" in ln}
    last = rows[-1].split("|")
    new = {ln.rsplit("|", 1)[-1].strip() for ln in rows} - before
    return int(last[1]) / 1000, len(new)


def timed(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=21)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "SCHEDCTL_DATA_DIR": f"{tmp}/data",
               "SCHEDCTL_CONFIG": os.devnull}  # fmt: skip
        schedctl = str(Path(PY).parent / "schedctl")
        subprocess.run([schedctl, "add", "quick", "-s", "@daily", "--", "true"], env=env,
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        variants = {
            "schedctl run --now (as shipped)": [PY, "-c", RUN],
            "the same, structlog imported first": [PY, "-c", "import structlog; " + RUN],
        }
        for args in variants.values():
            timed(args, env)  # warm the page cache
        times: dict[str, list[float]] = {k: [] for k in variants}
        imports: list[float] = []
        for _ in range(opts.repeat):
            for name, args in variants.items():
                times[name].append(timed(args, env))
            imports.append(import_cost()[0])
        modules = import_cost()[1]
    print(f"{'measure':<42} {'median ms':>10}")
    print(f"{'import structlog (cumulative, -X importtime)':<42} "
          f"{statistics.median(imports):>10.1f}   ({modules} modules)")  # fmt: skip
    for name, values in times.items():
        print(f"{name:<42} {statistics.median(values):>10.1f}")
    shipped, with_structlog = (statistics.median(v) for v in times.values())
    print(f"{'difference':<42} {with_structlog - shipped:>10.1f}   "
          f"(+{100 * (with_structlog / shipped - 1):.0f}%)")  # fmt: skip


if __name__ == "__main__":
    main()
