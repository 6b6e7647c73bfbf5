"""A throwaway PostgreSQL server for the test suite, run as an unprivileged user.

PostgreSQL refuses to run as root, and CI runs as root: then the server runs as `nobody`.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg


def find_bindir() -> Path | None:
    """Return the newest PostgreSQL server bin directory on this machine."""
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(Path(d).parent.name))
    for d in reversed(dirs):
        if (Path(d) / "initdb").exists():
            return Path(d)
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


def free_port() -> int:
    """Return a TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CommandFailed(subprocess.CalledProcessError):
    """A server command that failed, saying why: its own stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()} {self.stderr!r}"


@dataclass
class PgServer:
    """A running server; `url(db)` builds connection URLs with the superuser password."""

    bindir: Path
    root: Path
    port: int
    password: str
    user: str = "postgres"
    # Added to the environment of initdb, pg_ctl and so the server (libfaketime, say).
    env: dict[str, str] | None = None
    # Server settings (`-c NAME=VALUE`) given after the suite's own, so they win.
    settings: dict[str, str] | None = None

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def sockdir(self) -> Path:
        return self.root / "sock"

    def url(self, dbname: str = "postgres", password: str | None = None) -> str:
        pw = self.password if password is None else password
        return f"postgresql://{self.user}:{pw}@127.0.0.1:{self.port}/{dbname}"

    def _as_owner(self, *argv: str) -> list[str]:
        # The server's own variables are set after the switch to nobody: a preloaded runuser
        # (libfaketime) would create its semaphore as root and hand its name down, and nobody's
        # process, unable to open it, exits whenever its pid names a root-owned leftover.
        extra = [f"{k}={v}" for k, v in (self.env or {}).items()]
        if os.geteuid() == 0:
            runuser = shutil.which("runuser") or "/usr/sbin/runuser"
            return [runuser, "-u", "nobody", "--", "env", *extra, *argv]
        return ["env", *extra, *argv] if extra else list(argv)

    def _run(self, *argv: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "FAKETIME_SHARED"}
        done = subprocess.run(
            self._as_owner(*argv), check=False, capture_output=True, timeout=120, env=env
        )
        if done.returncode != 0:
            raise CommandFailed(done.returncode, argv, done.stdout, done.stderr)

    def start(self) -> None:
        opts = (
            f"-p {self.port} -k {self.sockdir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        opts += "".join(f" -c {k}={v}" for k, v in (self.settings or {}).items())
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-o",
            opts,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url(), autocommit=True)

    def create_database(self) -> str:
        name = "t_" + secrets.token_hex(6)
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name


def _bindir() -> Path:
    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError(
            "PostgreSQL server binaries not found: apt-get install postgresql "
            "(.ci/run does this on a fresh machine)"
        )
    return bindir


def _server_root() -> Path:
    """Return a fresh directory (with its socket directory) the server's owner can use."""
    root = Path(tempfile.mkdtemp(prefix="schedctl-pg-"))
    (root / "sock").mkdir()
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        for p in (root, root / "sock"):
            os.chown(p, nobody.pw_uid, nobody.pw_gid)
    return root


def start_server(
    env: dict[str, str] | None = None, settings: dict[str, str] | None = None
) -> PgServer:
    """Initialise and start a server in a fresh temp dir (`env` added to its environment)."""
    bindir = _bindir()
    root = _server_root()
    password = secrets.token_urlsafe(16)
    pwfile = root / "pw"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(pwfile, nobody.pw_uid, nobody.pw_gid)
    # Its port: just before it starts.
    server = PgServer(bindir, root, 0, password, env=env, settings=settings)
    server._run(
        str(bindir / "initdb"),
        "-D",
        str(server.data),
        "-U",
        "postgres",
        "-E",
        "UTF8",
        "--auth-local=trust",
        "--auth-host=scram-sha-256",
        f"--pwfile={pwfile}",
        "--no-sync",
    )
    _start_on_a_free_port(server)
    return server


def _start_on_a_free_port(server: PgServer) -> None:
    # The port was free a moment ago; a parallel test worker (or anything else on the machine)
    # may have bound it since: then another free port.
    root = server.root
    server.port = free_port()
    tries = 5
    while True:
        try:
            server.start()
            return
        except subprocess.CalledProcessError:
            tries -= 1
            log = root / "log"
            taken = log.exists() and "could not bind" in log.read_text(errors="replace")
            if not (tries and taken):
                raise
            server.port = free_port()


# A primary that streams its WAL to a standby (PostgreSQL 15's defaults already allow it; said
# here so the test does not depend on them).
PRIMARY_SETTINGS = {"wal_level": "replica", "max_wal_senders": "5", "wal_keep_size": "64MB"}


def start_standby(primary: PgServer, settings: dict[str, str] | None = None) -> PgServer:
    """Start a streaming standby of `primary`: `pg_basebackup -R` as the server's owner.

    The standby's `primary_conninfo` (written by -R) names the primary's address and its
    superuser password, so it replicates as soon as it starts.
    """
    root = _server_root()
    standby = PgServer(
        primary.bindir, root, 0, primary.password, env=primary.env, settings=settings
    )
    standby._run(
        "env",
        f"PGPASSWORD={primary.password}",
        str(primary.bindir / "pg_basebackup"),
        "-D",
        str(standby.data),
        "-R",
        "-X",
        "stream",
        "--no-sync",
        "-h",
        "127.0.0.1",
        "-p",
        str(primary.port),
        "-U",
        primary.user,
        "-c",
        "fast",
    )
    _start_on_a_free_port(standby)
    return standby


def start_pair(
    standby_settings: dict[str, str] | None = None, primary_settings: dict[str, str] | None = None
) -> tuple[PgServer, PgServer]:
    """Start a primary and a streaming standby of it: (primary, standby)."""
    primary = start_server(settings={**PRIMARY_SETTINGS, **(primary_settings or {})})
    try:
        return primary, start_standby(primary, standby_settings)
    except BaseException:
        destroy(primary)
        raise


def wait_replayed(primary: PgServer, standby: PgServer, timeout: float = 60) -> None:
    """Wait until the standby has replayed everything the primary has written so far."""
    with primary.admin() as conn:
        # The insert position: with synchronous_commit off, a commit may not be written yet.
        row = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()
        assert row is not None
        lsn = row[0]
    deadline = time.monotonic() + timeout
    with standby.admin() as conn:
        while True:
            done = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()
            if done and done[0]:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the standby did not replay the primary's WAL up to {lsn}")
            time.sleep(0.05)


def promote(standby: PgServer) -> None:
    """Make the standby a primary, and wait until it accepts writes."""
    standby._run(str(standby.bindir / "pg_ctl"), "-D", str(standby.data), "-w", "promote")


def destroy(server: PgServer) -> None:
    """Stop the server (if a test has not already) and delete its files."""
    try:
        server.stop("immediate")
    except CommandFailed:
        # Stopped already, by the test or by a smart shutdown it started, which may end
        # while pg_ctl looks: only a server still running is a failure.
        if (server.data / "postmaster.pid").exists():
            raise
    finally:
        shutil.rmtree(server.root, ignore_errors=True)
