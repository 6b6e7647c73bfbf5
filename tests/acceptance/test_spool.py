"""The local spool and the data directory, through the installed binary, under faults.

Bad spool files, many processes flushing at once, a spool that cannot be written, and another
user trying to redirect or forge what schedctl writes there.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cli_helpers import (
    BIN,
    Cli,
    cli_env,
    held,
    make_cli,
    ok,
    one_line_error,
    run_rows,
    wait_started,
)
from pgserver import PgServer, destroy, start_server

SPOOLED = "spooled-"  # output tail of the results these tests spool


def spooled_result(run_id: int, **change: Any) -> dict[str, Any]:
    """A result as `run` spools it, for run `run_id`."""
    result = {
        "status": "failed",
        "exit_code": 3,
        "signal": None,
        "started_at": "2026-01-01T00:00:00+00:00",
        "finished_at": "2026-01-01T00:00:01+00:00",
        "duration_seconds": 1.0,
        "output_tail": f"{SPOOLED}{run_id}",
        "output_bytes": 12,
        "output_truncated": False,
        **change,
    }
    return {"run_id": run_id, "result": result}


def spool_file(data: Path, run_id: int, **change: Any) -> Path:
    spool = data / "spool"
    spool.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = spool / f"run-{run_id}.json"
    path.write_text(json.dumps(spooled_result(run_id, **change)))
    return path


def claim_runs(url: str, job: str, count: int) -> list[int]:
    """Claim `count` manual runs of `job` through schedctl's own run-path store; return ids."""
    from schedctl import __version__
    from schedctl.clock import SystemClock
    from schedctl.config import parse_database_url
    from schedctl.db.repository import Claim, open_repository
    from schedctl.models import Trigger

    db = open_repository(parse_database_url(url), SystemClock(), "test")
    try:
        found = db.load_job(job)
        claim = Claim(found, None, Trigger.MANUAL, 1, "elsewhere", 1, db.now(), 0.0, __version__)
        ids = [db.claim(claim) for _ in range(count)]
    finally:
        db.close()
    return [i for i in ids if i is not None]


LANDINGS_SQLITE = (
    "CREATE TABLE spool_landings (run_id INTEGER NOT NULL);"
    "CREATE TRIGGER spool_landed AFTER UPDATE OF output_tail ON runs "
    f"WHEN NEW.output_tail LIKE '{SPOOLED}%' "
    "BEGIN INSERT INTO spool_landings VALUES (NEW.id); END;"
)
LANDINGS_PG = (
    "CREATE TABLE spool_landings (run_id bigint NOT NULL)",
    "CREATE FUNCTION spool_landed() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN INSERT INTO spool_landings VALUES (NEW.id); RETURN NEW; END $$",
    "CREATE TRIGGER spool_landed AFTER UPDATE OF output_tail ON runs FOR EACH ROW "
    f"WHEN (NEW.output_tail LIKE '{SPOOLED}%') EXECUTE FUNCTION spool_landed()",
)


def count_landings(url: str) -> None:
    """Count, in the database itself, every write of a spooled result to a run row."""
    if url.startswith("sqlite"):
        lite = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        lite.executescript(LANDINGS_SQLITE)
        lite.close()
        return
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in LANDINGS_PG:
            conn.execute(statement)


def landings(url: str) -> list[int]:
    query = "SELECT run_id FROM spool_landings ORDER BY run_id"
    if url.startswith("sqlite"):
        lite = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            return [int(r[0]) for r in lite.execute(query)]
        finally:
            lite.close()
    with psycopg.connect(url) as conn:
        return [int(r[0]) for r in conn.execute(query)]


def events(err: str, name: str) -> list[str]:
    return [line for line in err.splitlines() if f" event={name} " in f"{line} "]


# -- item 1: a bad spool file is set aside; every command carries on ---------------------------

BAD_FILES: dict[str, tuple[str, str, str]] = {
    # kind: (file name, content, what the warning says). The content is raw text, or a valid
    # result as it is ("good"), without a key ("drop:KEY"), or with another status.
    "truncated JSON": ("run-{id}.json", "{", "not JSON"),
    "empty": ("run-{id}.json", "", "an empty file"),
    "missing key": ("run-{id}.json", "drop:finished_at", "lacks finished_at"),
    "bad status": ("run-{id}.json", "status:exploded", "unknown status 'exploded'"),
    "bad name": ("run-abc.json", "good", "its name is not run-NUMBER.json"),
    "unknown run": ("run-987654.json", "good", "the database has no run 987654"),
    # JSON can spell what no database stores: the file must not wait for a database forever.
    "lone surrogate": ("run-{id}.json", "tail:a\ud800b", "output_tail holds a lone surrogate"),
}


def bad_content(kind: str, run_id: int) -> str:
    content = BAD_FILES[kind][1]
    if content != "good" and not content.startswith(("drop:", "status:", "tail:")):
        return content
    data = spooled_result(987654 if kind == "unknown run" else run_id)
    if content.startswith("drop:"):
        del data["result"][content.split(":", 1)[1]]
    elif content.startswith("status:"):
        data["result"]["status"] = content.split(":", 1)[1]
    elif content.startswith("tail:"):
        data["result"]["output_tail"] = content.split(":", 1)[1]
    return json.dumps(data)


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_a_bad_spool_file_is_set_aside_and_the_job_runs(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path, kind: str
) -> None:
    cli, url, _ = backend
    side = tmp_path / "side"
    ok(cli("add", "job", "-s", "@daily", "--shell", "--", f"echo ran >> {side}"))
    (run_id,) = claim_runs(url, "job", 1)
    name = BAD_FILES[kind][0].format(id=run_id)
    spool = tmp_path / "data" / "spool"
    spool.mkdir(parents=True, exist_ok=True, mode=0o700)
    content = bad_content(kind, run_id)
    (spool / name).write_text(content)

    result = cli("run", "job", "--now")

    assert result.rc == 0, result.err
    assert side.read_text() == "ran\n"  # the job ran
    (warning,) = events(result.err, "spool.bad_record")  # one warning, naming file and reason
    assert "level=warning" in warning
    assert f"path={spool / 'bad' / name}" in warning
    assert BAD_FILES[kind][2] in warning, warning
    assert (spool / "bad" / name).read_text() == content  # kept as it was
    assert sorted(os.listdir(spool)) == ["bad"]
    rows = {r["id"]: r for r in run_rows(url)}
    assert (rows[run_id]["exit_code"], rows[run_id]["output_tail"]) == (None, None)  # untouched
    again = cli("run", "job", "--now")  # the bad file is out of the way for good
    assert again.rc == 0 and not events(again.err, "spool.bad_record"), again.err


def test_every_command_carries_on_past_bad_spool_files(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    cli, _, _ = backend
    ok(cli("add", "job", "-s", "@daily", "--", "true"))
    spool = tmp_path / "data" / "spool"
    spool.mkdir(parents=True, exist_ok=True, mode=0o700)
    for n, args in enumerate(
        [("list",), ("add", "other", "-s", "@daily", "--", "true"), ("check", "--settle", "job")]
    ):
        (spool / f"run-{n + 1}.json").write_text("{")
        result = cli(*args)
        assert result.rc == 0, (args, result.out, result.err)
        (warning,) = events(result.err, "spool.bad_record")
        assert f"path={spool / 'bad' / f'run-{n + 1}.json'}" in warning
    assert sorted(os.listdir(spool / "bad")) == ["run-1.json", "run-2.json", "run-3.json"]


def runs_total(cli: Cli) -> dict[str, float]:
    """Return schedctl_runs_total by status, as `metrics` reports it."""
    out = ok(cli("metrics")).out
    found = re.findall(r'^schedctl_runs_total\{job="job",status="(\w+)"\} (\S+)$', out, re.M)
    return {status: float(n) for status, n in found}


def test_a_spooled_result_never_replaces_a_final_one(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    cli, url, _ = backend
    ok(cli("add", "job", "-s", "@daily", "--", "sh", "-c", "echo ran"))
    ok(cli("run", "job", "--now"))
    (row,) = run_rows(url)
    assert (row["status"], row["exit_code"]) == ("succeeded", 0)
    spool = spool_file(tmp_path / "data", row["id"], exit_code=9)  # a stale copy: failed 9
    spool.chmod(0o600)

    result = ok(cli("list"))

    (warning,) = events(result.err, "spool.bad_record")
    assert f"run {row['id']} is final already (succeeded)" in warning, warning
    assert (spool.parent / "bad" / spool.name).exists()
    assert not spool.exists()
    (after,) = run_rows(url)
    assert (after["status"], after["exit_code"], after["output_tail"]) == ("succeeded", 0, "ran\n")
    assert runs_total(cli) == {"succeeded": 1.0}


def test_a_spooled_result_finishes_a_run_marked_lost(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    # The runner was cut off from the database; meanwhile its row was reconciled to `lost`
    # (on SQLite by a command of its own host). Its spooled result is the real outcome.
    cli, url, env = backend
    ok(cli("add", "job", "-s", "@daily", "--", "true"))
    (run_id,) = claim_runs(url, "job", 1)  # host "elsewhere", a runner that is gone
    elsewhere = make_cli(tmp_path, SCHEDCTL_HOST="elsewhere",
                         **{k: v for k, v in env.items() if k == "SCHEDCTL_DATABASE_URL"})  # fmt: skip
    ok(elsewhere("history"))
    (row,) = run_rows(url)
    assert row["status"] == "lost"
    spool_file(tmp_path / "data", run_id).chmod(0o600)

    result = ok(cli("list"))

    assert "count=1" in events(result.err, "spool.flushed")[0], result.err
    (row,) = run_rows(url)
    assert (row["status"], row["exit_code"], row["output_tail"]) == (
        "failed",
        3,
        f"{SPOOLED}{run_id}",
    )
    assert os.listdir(tmp_path / "data" / "spool") == []


@contextmanager
def own_server() -> Iterator[PgServer]:
    server = start_server()
    try:
        yield server
    finally:
        destroy(server)


def test_an_outage_while_flushing_keeps_the_file_for_later(tmp_path: Path) -> None:
    # The flushing session is cut off by the server while it writes the result: the file must
    # stay pending (not set aside), and the next command must write it.
    with own_server() as server:
        url = server.url(server.create_database())
        cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url)
        ok(cli("db", "upgrade"))
        ok(cli("add", "job", "-s", "@daily", "--", "true"))
        (run_id,) = claim_runs(url, "job", 1)
        path = spool_file(tmp_path / "data", run_id)
        content = path.read_bytes()
        with psycopg.connect(url) as blocker:
            # Hold the row so the flush's UPDATE waits where the test can see it.
            blocker.execute("SELECT 1 FROM runs WHERE id = %s FOR UPDATE", (run_id,))
            flusher = subprocess.Popen(
                [str(BIN), "list"],
                env=cli_env(tmp_path, SCHEDCTL_DATABASE_URL=url),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            with psycopg.connect(url, autocommit=True) as admin:
                killed = 0
                for _ in range(200):
                    killed = len(
                        admin.execute(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE runs%'"
                        ).fetchall()
                    )
                    if killed:
                        break
                    time.sleep(0.05)
                assert killed == 1
            _, err = flusher.communicate(timeout=60)
            blocker.rollback()
        assert flusher.returncode == 0, err  # `list` itself carries on
        (kept,) = events(err, "spool.kept")
        assert "level=warning" in kept and "count=1" in kept
        assert not events(err, "spool.bad_record")
        assert path.read_bytes() == content  # in place, as it was
        assert sorted(os.listdir(path.parent)) == [path.name]
        (row,) = run_rows(url)
        assert row["status"] == "running"

        later = ok(cli("list"))
        (flushed,) = events(later.err, "spool.flushed")
        assert "count=1" in flushed
        (row,) = run_rows(url)
        assert (row["status"], row["exit_code"], row["output_tail"]) == (
            "failed",
            3,
            f"{SPOOLED}{run_id}",
        )
        assert os.listdir(path.parent) == []


# -- item 2: concurrent flushes take each file once --------------------------------------------


def test_concurrent_runs_write_each_spooled_result_exactly_once(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    cli, url, env = backend
    procs, files, rounds = 16, 150, 2
    side = tmp_path / "side"
    for k in range(procs):
        ok(cli("add", f"j{k}", "-s", "@daily", "--shell", "--", f"echo j{k} >> {side}"))
    ok(cli("add", "seed", "-s", "@daily", "--", "true"))
    count_landings(url)
    spooled: list[int] = []
    flushed = 0
    for _ in range(rounds):
        ids = claim_runs(url, "seed", files)
        for run_id in ids:
            spool_file(tmp_path / "data", run_id, status="timed_out", exit_code=124)
        spooled += ids
        runs = [
            subprocess.Popen(
                [str(BIN), "run", f"j{k}", "--now"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for k in range(procs)
        ]
        results = [(p.communicate(timeout=300)[1], p.returncode) for p in runs]
        failed = [(rc, err) for err, rc in results if rc != 0]
        assert failed == [], failed[:2]
        for err, _ in results:
            assert not events(err, "spool.bad_record") and not events(err, "spool.kept"), err
            flushed += sum(int(m) for m in re.findall(r"event=spool\.flushed count=(\d+)", err))
    # Every job ran once a round; every spooled result landed exactly once; nothing is left.
    ran = side.read_text().split()
    assert sorted(ran) == sorted(f"j{k}" for k in range(procs) for _ in range(rounds))
    assert flushed == len(spooled) == rounds * files
    assert landings(url) == sorted(spooled)
    rows = {r["id"]: r for r in run_rows(url, "seed")}
    assert all(
        (rows[i]["status"], rows[i]["exit_code"], rows[i]["output_tail"])
        == ("timed_out", 124, f"{SPOOLED}{i}")
        for i in spooled
    )
    assert os.listdir(tmp_path / "data" / "spool") == []


def test_a_file_taken_by_a_flusher_that_died_is_put_back(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    # A flusher killed between taking a file and storing it leaves it under its own name;
    # one that is alive holds the file's lock, and its file must be left alone.
    cli, url, _ = backend
    ok(cli("add", "job", "-s", "@daily", "--", "true"))
    dead_id, live_id = claim_runs(url, "job", 2)
    spool = tmp_path / "data" / "spool"
    for run_id in (dead_id, live_id):
        spool_file(tmp_path / "data", run_id)
    dead = spool / f".taken.999999.0badf00d.run-{dead_id}.json"
    live = spool / f".taken.{os.getpid()}.5eed5eed.run-{live_id}.json"
    (spool / f"run-{dead_id}.json").rename(dead)
    (spool / f"run-{live_id}.json").rename(live)
    import fcntl

    with open(live, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        result = ok(cli("list"))
        assert "count=1" in events(result.err, "spool.flushed")[0]
        assert sorted(os.listdir(spool)) == [live.name]
    rows = {r["id"]: r["output_tail"] for r in run_rows(url)}
    assert rows == {dead_id: f"{SPOOLED}{dead_id}", live_id: None}


# -- item 3: a spool that cannot be written ----------------------------------------------------


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here ({done.stderr.strip()}); needs root in a mount namespace")


@pytest.mark.parametrize("fault", ["disk full", "read-only spool"])
def test_a_spool_that_cannot_be_written_keeps_the_jobs_exit_code(
    tmp_path: Path, fault: str
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    spool = data / "spool"
    mounts: list[Path] = []
    with own_server() as server:
        url = server.url(server.create_database())
        env = cli_env(tmp_path, SCHEDCTL_DATABASE_URL=url, SCHEDCTL_HEARTBEAT="60")
        cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url)
        ok(cli("db", "upgrade"))
        command, started, go = held(tmp_path, "; exit 7")
        ok(cli("add", "seven", "-s", "@daily", "--shell", "--", command))
        try:
            if fault == "disk full":
                _mount("-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(data))
                mounts.append(data)
                spool.mkdir(mode=0o700)
                fd = os.open(data / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
                try:
                    while True:
                        os.write(fd, b"x" * 4096)
                except OSError as e:
                    assert e.errno == 28  # ENOSPC: the data directory is full
                finally:
                    os.close(fd)
            else:
                spool.mkdir(mode=0o700)
                _mount("--bind", str(spool), str(spool))
                mounts.append(spool)
                _mount("-o", "remount,bind,ro", str(spool))
            runner = subprocess.Popen(
                [str(BIN), "run", "seven", "--now"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            wait_started(started, runner)
            server.stop("fast")  # the database is gone when the job ends
            go.touch()
            _, err = runner.communicate(timeout=60)
            left = os.listdir(spool)
        finally:
            for mount in reversed(mounts):
                subprocess.run(["umount", str(mount)], check=True)
        assert runner.returncode == 7, err  # the job's own exit status
        errors = [line for line in err.splitlines() if not line.startswith("timestamp=")]
        assert len(errors) == 1, err
        line = errors[0]
        assert line.startswith("schedctl: error: the result of run 1 of job seven (failed, exit 7)")
        assert "could not be recorded" in line and f"spool file in {spool}" in line
        why = "No space left on device" if fault == "disk full" else "Read-only file system"
        assert why in line and "history will show the run as lost" in line
        assert "Traceback" not in err and "internal error" not in err
        assert left == []  # no partial file
        server.start()
        ok(cli("history"))
        (row,) = run_rows(url)
        # Not recorded, as the line says: `running` until the run's fence has passed, then `lost`.
        assert (row["status"], row["exit_code"]) in (("running", None), ("lost", None))


# -- item 4: another user's data directory -----------------------------------------------------

VICTIM = "root's precious file\n"


@pytest.fixture
def attacker() -> Iterator[tuple[Path, Any]]:
    """(world-writable directory, a function running shell code as `nobody`), as root."""
    if os.geteuid() != 0:
        pytest.skip("acting as another user needs root")
    nobody = pwd.getpwnam("nobody")
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    top = Path(tempfile.mkdtemp(prefix="schedctl-attack-"))  # pytest's tmp dirs are 0700
    top.chmod(0o755)
    public = top / "public"
    public.mkdir()
    public.chmod(0o1777)

    def as_nobody(script: str) -> None:
        subprocess.run(
            [runuser, "-u", "nobody", "--", "sh", "-ec", script],
            check=True,
            cwd=public,
            env={"PATH": "/usr/bin:/bin"},
        )
        assert nobody.pw_uid != 0

    try:
        yield public, as_nobody
    finally:
        shutil.rmtree(top)


def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim"
    path.write_text(VICTIM)
    path.chmod(0o600)
    return path


def sqlite_setup(tmp_path: Path) -> tuple[str, Cli]:
    """A database of root's own (outside the attacked data directory), with job 1."""
    url = f"sqlite:///{tmp_path / 'db' / 'schedctl.db'}"
    setup = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url)
    ok(setup("add", "job", "-s", "@daily", "--", "sh", "-c", "echo ran; exit 3"))
    return url, setup


def test_a_symlinked_lock_file_in_an_attackers_directory_is_not_followed(
    attacker: tuple[Path, Any], tmp_path: Path
) -> None:
    public, as_nobody = attacker
    target = victim(tmp_path)
    url, _ = sqlite_setup(tmp_path)
    as_nobody(f"mkdir -p data/locks; ln -s {target} data/locks/1.lock")
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url, SCHEDCTL_DATA_DIR=str(public / "data"))
    result = cli("run", "job", "--now")
    one_line_error(
        result, 78, f"unsafe data directory {public / 'data'}: it belongs to user nobody"
    )
    assert "chown" in result.err
    assert target.read_text() == VICTIM
    assert run_rows(url) == []  # refused before the claim: nothing ran


def test_a_symlink_planted_in_roots_own_directories_is_not_followed(
    attacker: tuple[Path, Any], tmp_path: Path
) -> None:
    # Planted while the directory was open to others; the directory was fixed, the link stayed.
    target = victim(tmp_path)
    url, _ = sqlite_setup(tmp_path)
    data = tmp_path / "data"
    (data / "locks").mkdir(parents=True, mode=0o700)
    os.symlink(target, data / "locks" / "1.lock")
    nobody = pwd.getpwnam("nobody")
    os.lchown(data / "locks" / "1.lock", nobody.pw_uid, nobody.pw_gid)
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url)
    result = cli("run", "job", "--now")
    one_line_error(result, 78, f"unsafe lock file {data / 'locks' / '1.lock'}: it is a symlink")
    assert target.read_text() == VICTIM


def test_a_symlinked_spool_tmp_file_is_not_followed(
    attacker: tuple[Path, Any], tmp_path: Path
) -> None:
    public, as_nobody = attacker
    target = victim(tmp_path)
    with own_server() as server:
        url = server.url(server.create_database())
        setup = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url)
        ok(setup("db", "upgrade"))
        command, started, go = held(tmp_path)
        ok(setup("add", "job", "-s", "@daily", "--shell", "--", command))
        # The attacker's own data directory, with the old fixed temporary name planted.
        as_nobody(f"mkdir -p data/spool; ln -s {target} data/spool/.run-1.json.tmp")
        attacked = make_cli(
            tmp_path, SCHEDCTL_DATABASE_URL=url, SCHEDCTL_DATA_DIR=str(public / "data")
        )
        refused = attacked("run", "job", "--now")
        one_line_error(
            refused, 78, f"unsafe data directory {public / 'data'}: it belongs to user nobody"
        )
        assert run_rows(url) == []
        # Root's own directory, the same link planted in it (before it was made private).
        spool = tmp_path / "data" / "spool"
        spool.mkdir(parents=True, mode=0o700)
        os.symlink(target, spool / ".run-1.json.tmp")
        env = cli_env(tmp_path, SCHEDCTL_DATABASE_URL=url, SCHEDCTL_HEARTBEAT="60")
        runner = subprocess.Popen(
            [str(BIN), "run", "job", "--now"], env=env, stderr=subprocess.PIPE, text=True
        )
        wait_started(started, runner)
        server.stop("fast")  # the database is gone when the job ends
        go.touch()
        _, err = runner.communicate(timeout=60)
        assert runner.returncode == 0, err
        assert "event=run.spooled" in err
        assert target.read_text() == VICTIM
        assert sorted(os.listdir(spool)) == [".run-1.json.tmp", "run-1.json"]
        assert json.loads((spool / "run-1.json").read_text())["result"]["status"] == "succeeded"


def test_results_forged_in_an_attackers_spool_directory_are_refused(
    attacker: tuple[Path, Any], tmp_path: Path
) -> None:
    public, as_nobody = attacker
    url, setup = sqlite_setup(tmp_path)
    assert setup("run", "job", "--now").rc == 3  # a real failure, recorded
    forged = json.dumps(spooled_result(1, status="succeeded", exit_code=0))
    as_nobody(f"mkdir -p data/spool; printf '%s' '{forged}' > data/spool/run-1.json")
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url, SCHEDCTL_DATA_DIR=str(public / "data"))
    for args in (("list",), ("run", "job", "--now")):
        one_line_error(
            cli(*args), 78, f"unsafe data directory {public / 'data'}: it belongs to user nobody"
        )
    check = cli("check")
    assert check.rc == 3 and "unsafe data directory" in check.out
    # Root's own data directory, but a spool directory the attacker owns inside it.
    data = tmp_path / "own"
    data.mkdir(mode=0o700)
    shutil.copytree(public / "data" / "spool", data / "spool", symlinks=True)
    nobody = pwd.getpwnam("nobody")
    os.chown(data / "spool", nobody.pw_uid, nobody.pw_gid)
    own = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url, SCHEDCTL_DATA_DIR=str(data))
    one_line_error(
        own("list"), 78, f"unsafe spool directory {data / 'spool'}: it belongs to user nobody"
    )
    (row,) = run_rows(url)
    assert (row["status"], row["exit_code"]) == ("failed", 3)  # not forged


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777])
def test_a_data_directory_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    url, _ = sqlite_setup(tmp_path)
    data = tmp_path / "shared"
    data.mkdir()
    data.chmod(mode)
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url, SCHEDCTL_DATA_DIR=str(data))
    for args in (("run", "job", "--now"), ("list",)):
        result = cli(*args)
        one_line_error(result, 78, f"unsafe data directory {data}: writable by")
        assert f"chmod go-w {data}" in result.err
    assert run_rows(url) == []
    data.chmod(0o700)
    assert cli("run", "job", "--now").rc == 3  # fixed as the message says: it runs


@pytest.mark.parametrize(
    ("name", "what"), [("spool", "spool"), ("locks", "lock"), ("procs", "process record")]
)
def test_a_subdirectory_another_user_owns_is_refused(tmp_path: Path, name: str, what: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a directory to another user needs root")
    url, _ = sqlite_setup(tmp_path)
    sub = tmp_path / "data" / name
    sub.mkdir(parents=True, mode=0o700)
    nobody = pwd.getpwnam("nobody")
    os.chown(sub, nobody.pw_uid, nobody.pw_gid)
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url)
    for args in (("run", "job", "--now"), ("list",)):
        one_line_error(cli(*args), 78, f"unsafe {what} directory {sub}: it belongs to user nobody")
    assert run_rows(url) == []


@pytest.mark.parametrize(
    ("name", "what"), [("spool", "spool"), ("locks", "lock"), ("procs", "process record")]
)
def test_a_symlinked_subdirectory_is_refused_before_anything_runs(
    tmp_path: Path, name: str, what: str
) -> None:
    url, _ = sqlite_setup(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / name).symlink_to(elsewhere)
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url)
    for args in (("run", "job", "--now"), ("list",)):
        result = cli(*args)
        one_line_error(result, 78, f"unsafe {what} directory {data / name}: a symlink")
        assert f"rm {data / name}" in result.err
    check = cli("check")
    assert check.rc == 3 and f"unsafe {what} directory" in check.out
    assert run_rows(url) == []  # refused before the claim: nothing ran
    assert os.listdir(elsewhere) == []
    (data / name).unlink()
    assert cli("run", "job", "--now").rc == 3  # removed as the message says: it runs
