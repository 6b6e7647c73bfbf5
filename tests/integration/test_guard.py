"""The in-app lock API (`schedctl.single_instance`, `advisory_lock`) across real processes.

On both backends: a real PostgreSQL server (session advisory locks) and real flock.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import guard_worker
import pytest
from cli_helpers import Cli, ok

from schedctl import advisory_lock, log, single_instance
from schedctl.config import parse_database_url
from schedctl.db.connector import PgConnector
from schedctl.errors import DatabaseUnavailableError
from schedctl.guard import APP_LOCK_NAMESPACE, lock_key
from schedctl.locking import LOCK_NAMESPACE

WORKER = Path(guard_worker.__file__)
CONTENDERS = 20


@pytest.fixture
def app_env(
    backend: tuple[Cli, str, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Cli, str, dict[str, str]]]:
    """The backend's settings in this process's environment too, as an application has them."""
    cli, url, env = backend
    for key in ("SCHEDCTL_DATA_DIR", "SCHEDCTL_CONFIG", "HOME"):
        monkeypatch.setenv(key, env[key])
    if "SCHEDCTL_DATABASE_URL" in env:
        monkeypatch.setenv("SCHEDCTL_DATABASE_URL", env["SCHEDCTL_DATABASE_URL"])
    else:
        monkeypatch.delenv("SCHEDCTL_DATABASE_URL", raising=False)
    monkeypatch.delenv("SCHEDCTL_HOST", raising=False)
    yield cli, url, {**env, "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"}


def _start_holder(
    env: dict[str, str], folder: Path, name: str, mode: str = "hold"
) -> subprocess.Popen[bytes]:
    """Start a process that takes `name` and keeps it until FOLDER/release exists."""
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), mode, str(folder), name],
        env={**env, "SCHEDCTL_HOST": "h-app"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not list(folder.glob("held-*")):
        assert proc.poll() is None, f"holder exited with {proc.returncode}"
        assert time.monotonic() < deadline, "the holder never took the lock"
        time.sleep(0.02)
    return proc


def _stop(holder: subprocess.Popen[bytes], folder: Path) -> None:
    """Let the holder release and end; kill it if it does not."""
    (folder / "release").touch()
    try:
        holder.wait(timeout=30)
    except subprocess.TimeoutExpired:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("how", ["fork", "spawn", "subprocess"])
def test_twenty_processes_contend_and_exactly_one_runs(
    app_env: tuple[Cli, str, dict[str, str]], tmp_path: Path, how: str
) -> None:
    _, _, env = app_env
    folder = tmp_path / "contend"
    folder.mkdir()
    name = "cleanup_old_events"
    if how == "subprocess":
        code = (
            "import sys, guard_worker; guard_worker.contend(sys.argv[1], sys.argv[2], "
            "int(sys.argv[3]))"
        )
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", code, str(folder), name, str(CONTENDERS - 1)],
                env={**env, "PYTHONPATH": str(WORKER.parent)},
            )
            for _ in range(CONTENDERS)
        ]
        (folder / "go").touch()
        codes: list[int | None] = [p.wait(timeout=180) for p in procs]
    else:
        ctx = (
            multiprocessing.get_context("fork")
            if how == "fork"
            else multiprocessing.get_context("spawn")
        )
        workers = [
            ctx.Process(target=guard_worker.contend, args=(str(folder), name, CONTENDERS - 1))
            for _ in range(CONTENDERS)
        ]
        for w in workers:
            w.start()
        (folder / "go").touch()
        for w in workers:
            w.join(timeout=180)
        codes = [w.exitcode for w in workers]
    assert codes == [0] * CONTENDERS
    ran, skipped = list(folder.glob("ran-*")), list(folder.glob("skipped-*"))
    assert (len(ran), len(skipped)) == (1, CONTENDERS - 1)
    # Free again once its holder returned.
    with advisory_lock(name) as locked:
        assert locked


@pytest.mark.parametrize("mode", ["hold", "hold-fork"])
def test_a_holder_killed_frees_the_lock(
    app_env: tuple[Cli, str, dict[str, str]], tmp_path: Path, mode: str
) -> None:
    """SIGKILL ends the holder's session (or closes its flock); a forked child keeps nothing."""
    _, _, env = app_env
    holder = _start_holder(env, tmp_path, "nightly cleanup", mode)
    child = int((tmp_path / "child").read_text()) if mode == "hold-fork" else None
    try:
        with advisory_lock("nightly cleanup") as locked:
            assert not locked
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        if child is not None:
            os.kill(child, 0)  # the child lives on, with the parent's descriptors inherited
        started = time.monotonic()
        with advisory_lock("nightly cleanup", wait=10) as locked:
            waited = time.monotonic() - started
            assert locked, "the lock did not free when its holder was killed"
        assert waited < 5
    finally:
        _stop(holder, tmp_path)
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)


def test_wait_gets_the_lock_once_freed_and_gives_up_in_bounded_time(
    app_env: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    _, _, env = app_env
    holder = _start_holder(env, tmp_path, "report")
    try:
        started = time.monotonic()
        with advisory_lock("report", wait=1.0) as locked:
            assert not locked
        took = time.monotonic() - started
        assert 1.0 <= took < 3.0, took

        calls: list[int] = []

        @single_instance("report", wait=30)
        def build(n: int) -> int:
            calls.append(n)
            return n * 2

        releaser = subprocess.Popen(["sh", "-c", f"sleep 1; touch {tmp_path / 'release'}"], env=env)
        started = time.monotonic()
        assert build(21) == 42
        took = time.monotonic() - started
        releaser.wait(timeout=30)
        assert calls == [21]
        assert 0.9 <= took < 10, took
    finally:
        _stop(holder, tmp_path)


def test_a_skipped_call_returns_none_and_logs_one_line(
    app_env: tuple[Cli, str, dict[str, str]],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, _, env = app_env
    monkeypatch.setenv("SCHEDCTL_LOG_LEVEL", "info")
    monkeypatch.setattr(log, "_config", None)  # read again, from this environment
    holder = _start_holder(env, tmp_path, "cleanup_old_events")
    try:
        capfd.readouterr()

        @single_instance("cleanup_old_events")
        def cleanup_old_events() -> str:
            return "ran"

        assert cleanup_old_events() is None
        lines = capfd.readouterr().err.splitlines()
        assert len(lines) == 1, lines
        assert "event=lock.skipped" in lines[0] and "lock=cleanup_old_events" in lines[0]
        assert "function=" in lines[0] and "level=info" in lines[0]
    finally:
        _stop(holder, tmp_path)
    assert cleanup_old_events() == "ran"


def test_a_forked_child_uses_its_own_session(pg_url: str, tmp_path: Path) -> None:
    """gunicorn's way: the lock objects are made in the parent, used in forked workers."""
    url = parse_database_url(pg_url)
    watcher = PgConnector(url)
    try:
        shared = advisory_lock("per-worker", url=pg_url)
        parent = advisory_lock("parent-held", url=pg_url)
        assert parent.__enter__()
        assert parent._session is not None
        parents_backend = parent._session.backend_pid()
        ctx = multiprocessing.get_context("fork")
        for _ in range(3):
            worker = ctx.Process(target=guard_worker.use_parents_lock, args=(shared, tmp_path))
            worker.start()
            worker.join(timeout=60)
            assert worker.exitcode == 0
        reports = [json.loads(p.read_text()) for p in tmp_path.glob("child-*.json")]
        assert len(reports) == 3
        assert all(r["locked"] for r in reports)
        backends = {r["backend_pid"] for r in reports}
        assert len(backends) == 3 and parents_backend not in backends
        # The children came and went; the parent's session and its lock are still there.
        held = watcher.run("app_lock_holders", {"namespace": APP_LOCK_NAMESPACE}).rows
        assert [(k, p) for k, p, _, _ in held] == [(lock_key("parent-held"), parents_backend)]
        parent.__exit__(None, None, None)
        assert watcher.run("app_lock_holders", {"namespace": APP_LOCK_NAMESPACE}).rows == []
    finally:
        watcher.close()


def test_locks_shows_in_app_locks_with_pid_and_host(
    app_env: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    cli, url, env = app_env
    holder = _start_holder(env, tmp_path, "cleanup_old_events")
    try:
        shown = json.loads(ok(cli("locks", "--json")).out)
        assert [(h["kind"], h["name"], h["pid"], h["host"]) for h in shown] == [
            ("app", "cleanup_old_events", holder.pid, "h-app")
        ]
        assert shown[0]["since"] is not None
        table = ok(cli("locks")).out
        assert "cleanup_old_events" in table and str(holder.pid) in table and "h-app" in table
        if url.startswith("postgresql"):
            # The seed's own check sees it, in the in-app namespace, not the jobs' one.
            watcher = PgConnector(parse_database_url(url))
            try:
                rows = watcher.run("app_lock_holders", {"namespace": APP_LOCK_NAMESPACE}).rows
                assert [r[0] for r in rows] == [lock_key("cleanup_old_events")]
                assert watcher.run("lock_holders", {"namespace": LOCK_NAMESPACE}).rows == []
            finally:
                watcher.close()
    finally:
        _stop(holder, tmp_path)
    assert json.loads(ok(cli("locks", "--json")).out) == []


@pytest.mark.parametrize(
    "name", ["", "a\x00b", "two\nlines", "tab\there", "esc\x1b[2J", "x" * 256, "line\u2028sep"]
)
def test_names_a_lock_cannot_have_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="lock name"):
        advisory_lock(name)
    with pytest.raises(ValueError, match="lock name"):
        single_instance(name)


def test_hostile_names_are_distinct_locks_and_stay_in_the_lock_directory(
    app_env: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    cli, url, env = app_env
    data = Path(env["SCHEDCTL_DATA_DIR"])
    names = ["../../../etc/passwd", "/tmp/x", "定期 クリーンアップ 🙂", "y" * 255, "a b=c"]
    before = {p for p in tmp_path.rglob("*") if "locks" not in p.parts}
    locks = [advisory_lock(n) for n in names]
    try:
        for lock in locks:
            assert lock.__enter__()
        for n in names:
            with advisory_lock(n) as locked:
                assert not locked, n
        shown = {h["name"] for h in json.loads(ok(cli("locks", "--json")).out)}
        if url.startswith("postgresql"):
            # application_name holds 63 bytes: a name that does not fit is cut, marked '…'.
            assert {"../../../etc/passwd", "/tmp/x", "a b=c"} <= shown
            assert any(s.startswith("yyy") and s.endswith("…") for s in shown)
            assert any(s.startswith("定期") for s in shown)
        else:
            assert shown == set(names)
            files = list((data / "locks").iterdir())
            assert len(files) == len(names)
            assert all(f.name.startswith("app-") and f.suffix == ".lock" for f in files)
    finally:
        for lock in locks:
            lock.__exit__(None, None, None)
    after = {p for p in tmp_path.rglob("*") if "locks" not in p.parts}
    assert after - before <= {
        data / "schedctl.db",
        data / "schedctl.db-wal",
        data / "schedctl.db-shm",
    }
    assert not Path("/etc/passwd.lock").exists()


def test_an_unreachable_database_fails_closed() -> None:
    """No lock, no run: the error says why in one line, and the body never ran."""
    url = "postgresql://nobody@127.0.0.1:1/none"
    calls: list[int] = []

    @single_instance("cleanup_old_events", url=url)
    def cleanup_old_events() -> None:
        calls.append(1)

    with pytest.raises(DatabaseUnavailableError) as raised:
        cleanup_old_events()
    assert calls == []
    assert "\n" not in str(raised.value)
