"""Run the installed `schedctl` binary as a user would: a subprocess with a clean environment."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

BIN = Path(os.environ.get("SCHEDCTL_BIN") or Path(sys.executable).parent / "schedctl")


@dataclass
class Result:
    rc: int
    out: str
    err: str


Cli = Callable[..., Result]


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A clean environment: its own data dir and an empty config file, so nothing leaks in."""
    empty = tmp_path / "empty.env"
    empty.write_text("")
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path / "home"),
        "SCHEDCTL_DATA_DIR": str(tmp_path / "data"),
        "SCHEDCTL_CONFIG": str(empty),
        "TZ": "Europe/Berlin",
        "NO_COLOR": "1",
        "COLUMNS": "200",
        # Piped, stderr would show warnings and errors only; these tests read info events too.
        "SCHEDCTL_LOG_LEVEL": "info",
        **extra,
    }


@functools.cache
def binary_for_others() -> Path:
    """Return a schedctl binary another user (nobody) can run: BIN, or a copy of its venv.

    The suite's venv lies under root's home, which Debian makes 0700, so `nobody` cannot
    reach it. The copy is hard links where the file system allows (instant), with its
    console script pointed at the copy's own interpreter.
    """
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    if (
        os.geteuid() != 0
        or subprocess.run(
            [runuser, "-u", "nobody", "--", "test", "-x", str(BIN)], check=False
        ).returncode
        == 0
    ):
        return BIN
    venv = BIN.resolve().parent.parent
    where = Path(tempfile.mkdtemp(prefix="schedctl-venv-"))
    where.chmod(0o755)
    atexit.register(shutil.rmtree, where, True)
    copy = where / "venv"
    linked = subprocess.run(["cp", "-al", str(venv), str(copy)], check=False, capture_output=True)
    if linked.returncode != 0:
        shutil.rmtree(copy, ignore_errors=True)
        subprocess.run(["cp", "-a", str(venv), str(copy)], check=True)
    script = copy / "bin" / "schedctl"
    text = script.read_text().split("\n", 1)
    script.unlink()  # a hard link to the original: write a file of its own
    script.write_text(f"#!{copy / 'bin' / 'python'}\n{text[1]}")
    script.chmod(0o755)
    return script


def make_cli(tmp_path: Path, **extra: str) -> Cli:
    """Return a function that runs the installed binary with `cli_env`."""
    assert BIN.exists(), f"{BIN} not found: run ./install.sh --dev first"
    env = cli_env(tmp_path, **extra)

    def run(*args: str, stdin: str | None = None, timeout: float = 60) -> Result:
        p = subprocess.run(
            [str(BIN), *args],
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return Result(p.returncode, p.stdout, p.stderr)

    return run


def held(tmp_path: Path, then: str = "") -> tuple[str, Path, Path]:
    """Return a shell job that marks when it runs and ends only once the test lets it.

    (its command, the file it writes once running, the file whose existence lets it end)
    """
    started, go = tmp_path / "job-started", tmp_path / "job-go"
    return f"touch {started}; while [ ! -e {go} ]; do sleep 0.05; done{then}", started, go


def wait_started(started: Path, runner: subprocess.Popen[str]) -> None:
    """Wait until the job runs: a loaded machine may take seconds to start `schedctl run`."""
    deadline = time.monotonic() + 60
    while not started.exists():
        assert runner.poll() is None, (
            f"the run ended before its job started: {runner.communicate()}"
        )
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)


def ok(result: Result) -> Result:
    assert result.rc == 0, result.err
    return result


def one_line_error(result: Result, code: int, fragment: str) -> None:
    assert result.rc == code, (result.rc, result.err)
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("schedctl: error: ")
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.err


def run_rows(url: str, job: str | None = None) -> list[dict[str, Any]]:
    """Read the recorded runs (of `job`, if given) straight from the database, oldest first."""
    import sqlalchemy as sa

    from schedctl.config import parse_database_url
    from schedctl.db.schema import make_engine
    from schedctl.db.tables import runs

    engine = make_engine(parse_database_url(url))
    query = sa.select(runs).order_by(runs.c.id)
    if job is not None:
        query = query.where(runs.c.job_name == job)
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]
    finally:
        engine.dispose()


def age_runs(url: str, job: str, seconds: float) -> None:
    """Move the recorded times of `job`'s runs `seconds` into the past, as if they ran then.

    Stands for waiting that long, where only the runs' age matters (retention).
    """
    import sqlalchemy as sa

    from schedctl.config import parse_database_url
    from schedctl.db.schema import make_engine
    from schedctl.db.tables import runs

    times = ("claimed_at", "started_at", "finished_at", "heartbeat_at")
    engine = make_engine(parse_database_url(url))
    try:
        with engine.begin() as conn:
            rows = conn.execute(sa.select(runs.c.id, *(runs.c[c] for c in times))
                                .where(runs.c.job_name == job)).all()  # fmt: skip
            assert rows, job
            for row in rows:
                moved = {c: v - timedelta(seconds=seconds) for c, v in zip(times, row[1:],
                         strict=True) if v is not None}  # fmt: skip
                conn.execute(sa.update(runs).where(runs.c.id == row[0]).values(**moved))
    finally:
        engine.dispose()


def alive(pid: int) -> bool:
    """Return whether `pid` is a running (not zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def cgroup_usable() -> bool:
    """Return whether schedctl can give a run a cgroup of its own here (cgroup2, writable)."""
    from schedctl.proctree import RunCgroup

    cgroup = RunCgroup.create()
    if cgroup is None:
        return False
    cgroup.remove()
    return True


def store_as_older_versions_did(url: str, job: str, **values: Any) -> None:
    """Write job fields straight into the database, past today's validation.

    Stands for a definition stored by an older schedctl (or edited by hand in the database).
    """
    import sqlalchemy as sa

    from schedctl.config import parse_database_url
    from schedctl.db.schema import make_engine
    from schedctl.db.tables import jobs

    engine = make_engine(parse_database_url(url))
    try:
        with engine.begin() as conn:
            done = conn.execute(sa.update(jobs).where(jobs.c.name == job).values(**values))
            assert done.rowcount == 1, job
    finally:
        engine.dispose()


def host_as_older_versions_stored(url: str, placeholder: str, host: str) -> None:
    """Rename the runs recorded by host `placeholder` to `host`, past today's validation.

    Stands for a host name an older schedctl stored before host names were checked.
    """
    import sqlalchemy as sa

    from schedctl.config import parse_database_url
    from schedctl.db.schema import make_engine
    from schedctl.db.tables import runs

    engine = make_engine(parse_database_url(url))
    try:
        with engine.begin() as conn:
            done = conn.execute(sa.update(runs).where(runs.c.host == placeholder).values(host=host))
            assert done.rowcount >= 1, placeholder
    finally:
        engine.dispose()


def tty_run(args: list[str], env: dict[str, str]) -> tuple[int, bytes]:
    """Run the binary with stdout on a pseudo-terminal, as in an operator's shell."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen([str(BIN), *args], env=env, stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=60), b"".join(chunks)


FAKETIME_LIBS = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))


def faketime() -> str:
    """Return libfaketime's path; skip the test where it is missing (never in CI)."""
    if not FAKETIME_LIBS:
        assert not os.environ.get("CI"), "libfaketime missing: .ci/run should have installed it"
        pytest.skip("libfaketime not installed (apt-get install libfaketime)")
    return str(FAKETIME_LIBS[0])


def at(instant: datetime) -> str:
    """FAKETIME for a clock that starts at `instant` and runs on (read in TZ=UTC)."""
    return "@" + instant.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
