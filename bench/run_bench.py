"""Benchmarks for `schedctl run` and `sync` (run on demand, not a test): prints tables.

    ~/.local/share/schedctl/venv/bin/python bench/run_bench.py [--repeat N] [--herd N]
        [--racers N] [--race-repeat N] [--sync-jobs N] [--sections 1,2,3,4,5]

Starts its own PostgreSQL (like the test suite) and uses the installed `schedctl` next to the
interpreter. Sections:
1. wrapper overhead: whole-process time of `schedctl run JOB --now` (command `true`) minus
   `true`, beside the floors `flock -n` and a psycopg-only prototype, as ratios to
   `python -c 'import psycopg'` measured in the same run (all timed round-robin, so a change
   in the machine's speed affects every row alike); CPU time per run too;
2. top-of-hour herd: N jobs due in the same minute started at once on this host;
3. fleet race: N racers for one slot; 1 runs, and how soon the losers exit after the claim,
   over TCP with a password and over the local socket, beside the same claim made by psql
   (a C client) and by a bare Python process (claim_floor.py), each race run --race-repeat
   times round-robin;
4. `sync systemd` and `sync crontab` for N jobs, then again with nothing changed: wall time
   and how many files were written (by inode and mtime, not only by what sync says);
5. management commands start-up: whole-process time of `list`, `show`, `history JOB`,
   `report`, `logs`, `next` and `metrics` on 30 jobs with some history, on PostgreSQL and
   SQLite, as ratios to `python -c 'import psycopg'`, all timed round-robin.

`--sections 1,5` runs only those sections (the two about start-up take about a minute)."""

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
from functools import partial
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import psycopg  # noqa: E402
from pgserver import PgServer, destroy, start_server  # noqa: E402

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


def interleaved(
    commands: dict[str, tuple[list[str], dict[str, str]]], repeat: int
) -> dict[str, dict[str, float]]:
    """Time each command `repeat` times, round-robin, so drift in the machine's speed is shared.

    Return, per command, the median, min and max wall milliseconds and the median CPU ms.
    """
    for argv, env in commands.values():
        timed(argv, env)  # warm the page cache
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for _ in range(repeat):
        for name, (argv, env) in commands.items():
            samples[name].append(timed(argv, env))
    out = {}
    for name, got in samples.items():
        walls = [w for w, _ in got]
        out[name] = {
            "median": statistics.median(walls) * 1000,
            "min": min(walls) * 1000,
            "max": max(walls) * 1000,
            "cpu": statistics.median(c for _, c in got) * 1000,
        }
    return out


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
    job_id = cli(envs["postgresql"])("show", "bench-true", "--json")
    jid = int(re.search(r'"id": (\d+)', job_id).group(1))  # type: ignore[union-attr]
    commands = {
        "true": (["true"], base),
        "flock -n FILE true": (["flock", "-n", str(lock), "true"], base),
        "python -c 'import psycopg'": ([PY, "-c", "import psycopg"], base),
        "psycopg-only prototype (PostgreSQL)": (
            [PY, str(HERE / "prototype_run.py"), pg_url, str(jid), "true"],
            base,
        ),
    }
    for backend in ("postgresql", "sqlite"):
        commands[f"schedctl run --now ({backend})"] = (
            [SCHEDCTL, "run", "bench-true", "--now"],
            envs[backend],
        )
    rows = interleaved(commands, repeat)
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
        f"1. wrapper overhead ({repeat} runs each, interleaved; overhead = median - median(true))",
        ["command", "median ms", "min ms", "max ms", "overhead ms", "x import psycopg", "cpu ms"],
        out,
    )


def start_together(
    runs: list[tuple[list[str], dict[str, str]]],
) -> tuple[list[subprocess.Popen[str]], float]:
    """Start every (argv, env) at the same instant; return the processes and that instant.

    Timers fire at the same moment on every host: each process is first forked (as a shell
    parked on a pipe), and all are released together by closing the pipe, so no process
    starts late because the launcher was still busy starting the others.
    """
    ready_r, ready_w = os.pipe()
    gate_r, gate_w = os.pipe()
    park = f'printf x >&{ready_w}; read _ <&{gate_r}; exec "$@"'
    procs = [subprocess.Popen(["/bin/sh", "-c", park, "parked", *argv], env=env,
                              pass_fds=(ready_w, gate_r), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for argv, env in runs]  # fmt: skip
    os.close(ready_w)
    os.close(gate_r)
    parked = 0
    while parked < len(runs):
        parked += len(os.read(ready_r, len(runs)))
    os.close(ready_r)
    start = time.time()
    os.close(gate_w)
    return procs, start


def reap(procs: list[subprocess.Popen[str]]) -> tuple[list[int], list[float]]:
    """Wait for every process; return their exit codes and when each exited (time.time())."""
    index = {p.pid: i for i, p in enumerate(procs)}
    codes, ended = [0] * len(procs), [0.0] * len(procs)
    for _ in procs:
        pid, status = os.wait()  # wakes at each exit: no polling interval in the figures
        ended[index[pid]] = time.time()
        codes[index[pid]] = procs[index[pid]].returncode = os.waitstatus_to_exitcode(status)
    return codes, ended


def herd(env: dict[str, str], backend: str, count: int) -> list[str]:
    run = cli(env)
    schedule = this_minute()
    for i in range(count):
        run("add", f"herd-{i:03d}", "-s", schedule, "--tz", "UTC", "--tag", "herd", "--", "true")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    procs, start = start_together([([SCHEDCTL, "run", f"herd-{i:03d}"], env) for i in range(count)])
    codes, ended = reap(procs)
    wall = max(ended) - start
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


def _stamp(stderr: str, event: str) -> float:
    found = re.search(rf"timestamp=(\S+) level=info event={re.escape(event)}", stderr)
    assert found, f"no {event} in: {stderr[-300:]}"
    return datetime.fromisoformat(found.group(1)).timestamp()


C_CLIENT = "psql (C client)"
PY_FLOOR = "python + libpq, claim only"


class Race(NamedTuple):
    """One race for one slot, times in seconds."""

    ran: int  # how many racers ran the job: must be 1
    lags: list[float]  # each loser's exit, after the winner's claim
    own: list[float]  # each loser's own time from "taken" to exit (schedctl only)
    wall: float


def race_schedctl(env: dict[str, str], racers: int, prefix: str, r: int) -> Race:
    """Race `racers` `schedctl run JOB` processes for one slot of a new job (race number r)."""
    job = f"{prefix}-{r}"
    cli(env)("add", job, "-s", this_minute(), "--tz", "UTC", "--", "sleep", "2")
    procs, start = start_together(
        [([SCHEDCTL, "run", job], {**env, "SCHEDCTL_HOST": f"r{i}"}) for i in range(racers)]
    )
    _, ended = reap(procs)
    errs = {i: (p.stderr.read() if p.stderr else "") for i, p in enumerate(procs)}
    winners = [i for i, e in errs.items() if "event=run.claimed" in e]
    claimed = _stamp(errs[winners[0]], "run.claimed")
    losers = [i for i in range(racers) if i not in winners]
    # What the loser itself spends once the database has said "taken": independent of how
    # many racers share this machine's CPUs (on a fleet each racer has its own).
    own = [ended[i] - _stamp(errs[i], "run.skipped.duplicate") for i in losers]
    return Race(len(winners), [ended[i] - claimed for i in losers], own, max(ended) - start)


def race_client(client: list[str], url: str, racers: int, base: int, r: int) -> Race:
    """Race `racers` processes of `client URL -c SQL` to insert one row: the claim alone.

    The winner's claim time is the server's clock_timestamp() stored with the row (server
    and racers share this host's clock), so no extra process is timed.
    """
    key = base + 10 * r
    sql = (
        f"INSERT INTO bench_race VALUES ({key}, clock_timestamp()) "
        "ON CONFLICT DO NOTHING RETURNING 'won'"
    )
    env = {"PATH": "/usr/bin:/bin", "PGCONNECT_TIMEOUT": "30"}
    procs, start = start_together([([*client, url, "-c", sql], env)] * racers)
    codes, ended = reap(procs)
    assert not any(codes), [p.stderr.read() for p in procs if p.stderr][:1]
    winners = [i for i, p in enumerate(procs) if p.stdout and "won" in p.stdout.read()]
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM claimed_at) FROM bench_race WHERE k = %s", (key,)
        ).fetchone()
    assert row is not None
    claimed = float(row[0])
    lags = [ended[i] - claimed for i in range(racers) if i not in winners]
    return Race(len(winners), lags, [], max(ended) - start)


def race_rows(
    contenders: dict[tuple[str, str], Callable[[int], Race]], repeat: int
) -> list[list[str]]:
    """Run every contender's race `repeat` times, round-robin; one table row per contender."""
    got: dict[tuple[str, str], list[Race]] = {key: [] for key in contenders}
    for r in range(repeat):
        for key, one_race in contenders.items():
            got[key].append(one_race(r))
    # Each race's worst lag (ms), and its median over the races: the figure the ratio compares.
    worst = {key: [max(x.lags) * 1000 for x in races] for key, races in got.items()}
    typical = {key: statistics.median(ms) for key, ms in worst.items()}
    rows = []
    for (who, db), races in got.items():
        own = [t for x in races for t in x.own]
        floor = typical.get((C_CLIENT, db))
        rows.append([
            who, db, str(len(races[0].lags) + 1),
            " ".join(str(x.ran) for x in races),
            f"{max(worst[(who, db)]):.0f}", f"{typical[(who, db)]:.0f}",
            f"{statistics.median(t for x in races for t in x.lags) * 1000:.0f}",
            f"{typical[(who, db)] / floor:.2f}" if floor else "-",
            f"{statistics.median(own) * 1000:.1f}" if own else "-",
            f"{statistics.median(x.wall for x in races):.2f}",
        ])  # fmt: skip
    return rows


def contenders(
    server: PgServer, envs: dict[str, dict[str, str]], racers: int
) -> dict[tuple[str, str], Callable[[int], Race]]:
    """Return the races to run: schedctl on each database and connection, the floors beside it.

    psql and claim_floor.py show what the same claim costs from a C client and from a bare
    Python process on the same machine: with every racer and the server on these few cores,
    the server's connection start-up (and with a password, the SCRAM exchange on both ends)
    is part of every racer's time.
    """
    pg = envs["postgresql"]
    tcp = pg["SCHEDCTL_DATABASE_URL"]
    local = (
        f"postgresql://{server.user}@/{tcp.rsplit('/', 1)[1]}"
        f"?host={server.sockdir}&port={server.port}"
    )
    with psycopg.connect(tcp) as conn:
        conn.execute("CREATE TABLE bench_race (k integer PRIMARY KEY, claimed_at timestamptz)")
    psql = [str(server.bindir / "psql"), "-qtAX"]
    python = [PY, str(HERE / "claim_floor.py")]
    over_tcp, over_socket = "PostgreSQL: TCP, password (SCRAM)", "PostgreSQL: local socket, trust"
    races: dict[tuple[str, str], Callable[[int], Race]] = {}
    for n, (db, url, env) in enumerate(
        [(over_tcp, tcp, pg), (over_socket, local, {**pg, "SCHEDCTL_DATABASE_URL": local})]
    ):
        races[(C_CLIENT, db)] = partial(race_client, psql, url, racers, n)
        races[(PY_FLOOR, db)] = partial(race_client, python, url, racers, n + 5)
        races[("schedctl run", db)] = partial(race_schedctl, env, racers, f"race-{n}")
    races[("schedctl run", "SQLite")] = partial(race_schedctl, envs["sqlite"], racers, "race")
    return races


def sync(env: dict[str, str], work: Path, jobs: int) -> list[list[str]]:
    """Time `sync systemd` and `sync crontab` for `jobs` jobs, then again with nothing changed."""
    from schedctl import services
    from schedctl.clock import SystemClock
    from schedctl.config import parse_database_url
    from schedctl.db.repository import open_current
    from schedctl.models import JobSpec

    store = open_current(parse_database_url(env["SCHEDCTL_DATABASE_URL"]), SystemClock())
    try:
        for i in range(jobs):  # validated and stored as `schedctl add` does, without 1,000 starts
            spec = JobSpec(f"sync-{i:04d}", f"{i % 60} {i % 24} * * *", "UTC", ("true",))
            services.add_job(store, spec, SystemClock())
    finally:
        store.close()
    unit_dir = work / "sync-units"
    unit_dir.mkdir()
    cron_file = work / "sync-cron.d"
    targets = {
        "systemd": (["sync", "systemd", "--unit-dir", str(unit_dir), "--no-reload"], unit_dir, "*"),
        "crontab": (["sync", "crontab", "--file", str(cron_file)], work, cron_file.name),
    }
    rows = []
    for kind, (args, where, pattern) in targets.items():
        for attempt in ("first", "again, nothing changed"):
            before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in where.glob(pattern)}
            start = time.perf_counter()
            said = subprocess.run(
                [SCHEDCTL, *args], env=env, capture_output=True, text=True, check=True
            ).stdout
            wall = time.perf_counter() - start
            after = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in where.glob(pattern)}
            touched = sum(1 for p, st in after.items() if before.get(p) != st)
            summary = said.strip().splitlines()[-1] if said.strip() else "(no output)"
            rows.append([f"sync {kind} ({attempt})", str(jobs), str(len(after)), str(touched),
                         f"{wall:.2f}", summary])  # fmt: skip
    return rows


STARTUP_JOBS = 30


def startup(envs: dict[str, dict[str, str]], repeat: int) -> None:
    """Time the read-only management commands beside `python -c 'import psycopg'`.

    Each backend gets 30 jobs and a few runs of some of them, as a small site would have.
    """
    commands: dict[str, tuple[list[str], dict[str, str]]] = {
        "python -c 'import psycopg'": ([PY, "-c", "import psycopg"], envs["sqlite"]),
    }
    for backend, env in envs.items():
        run = cli(env)
        for i in range(STARTUP_JOBS):
            run("add", f"app-{i:02d}", "-s", f"{i} * * * *", "--tz", "Europe/Berlin",
                "--tag", f"team-{i % 3}", "--", "true")  # fmt: skip
        for i in range(5):
            for _ in range(4):
                run("run", f"app-{i:02d}", "--now")
        run_id = re.search(r'"id": (\d+)', run("history", "app-00", "--limit", "1", "--json"))
        assert run_id, "no run recorded"
        for name, args in {
            "list": ["list"],
            "show JOB": ["show", "app-00"],
            "history JOB": ["history", "app-00"],
            "report": ["report"],
            "logs RUN": ["logs", run_id.group(1)],
            "next JOB": ["next", "app-00"],
            "metrics": ["metrics"],
        }.items():
            commands[f"schedctl {name} ({backend})"] = ([SCHEDCTL, *args], env)
    rows = interleaved(commands, repeat)
    psy = rows["python -c 'import psycopg'"]["median"]
    out = [
        [name, f"{r['median']:.1f}", f"{r['min']:.1f}", f"{r['max']:.1f}",
         f"{r['median'] / psy:.2f}", f"{r['cpu']:.1f}"]
        for name, r in rows.items()
    ]  # fmt: skip
    table(
        f"5. management commands start-up ({STARTUP_JOBS} jobs, {repeat} runs each, interleaved; "
        "whole processes)",
        ["command", "median ms", "min ms", "max ms", "x import psycopg", "cpu ms"],
        out,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=21)
    parser.add_argument("--herd", type=int, default=200)
    parser.add_argument("--racers", type=int, default=50)
    parser.add_argument("--race-repeat", type=int, default=3)
    parser.add_argument("--sync-jobs", type=int, default=1000)
    parser.add_argument("--sections", default="1,2,3,4,5", help="Which sections to run.")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average (1, 5, 15 min) at the start: {load}")
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
        if "1" in sections:
            overhead(envs, urls["postgresql"], args.repeat)
        if "2" in sections or "3" in sections:
            herd_rows = []
            race_envs = {}
            for backend in ("postgresql", "sqlite"):
                env = dict(envs[backend])
                if backend == "postgresql":
                    env["SCHEDCTL_DATABASE_URL"] = server.url(server.create_database())
                    cli(env)("db", "upgrade")
                else:
                    env["SCHEDCTL_DATA_DIR"] = str(work / "sqlite-herd")
                if "2" in sections:
                    herd_rows.append(herd(env, backend, args.herd))
                race_envs[backend] = env
            if "2" in sections:
                table(f"2. top-of-hour herd: {args.herd} jobs due in one minute, started at once",
                      ["backend", "jobs", "recorded", "failed runs", "wall s", "cpu s"],
                      herd_rows)  # fmt: skip
            if "3" in sections:
                table(f"3. fleet race: {args.racers} racers for one slot, {args.race_repeat} "
                      "races each (round-robin); lag = a loser's exit - the winner's claim",
                      ["racer", "database", "racers", "ran", "max lag ms",
                       "max lag: median of races", "median lag ms", "x C client",
                       "loser: verdict to exit ms", "wall s"],
                      race_rows(contenders(server, race_envs, args.racers),
                                args.race_repeat))  # fmt: skip
        if "4" in sections:
            env = dict(envs["postgresql"])
            env["SCHEDCTL_DATABASE_URL"] = server.url(server.create_database())
            cli(env)("db", "upgrade")
            table(f"4. sync for {args.sync_jobs} jobs (PostgreSQL; files only: --no-reload)",
                  ["command", "jobs", "files", "files written", "wall s", "it said"],
                  sync(env, work, args.sync_jobs))  # fmt: skip
        if "5" in sections:
            fresh = {
                "postgresql": {**envs["postgresql"],
                               "SCHEDCTL_DATABASE_URL": server.url(server.create_database())},
                "sqlite": {**envs["sqlite"], "SCHEDCTL_DATA_DIR": str(work / "sqlite-startup")},
            }  # fmt: skip
            cli(fresh["postgresql"])("db", "upgrade")
            startup(fresh, args.repeat)
    finally:
        destroy(server)
        subprocess.run(["rm", "-rf", str(work)], check=False)
    # The machine may be shared: its load during the run says how far the figures can be trusted.
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"\nmachine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}; load at the end {load}"
    )


if __name__ == "__main__":
    main()
