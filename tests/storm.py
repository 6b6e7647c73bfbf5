"""A connection storm: hundreds of hosts fire the same jobs at once against a small server.

Shared by `tests/acceptance/test_storm.py` and `bench/storm_bench.py`. Each process is one
host (its own SCHEDCTL_HOST and data directory); all are forked first, parked on a pipe, and
released together, as timers firing at the same instant across a fleet.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from pgserver import PgServer

# The server's own words for a connection it refused because it was full (SQLSTATE 53300).
REFUSAL_LINES = ("too many clients already", "remaining connection slots are reserved")


@dataclass
class Storm:
    """What a storm did: exit codes, slots run, refusals, and how long it took."""

    processes: int
    jobs: int
    max_connections: int
    codes: Counter[int]
    slots_run: int  # slots whose job's marker file has at least one line
    slots_run_twice: int  # marker files with more than one line
    runs_per_slot: dict[str, int]  # run rows per job, from the database
    refused: int  # refusals the server logged
    launch_seconds: float  # forking every parked process, before the release
    settle_seconds: float  # the release to the last exit
    held_seconds: float  # the release to the freeing of the held slots (0: none held)
    tracebacks: int
    errors: list[str] = field(default_factory=list)  # the last stderr line of each failure


def this_minute_daily() -> str:
    """A daily schedule whose latest slot is the current UTC minute."""
    now = datetime.now(UTC)
    if now.second >= 50:  # the storm takes seconds: define and fire in the same minute
        time.sleep(61 - now.second)
        now = datetime.now(UTC)
    return f"{now.minute} {now.hour} * * *"


def storm_server_user(server: PgServer) -> str:
    """Create a database owned by an ordinary role; return its URL.

    Not the superuser: the server keeps superuser_reserved_connections for the superuser,
    so an ordinary role meets both refusals, "remaining connection slots are reserved" and
    "too many clients already".
    """
    role = "storm_" + secrets.token_hex(4)
    password = secrets.token_urlsafe(12)
    name = "storm_" + secrets.token_hex(4)
    with server.admin() as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        conn.execute(f'CREATE DATABASE "{name}" OWNER {role}')
    return f"postgresql://{role}:{password}@127.0.0.1:{server.port}/{name}"


def fire(
    binary: str,
    server: PgServer,
    url: str,
    work: Path,
    processes: int,
    jobs: int,
    extra_env: dict[str, str] | None = None,
    job_seconds: float = 2.0,
    hold_until_refused: int = 0,
) -> Storm:
    """Add `jobs` jobs due this minute, fire `processes` hosts at them together; report.

    With `hold_until_refused`, every connection slot an ordinary role may take is held from
    before the release until the server has logged that many refusals (or 30 s have passed),
    then freed: the storm meets a full server whatever the machine's speed. Without it,
    whether 300 hosts fill the server depends on how fast this machine starts them.
    """
    base = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(work),
        "SCHEDCTL_CONFIG": "/dev/null",
        "SCHEDCTL_DATABASE_URL": url,
        "TZ": "UTC",
        "NO_COLOR": "1",
        **(extra_env or {}),
    }
    marks = work / "marks"
    marks.mkdir(parents=True, exist_ok=True)
    admin = {**base, "SCHEDCTL_DATA_DIR": str(work / "admin")}
    subprocess.run([binary, "db", "upgrade"], env=admin, check=True, capture_output=True)
    schedule = this_minute_daily()
    for j in range(jobs):
        command = f'echo "$SCHEDCTL_HOST" >> {marks}/storm-{j}; sleep {job_seconds}'
        subprocess.run(
            [binary, "add", f"storm-{j}", "-s", schedule, "--tz", "UTC", "--shell", "--", command],
            env=admin,
            check=True,
            capture_output=True,
        )
    log = server.root / "log"
    ready_r, ready_w = os.pipe()
    gate_r, gate_w = os.pipe()
    park = f'printf x >&{ready_w}; read _ <&{gate_r}; exec "$@"'
    launched = time.monotonic()
    procs = []
    for i in range(processes):
        host = f"h{i + 1:03d}"
        env = {**base, "SCHEDCTL_HOST": host, "SCHEDCTL_DATA_DIR": str(work / "hosts" / host)}
        # bash, not sh: dash refuses a redirection to a descriptor above 9, and a long-lived
        # test worker's pipes easily have such numbers.
        argv = ["/bin/bash", "-c", park, "parked", binary, "run", f"storm-{i % jobs}"]
        procs.append(
            subprocess.Popen(
                argv,
                env=env,
                pass_fds=(ready_w, gate_r),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        )
    os.close(ready_w)
    os.close(gate_r)
    parked = 0
    while parked < processes:
        got = os.read(ready_r, processes)
        if not got:  # every writer is gone: some hosts died before parking
            for p in procs:
                p.kill()
                p.wait()
            errs = {(p.stderr.read() if p.stderr else b"").decode(errors="replace") for p in procs}
            raise RuntimeError(f"{processes - parked} hosts exited before parking: {sorted(errs)}")
        parked += len(got)
    os.close(ready_r)
    launch = time.monotonic() - launched
    holders = hold_every_slot(url) if hold_until_refused else []
    # Counted from here: the refusal that told the holder the server was full is not the
    # storm's. A backend logs its refusal before it sends it, so that line is already written.
    log_start = log.stat().st_size
    released = time.monotonic()
    os.close(gate_w)
    held = 0.0
    if holders:
        deadline = released + 30
        while time.monotonic() < deadline and count_refusals(log, log_start) < hold_until_refused:
            time.sleep(0.05)
        for h in holders:
            h.close()
        held = time.monotonic() - released
    # stderr is read after the exits: a run writes a few lines, well under a pipe's buffer.
    index = {p.pid: p for p in procs}
    codes: Counter[int] = Counter()
    ended = released
    for _ in procs:
        pid, status = os.wait()
        ended = time.monotonic()
        p = index[pid]
        p.returncode = os.waitstatus_to_exitcode(status)
        codes[p.returncode] += 1
    settle = ended - released
    tracebacks = 0
    errors = []
    for p in procs:
        err = (p.stderr.read() if p.stderr else b"").decode(errors="replace")
        if p.stderr:
            p.stderr.close()
        tracebacks += "Traceback" in err
        if p.returncode != 0:
            lines = err.strip().splitlines()
            errors.append(f"{p.returncode}: {lines[-1] if lines else '(no output)'}")
    refused = count_refusals(log, log_start)
    counts: list[int] = []
    for j in range(jobs):
        mark = marks / f"storm-{j}"
        counts.append(len(mark.read_text().splitlines()) if mark.exists() else 0)
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT job_name, count(*) FROM runs WHERE slot IS NOT NULL GROUP BY job_name"
        ).fetchall()
    return Storm(
        processes=processes,
        jobs=jobs,
        max_connections=int((server.settings or {}).get("max_connections", 200)),
        codes=codes,
        slots_run=sum(c > 0 for c in counts),
        slots_run_twice=sum(c > 1 for c in counts),
        runs_per_slot={str(name): int(n) for name, n in rows},
        refused=refused,
        launch_seconds=launch,
        settle_seconds=settle,
        held_seconds=held,
        tracebacks=tracebacks,
        errors=errors,
    )


def count_refusals(log: Path, start: int) -> int:
    """Count the refusals the server logged after byte `start` of its log."""
    with log.open("rb") as f:
        f.seek(start)
        logged = f.read().decode(errors="replace")
    return sum(any(r in line for r in REFUSAL_LINES) for line in logged.splitlines())


def hold_every_slot(url: str) -> list[psycopg.Connection[tuple[object, ...]]]:
    """Take every connection slot the role of `url` may have; return the connections."""
    held = []
    while True:
        try:
            held.append(psycopg.connect(url, autocommit=True, connect_timeout=5))
        except psycopg.OperationalError as e:
            if not any(r in str(e) for r in REFUSAL_LINES):
                for h in held:
                    h.close()
                raise
            return held
