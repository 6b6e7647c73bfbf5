"""Cut a host running a long job off the network without closing its TCP connection; time both ends.

Usage (as root): unshare --net python cutoff_driver.py. This namespace holds the PostgreSQL
server; the host is a second namespace joined to it by a veth pair, where `schedctl run` of
a long job runs over TCP. The cut: each side's neighbour entry for the other is pointed at a
MAC address nobody has, so every packet either way is dropped in silence while both links
stay up and no socket sees an error, as on a partitioned network. The server stays
reachable to this driver over its own loopback. Prints one JSON line with the figures,
seconds from the cut:
- lock_freed / session_gone: pg_locks no longer shows the run's advisory lock, and
  pg_stat_activity no longer shows its session (the server's TCP keepalives at work);
- job_gone: the job's process has ended (the runner's heartbeat at work);
- runner_exit: `schedctl run` itself has exited; then its exit code, its events, and the
  status of the run once the host's spool was flushed after the network came back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from pgserver import destroy, start_server

from schedctl.locking import LOCK_NAMESPACE

SERVER_IP, HOST_IP = "10.231.0.1", "10.231.0.2"
NOWHERE = {SERVER_IP: "02:00:00:00:0b:01", HOST_IP: "02:00:00:00:0b:02"}
GIVE_UP = 120.0  # far beyond both bounds under test
SCHEDCTL = str(Path(sys.executable).parent / "schedctl")


def sh(*argv: str, netns: str | None = None) -> None:
    prefix = ["nsenter", f"--net={netns}"] if netns else []
    subprocess.run([*prefix, *argv], check=True, capture_output=True)


def host_namespace() -> tuple[subprocess.Popen[bytes], str]:
    """Start a process in a network namespace of its own; return it and its namespace path."""
    ours = os.readlink("/proc/self/ns/net")
    holder = subprocess.Popen(["unshare", "--net", "sleep", "600"])
    path = f"/proc/{holder.pid}/ns/net"
    deadline = time.monotonic() + 10
    while os.readlink(path) == ours:
        assert time.monotonic() < deadline, "the host's namespace did not appear"
        time.sleep(0.01)
    return holder, path


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def main() -> dict[str, Any]:
    sh("ip", "link", "set", "lo", "up")
    holder, netns = host_namespace()
    sh("ip", "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", str(holder.pid))
    sh("ip", "addr", "add", f"{SERVER_IP}/24", "dev", "va")
    sh("ip", "link", "set", "va", "up")
    sh("ip", "link", "set", "lo", "up", netns=netns)
    sh("ip", "addr", "add", f"{HOST_IP}/24", "dev", "vb", netns=netns)
    sh("ip", "link", "set", "vb", "up", netns=netns)
    server = start_server(settings={"listen_addresses": f"127.0.0.1,{SERVER_IP}"})
    work = server.root / "host"
    runner: subprocess.Popen[str] | None = None
    try:
        with (server.data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {HOST_IP}/32 scram-sha-256\n")
        server._run(str(server.bindir / "pg_ctl"), "-D", str(server.data), "reload")
        db = server.create_database()
        local = server.url(db)
        remote = local.replace("127.0.0.1", SERVER_IP)
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(work),
            "SCHEDCTL_CONFIG": "/dev/null",
            "SCHEDCTL_DATA_DIR": str(work / "data"),
            "SCHEDCTL_HOST": "cut-off",
            "SCHEDCTL_LOG_LEVEL": "info",
            "SCHEDCTL_DATABASE_URL": remote,
        }
        pidfile = work / "job.pid"
        for argv in (
            ["db", "upgrade"],
            [
                "add",
                "long",
                "-s",
                "@yearly",
                "--shell",
                "--",
                f"echo $$ > {pidfile}; exec sleep 600",
            ],
        ):
            subprocess.run(
                ["nsenter", f"--net={netns}", SCHEDCTL, *argv], env=env, check=True,
                capture_output=True,
            )  # fmt: skip
        runner = subprocess.Popen(
            ["nsenter", f"--net={netns}", SCHEDCTL, "run", "long", "--now"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        admin = psycopg.connect(local, autocommit=True)
        deadline = time.monotonic() + 60
        backend = None
        while backend is None or not pidfile.exists() or not pidfile.read_text().strip():
            if time.monotonic() > deadline or runner.poll() is not None:
                runner.kill()
                locks = admin.execute(
                    "SELECT l.*, a.client_addr FROM pg_locks l JOIN pg_stat_activity a "
                    "USING (pid) WHERE l.locktype = 'advisory'"
                ).fetchall()
                raise AssertionError(
                    f"the job did not start: {runner.communicate()[1]} {locks} {pidfile.exists()}"
                )
            row = admin.execute(
                "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                "WHERE l.locktype = 'advisory' AND l.classid = %s AND l.granted "
                "AND a.client_addr = %s",
                (LOCK_NAMESPACE, HOST_IP),
            ).fetchone()
            backend = None if row is None else int(row[0])
            time.sleep(0.05)
        job_pid = int(pidfile.read_text())
        time.sleep(1)  # a heartbeat or so on a healthy network first
        # The cut: each side sends to a MAC address nobody has; nothing errors, nothing arrives.
        sh("ip", "neigh", "replace", HOST_IP, "lladdr", NOWHERE[HOST_IP], "dev", "va",
           "nud", "permanent")  # fmt: skip
        sh("ip", "neigh", "replace", SERVER_IP, "lladdr", NOWHERE[SERVER_IP], "dev", "vb",
           "nud", "permanent", netns=netns)  # fmt: skip
        cut = time.monotonic()
        seen: dict[str, float] = {}
        while len(seen) < 4 and time.monotonic() - cut < GIVE_UP:
            now = time.monotonic() - cut
            if (
                "lock_freed" not in seen
                and not admin.execute(
                    "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = %s "
                    "AND pid = %s",
                    (LOCK_NAMESPACE, backend),
                ).fetchone()
            ):
                seen["lock_freed"] = now
            if (
                "session_gone" not in seen
                and not admin.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (backend,)
                ).fetchone()
            ):
                seen["session_gone"] = now
            if "job_gone" not in seen and not alive(job_pid):
                seen["job_gone"] = now
            if "runner_exit" not in seen and runner.poll() is not None:
                seen["runner_exit"] = now
            time.sleep(0.05)
        # The network comes back; the host's next command writes what its run spooled.
        sh("ip", "neigh", "del", HOST_IP, "dev", "va")
        sh("ip", "neigh", "del", SERVER_IP, "dev", "vb", netns=netns)
        if runner.poll() is None:
            runner.kill()
        err = runner.communicate(timeout=30)[1]
        subprocess.run(
            ["nsenter", f"--net={netns}", SCHEDCTL, "list"], env=env, check=True,
            capture_output=True,
        )  # fmt: skip
        status = admin.execute("SELECT status FROM runs WHERE job_name = 'long'").fetchall()
        admin.close()
        events = sorted({w.split("=", 1)[1] for w in err.split() if w.startswith("event=")})
        return {
            **seen,
            "runner_rc": runner.returncode,
            "events": events,
            "statuses": [str(s) for (s,) in status],
            "traceback": "Traceback" in err,
            "stderr_tail": err.strip().splitlines()[-3:],
        }
    finally:
        if runner is not None and runner.poll() is None:
            runner.kill()
        holder.kill()
        destroy(server)


if __name__ == "__main__":
    print(json.dumps(main()))
    sys.stdout.flush()
