"""Connection storm benchmark (run on demand, not a test): prints a table.

    ~/.local/share/schedctl/venv/bin/python bench/storm_bench.py [--processes 300] [--jobs 10]
        [--max-connections 40] [--budgets 0,30] [--repeat 1]

Starts its own PostgreSQL (like the test suite) with the given max_connections and fires
`--processes` hosts (SCHEDCTL_HOST h001...; a data directory each) at `--jobs` jobs due this
minute, all forked first and released together (tests/storm.py), connecting as an ordinary
role (the superuser has reserved slots). Once per retry budget ($SCHEDCTL_CONNECT_RETRY):
0 is how `run` behaved before it retried a full server (exit 75 at the first refusal).
Refused connections are counted from the server's log ("too many clients already",
"remaining connection slots are reserved"); a slot ran once when its job's marker file has
one line.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from pgserver import destroy, start_server  # noqa: E402
from storm import fire, storm_server_user  # noqa: E402

SCHEDCTL = str(Path(sys.executable).parent / "schedctl")


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    print(f"\n{title}")
    for line in [header, ["-" * w for w in widths], *rows]:
        print(
            "  ".join(
                str(x).rjust(w) if i else str(x).ljust(w)
                for i, (x, w) in enumerate(zip(line, widths, strict=True))
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--processes", type=int, default=300)
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--max-connections", type=int, default=40)
    parser.add_argument("--budgets", default="0,30", help="Retry budgets in seconds.")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average (1, 5, 15 min) at the start: {load}")
    rows = []
    for _ in range(args.repeat):
        for budget in args.budgets.split(","):
            server = start_server(settings={"max_connections": str(args.max_connections)})
            work = Path(tempfile.mkdtemp(prefix="schedctl-storm-bench-"))
            try:
                url = storm_server_user(server)
                env = {"SCHEDCTL_CONNECT_RETRY": budget}
                s = fire(SCHEDCTL, server, url, work, args.processes, args.jobs, env)
            finally:
                destroy(server)
                shutil.rmtree(work, ignore_errors=True)
            codes = " ".join(f"{c}:{n}" for c, n in sorted(s.codes.items()))
            rows.append([
                f"{budget} s" + (" (as before)" if float(budget) == 0 else ""),
                str(s.processes), str(s.jobs), str(s.max_connections), str(s.slots_run),
                str(s.slots_run_twice), codes, str(s.refused), str(s.tracebacks),
                f"{s.launch_seconds:.2f}", f"{s.settle_seconds:.1f}",
            ])  # fmt: skip
    table(
        "connection storm: hosts fire the same jobs at once at a small server",
        ["retry budget", "processes", "jobs", "max_connections", "slots run", "run twice",
         "exit codes", "refused", "tracebacks", "launch s", "settle s"],
        rows,
    )  # fmt: skip


if __name__ == "__main__":
    main()
