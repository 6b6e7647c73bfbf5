"""Benchmarks for `schedctl run` (run on demand, not a test): prints tables of medians.

    ~/.local/share/schedctl/venv/bin/python bench/run_bench.py [--repeat N] [--herd N] [--racers N]

Starts its own PostgreSQL (like the test suite) and uses the installed `schedctl` next to the
interpreter. Sections:
1. wrapper overhead: whole-process time of `schedctl run JOB --now` (command `true`) minus
   `true`, beside the floors `flock -n` and a psycopg-only prototype, as ratios to
   `python -c 'import psycopg'` measured in the same run; CPU time per run too;
2. top-of-hour herd: N jobs due in the same minute started at once on this host;
3. fleet race: N racers for one slot; 1 runs, and how soon the losers exit after the claim.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from pgserver import destroy, start_server  # noqa: E402

PY = sys.executable
SCHEDCTL = str(Path(PY).parent / "schedctl")


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run argv once; return (wall seconds, CPU seconds of the child and its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def series(argv: list[str], env: dict[str, str], repeat: int) -> dict[str, float]:
    timed(argv, env)  # warm the page cache
    samples = [timed(argv, env) for _ in range(repeat)]
    walls = [w for w, _ in samples]
    return {
        "median": statistics.median(walls) * 1000,
        "min": min(walls) * 1000,
        "max": max(walls) * 1000,
        "cpu": statistics.median(c for _, c in samples) * 1000,
    }


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


def this_minute() -> str:
    now = datetime.now(UTC)
    if now.second >= 50:
        time.sleep(61 - now.second)
        now = datetime.now(UTC)
    return f"{now.minute} {now.hour} * * *"


def cli(env: dict[str, str]) -> Callable[..., str]:
    def run(*args: str) -> str:
        return subprocess.run(
            [SCHEDCTL, *args], env=env, capture_output=True, text=True, check=True
        ).stdout

    return run


def overhead(envs: dict[str, dict[str, str]], pg_url: str, repeat: int) -> None:
    base = envs["sqlite"]
    lock = Path(base["HOME"]) / "bench.flock"
    lock.touch()
    rows: dict[str, dict[str, float]] = {
        "true": series(["true"], base, repeat),
        "flock -n FILE true": series(["flock", "-n", str(lock), "true"], base, repeat),
        "python -c 'import psycopg'": series([PY, "-c", "import psycopg"], base, repeat),
    }
    job_id = cli(envs["postgresql"])("show", "bench-true", "--json")
    jid = int(re.search(r'"id": (\d+)', job_id).group(1))  # type: ignore[union-attr]
    plain_url = pg_url
    rows["psycopg-only prototype (PostgreSQL)"] = series(
        [PY, str(HERE / "prototype_run.py"), plain_url, str(jid), "true"], base, repeat
    )
    for backend in ("postgresql", "sqlite"):
        rows[f"schedctl run --now ({backend})"] = series(
            [SCHEDCTL, "run", "bench-true", "--now"], envs[backend], repeat
        )
    floor_true = rows["true"]["median"]
    psy = rows["python -c 'import psycopg'"]["median"]
    out = []
    for name, r in rows.items():
        over = r["median"] - floor_true
        out.append([
            name, f"{r['median']:.1f}", f"{r['min']:.1f}", f"{r['max']:.1f}", f"{over:.1f}",
            f"{over / psy:.2f}" if name != "true" else "-", f"{r['cpu']:.1f}",
        ])  # fmt: skip
    table(
        f"1. wrapper overhead ({repeat} runs each; overhead = median - median(true))",
        ["command", "median ms", "min ms", "max ms", "overhead ms", "x import psycopg", "cpu ms"],
        out,
    )


def herd(env: dict[str, str], backend: str, count: int) -> list[str]:
    run = cli(env)
    schedule = this_minute()
    for i in range(count):
        run("add", f"herd-{i:03d}", "-s", schedule, "--tz", "UTC", "--tag", "herd", "--", "true")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    procs = [subprocess.Popen([SCHEDCTL, "run", f"herd-{i:03d}"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for i in range(count)]  # fmt: skip
    codes = [p.wait() for p in procs]
    wall = time.perf_counter() - start
    for p, code in zip(procs, codes, strict=True):
        if code != 0:
            said = (p.stderr.read() if p.stderr else "").strip().splitlines()
            print(f"herd ({backend}): a run exited {code}: {said[-1] if said else '(no output)'}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    recorded = run("history", "--status", "succeeded", "--limit", str(count * 2), "--json").count(
        '"job": "herd-'
    )
    failures = sum(c != 0 for c in codes)
    return [backend, str(count), str(recorded), str(failures), f"{wall:.2f}", f"{cpu:.2f}"]


def race(env: dict[str, str], backend: str, racers: int) -> list[str]:
    run = cli(env)
    run("add", "race", "-s", this_minute(), "--tz", "UTC", "--", "sleep", "2")
    start = time.perf_counter()
    procs = [subprocess.Popen([SCHEDCTL, "run", "race"], env={**env, "SCHEDCTL_HOST": f"r{i}"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for i in range(racers)]  # fmt: skip
    exits: dict[int, float] = {}
    pending = set(range(racers))
    while pending:
        for i in list(pending):
            if procs[i].poll() is not None:
                exits[i] = time.time()
                pending.discard(i)
        time.sleep(0.002)
    wall = time.perf_counter() - start
    errs = {i: (p.stderr.read() if p.stderr else "") for i, p in enumerate(procs)}
    winners = [i for i, e in errs.items() if "event=run.claimed" in e]
    stamp = re.search(r"timestamp=(\S+) level=info event=run\.claimed", errs[winners[0]]).group(1)  # type: ignore[union-attr]
    claimed = datetime.fromisoformat(stamp).timestamp()
    lags = [exits[i] - claimed for i in range(racers) if i not in winners]
    return [
        backend,
        str(racers),
        str(len(winners)),
        f"{max(lags) * 1000:.0f}",
        f"{statistics.median(lags) * 1000:.0f}",
        f"{wall:.2f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=21)
    parser.add_argument("--herd", type=int, default=200)
    parser.add_argument("--racers", type=int, default=50)
    args = parser.parse_args()
    server = start_server()
    work = Path(tempfile.mkdtemp(prefix="schedctl-bench-"))
    try:
        envs: dict[str, dict[str, str]] = {}
        urls: dict[str, str] = {}
        for backend in ("postgresql", "sqlite"):
            env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "SCHEDCTL_CONFIG": "/dev/null",
                   "SCHEDCTL_DATA_DIR": str(work / backend)}  # fmt: skip
            if backend == "postgresql":
                urls[backend] = server.url(server.create_database())
                env["SCHEDCTL_DATABASE_URL"] = urls[backend]
                cli(env)("db", "upgrade")
            cli(env)("add", "bench-true", "-s", "@yearly", "--", "true")
            envs[backend] = env
        overhead(envs, urls["postgresql"], args.repeat)
        herd_rows = []
        race_rows = []
        for backend in ("postgresql", "sqlite"):
            env = dict(envs[backend])
            if backend == "postgresql":
                env["SCHEDCTL_DATABASE_URL"] = server.url(server.create_database())
                cli(env)("db", "upgrade")
            else:
                env["SCHEDCTL_DATA_DIR"] = str(work / "sqlite-herd")
            herd_rows.append(herd(env, backend, args.herd))
            race_rows.append(race(env, backend, args.racers))
        table(f"2. top-of-hour herd: {args.herd} jobs due in one minute, started at once",
              ["backend", "jobs", "recorded", "failed runs", "wall s", "cpu s"], herd_rows)  # fmt: skip
        table(f"3. fleet race: {args.racers} racers for one slot",
              ["backend", "racers", "ran", "max loser exit after claim ms",
               "median ms", "wall s"], race_rows)  # fmt: skip
    finally:
        destroy(server)
        subprocess.run(["rm", "-rf", str(work)], check=False)
    print(f"\nmachine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
