"""Throwaway roots that boot a real systemd or run a real Debian cron, for integration tests.

Each sandbox is an overlay over `/` (writes go to a tmpfs) in its own PID, mount, UTS, IPC,
network and cgroup namespaces, with fresh /run, /tmp, /dev and /proc. systemd is never booted
on the machine's own root: its boot-time clean-up would empty the real /tmp. A guard against
accidents for trusted test payloads, not a security boundary.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from cli_helpers import BIN
from pgserver import PgServer

FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
# Units of the host that must not start inside: they would touch the machine or fail noisily.
MASKED = [
    "systemd-udevd.service",
    "systemd-udevd-control.socket",
    "systemd-udevd-kernel.socket",
    "systemd-udev-trigger.service",
    "systemd-udev-settle.service",
    "systemd-sysctl.service",
    "systemd-modules-load.service",
    "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount",
    "systemd-tmpfiles-setup.service",
    "systemd-tmpfiles-setup-dev.service",
    "systemd-tmpfiles-clean.timer",
    "systemd-tmpfiles-clean.service",
    "systemd-timesyncd.service",
    "systemd-pstore.service",
    "systemd-random-seed.service",
    "systemd-remount-fs.service",
    "systemd-firstboot.service",
    "systemd-logind.service",
    "getty.target",
    "getty@tty1.service",
    "console-getty.service",
    "serial-getty@ttyS0.service",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "sys-kernel-config.mount",
    "sys-fs-fuse-connections.mount",
    "dev-hugepages.mount",
    "dev-mqueue.mount",
    "tmp.mount",
    "postgresql.service",
    "postgresql@15-main.service",
    "pgbouncer.service",
    "cron.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "man-db.timer",
    "dpkg-db-backup.timer",
    "fstrim.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "systemd-hwdb-update.service",
    "ldconfig.service",
    "systemd-update-utmp.service",
    "systemd-networkd-wait-online.service",
]

# PID 1 of the new namespaces: build the root, then become systemd or cron.
_INNER = r"""
set -eu
W=$1; MODE=$2; NAME=$3; STAGE=$4; PGSOCK=$5; shift 5
R=$W/root
mount -n -t tmpfs -o mode=755 tmpfs "$W"
mkdir -p "$W/upper" "$W/work" "$R"
mount -n -t overlay overlay -o "lowerdir=/,upperdir=$W/upper,workdir=$W/work" "$R"
mount -n -t proc proc "$R/proc"
for d in sys sysrq-trigger irq bus fs; do
  if [ -e "$R/proc/$d" ]; then
    mount -n --bind "$R/proc/$d" "$R/proc/$d"
    mount -n -o remount,bind,ro "$R/proc/$d" "$R/proc/$d"
  fi
done
mount -n -t sysfs -o ro sysfs "$R/sys"
if [ "$MODE" = systemd ]; then mount -n -t cgroup2 cgroup2 "$R/sys/fs/cgroup"; fi
mount -n -t tmpfs -o mode=755,size=4m tmpfs "$R/dev"
mknod -m 666 "$R/dev/null" c 1 3; mknod -m 666 "$R/dev/zero" c 1 5
mknod -m 666 "$R/dev/full" c 1 7; mknod -m 666 "$R/dev/random" c 1 8
mknod -m 666 "$R/dev/urandom" c 1 9; mknod -m 666 "$R/dev/tty" c 5 0
mkdir -p "$R/dev/pts" "$R/dev/shm" "$R/dev/mqueue"
mount -n -t devpts -o newinstance,ptmxmode=0666 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
mount -n -t tmpfs -o mode=1777 tmpfs "$R/dev/shm"
mount -n -t mqueue mqueue "$R/dev/mqueue"
ln -s /proc/self/fd "$R/dev/fd"; ln -s /proc/self/fd/0 "$R/dev/stdin"
ln -s /proc/self/fd/1 "$R/dev/stdout"; ln -s /proc/self/fd/2 "$R/dev/stderr"
for d in run tmp var/tmp; do mount -n -t tmpfs -o mode=1777 tmpfs "$R/$d"; done
chmod 755 "$R/run"
: > "$R/etc/fstab"
echo "$NAME" > "$R/etc/hostname"
hostname "$NAME"
mkdir -p "$R/run/pg-host"
mount -n --bind "$PGSOCK" "$R/run/pg-host"
mount -n -o remount,bind,ro,nosuid,nodev,noexec "$R/run/pg-host"
# Directories that are not on the root file system (or lie under the fresh /tmp) by path.
for d in "$@"; do
  mkdir -p "$R$d"
  mount -n --bind "$d" "$R$d"
  mount -n -o remount,bind,ro "$R$d"
done
cp -a "$STAGE/." "$R/"
cd "$R"
mkdir -p .oldroot
pivot_root . .oldroot
umount -n -l /.oldroot
if [ "$MODE" = systemd ]; then
  exec env -i container=schedctl-test setpriv \
    --bounding-set -sys_module,-sys_time,-sys_rawio,-syslog,-audit_read,-audit_control,-bpf,-perfmon \
    /lib/systemd/systemd --unit=multi-user.target
fi
exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin /bin/sh /sandbox-cron.sh
"""

# A /dev/log reader for cron (it logs only to syslog), then cron itself, maybe under faketime.
_CRON_INIT = r"""
python3 - <<'EOF' &
import socket
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("/dev/log")
with open("/var/log/cron-sandbox.log", "ab", buffering=0) as f:
    while True:
        f.write(s.recv(65536) + b"\n")
EOF
while [ ! -S /dev/log ]; do sleep 0.05; done
if [ -n "${FAKETIME_AT:-}" ]; then
  exec env LD_PRELOAD=FAKETIME_LIB FAKETIME="@$FAKETIME_AT" cron -f -L 15
fi
exec cron -f -L 15
"""


def cgroup2_root() -> Path | None:
    out = subprocess.run(
        ["findmnt", "-n", "-o", "TARGET", "-t", "cgroup2"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    lines = out.stdout.split()
    return Path(lines[0]) if out.returncode == 0 and lines else None


def unavailable(mode: str) -> str | None:
    """Return why a sandbox cannot run here, or None."""
    if os.geteuid() != 0:
        return "sandboxes need root (namespaces, mounts, cgroups)"
    for tool in ("unshare", "nsenter", "setpriv", "findmnt"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (apt-get install util-linux)"
    if mode == "systemd":
        if not Path("/lib/systemd/systemd").exists():
            return "systemd is not installed"
        if cgroup2_root() is None:
            return "no cgroup2 mount to delegate from"
    if mode == "cron" and shutil.which("cron") is None:
        return "Debian's cron is not installed (apt-get install cron)"
    probe = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount", "--net", "--uts", "--ipc", "true"],
        capture_output=True, check=False,
    )  # fmt: skip
    if probe.returncode != 0:
        return f"cannot create namespaces: {probe.stderr.decode(errors='replace').strip()}"
    return None


class Sandbox:
    """One throwaway root running systemd or cron as its PID 1."""

    def __init__(
        self,
        name: str,
        mode: str,
        pg_sockdir: Path | None,
        files: dict[str, str | tuple[str, int]] | None = None,
        binds: list[Path] | None = None,
        faketime_at: str | None = None,
        logind: bool = False,
    ) -> None:
        why = unavailable(mode)
        if why:
            pytest.skip(why)
        self.name, self.mode = name, mode
        self.checks = 0
        self.work = Path(tempfile.mkdtemp(prefix=f"schedctl-sbx-{name}-"))
        stage = self.work / "stage"
        files = dict(files or {})
        if mode == "systemd":
            for unit in MASKED:
                # logind serves `loginctl enable-linger`, which starts a user's own manager.
                if not (logind and unit == "systemd-logind.service"):
                    files[f"etc/systemd/system/{unit}"] = "@/dev/null"
        else:
            init = _CRON_INIT.replace("FAKETIME_LIB", str(FAKETIME_LIB))
            if faketime_at:
                init = f"FAKETIME_AT='{faketime_at}'\n" + init
            files["sandbox-cron.sh"] = init
        for rel, content in files.items():
            path = stage / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if content == "@/dev/null":
                path.symlink_to("/dev/null")
            elif isinstance(content, tuple):
                path.write_text(content[0])
                path.chmod(content[1])
            else:
                path.write_text(content)
        root = self.work / "mnt"
        root.mkdir()
        if pg_sockdir is None:  # no database wanted: an empty directory in its place
            pg_sockdir = self.work / "no-pg"
            pg_sockdir.mkdir()
        inner = self.work / "inner.sh"
        inner.write_text(_INNER)
        self.cgroup: Path | None = None
        prefix = ""
        if mode == "systemd":
            cg2 = cgroup2_root()
            assert cg2 is not None
            self.cgroup = cg2 / f"schedctl-test.{name}.{os.getpid()}"
            self.cgroup.mkdir()
            prefix = f"echo $$ > {self.cgroup}/cgroup.procs && "
        ns = "--pid --fork --kill-child --mount --propagation private --uts --ipc --net"
        ns += " --cgroup" if mode == "systemd" else ""
        bind_args = " ".join(f"'{b}'" for b in (binds or []))
        cmd = (
            f"{prefix}exec unshare {ns} -- /bin/sh {inner} {root} {mode} {name} {stage} "
            f"'{pg_sockdir}' {bind_args}"
        )
        self.log = (self.work / "outer.log").open("wb")
        self.proc = subprocess.Popen(
            ["/bin/sh", "-c", cmd],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self._inner_pid()

    def _inner_pid(self) -> int:
        """Return the host PID of the sandbox's PID 1 (unshare's child)."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
            try:
                pids = kids.read_text().split()
            except FileNotFoundError:
                pids = []
            if pids:
                return int(pids[0])
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError(f"sandbox {self.name} did not start: {self.outer_log()}")

    def outer_log(self) -> str:
        self.log.flush()
        return (self.work / "outer.log").read_text(errors="replace")[-3000:]

    def path(self, inside: str) -> Path:
        """Return a file inside the sandbox as seen from the host."""
        return Path(f"/proc/{self.pid}/root{inside}")

    def exec(
        self, *argv: str, timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the sandbox's namespaces and root."""
        ns = ["-m", "-u", "-i", "-n", "-p"] + (["-C"] if self.mode == "systemd" else [])
        done = subprocess.run(
            ["nsenter", "-t", str(self.pid), *ns, "--root", "--wd=/", "--", *argv],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(
                f"in sandbox {self.name}: {' '.join(argv)} -> {done.returncode}\n"
                f"{done.stdout}\n{done.stderr}"
            )
        return done

    def wait_pivoted(self, timeout: float = 20) -> None:
        """Wait until PID 1 runs in the new root: before that, `path()` is the host's own."""
        host = Path("/").stat()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sandbox {self.name} exited: {self.outer_log()}")
            with contextlib.suppress(OSError):
                root = self.path("/").stat()
                if (root.st_dev, root.st_ino) != (host.st_dev, host.st_ino):
                    return
            time.sleep(0.02)
        raise RuntimeError(f"sandbox {self.name} did not start in {timeout}s: {self.outer_log()}")

    def crontab_check(self, lines: list[str]) -> list[str | None]:
        """Return Debian's `crontab -n` verdict on each line as a one-line crontab.

        None where it loads, else cron's complaint. `crontab -n` writes a temporary file in the
        spool directory, which is why it runs in here.
        """
        self.wait_pivoted()
        self.checks += 1
        inside = f"/tmp/crontab-check-{self.checks}"
        spool = self.path(inside)
        spool.mkdir()
        for i, line in enumerate(lines):
            (spool / str(i)).write_bytes(line.encode() + b"\n")
        script = (
            f"cd {inside} && for f in $(ls | sort -n); do "
            'if out=$(crontab -n "$f" 2>&1); then echo OK; '
            'else echo "$out" | tr "\\n" " "; echo; fi; done'
        )
        out = self.exec("/bin/sh", "-c", script, timeout=300).stdout.split("\n")[:-1]
        assert len(out) == len(lines), out
        verdicts: list[str | None] = []
        for text in out:
            if text == "OK":
                verdicts.append(None)
                continue
            found = re.search(r"(bad time specifier|bad [a-z-]+|command too long)", text)
            verdicts.append(found.group(1) if found else text)
        return verdicts

    def wait_running(self, timeout: float = 60) -> None:
        """Wait until systemd reports the system running (or degraded, with the reason)."""
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sandbox {self.name} exited: {self.outer_log()}")
            state = self.exec("systemctl", "is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                if state == "degraded":
                    failed = self.exec("systemctl", "--failed", "--no-legend", check=False)
                    print(f"sandbox {self.name} degraded: {failed.stdout}", file=sys.stderr)
                return
            time.sleep(0.1)
        raise RuntimeError(f"sandbox {self.name} not running after {timeout}s: {state!r}")

    def close(self) -> None:
        """Kill PID 1 (and so everything inside), then remove the cgroup and the files."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.log.close()
        if self.cgroup is not None:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                events = (self.cgroup / "cgroup.events").read_text()
                if "populated 0" in events:
                    break
                time.sleep(0.05)
            for d in sorted(self.cgroup.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if d.is_dir():
                    d.rmdir()
            self.cgroup.rmdir()
        shutil.rmtree(self.work, ignore_errors=True)


def socket_url(pg: PgServer, url: str) -> str:
    """The same database through the host server's socket directory as mounted in a sandbox."""
    return f"postgresql://{pg.user}@/{url.rsplit('/', 1)[1]}?host=/run/pg-host&port={pg.port}"


def sandbox_files(pg: PgServer, url: str) -> dict[str, str | tuple[str, int]]:
    return {"etc/schedctl/schedctl.env": (f"SCHEDCTL_DATABASE_URL={socket_url(pg, url)}\n", 0o600)}


def binds() -> list[Path]:
    """Directories a sandbox must see by the same paths."""
    # The installed schedctl (and, for an editable install, the checkout) by the same paths.
    return [BIN.parent.parent, Path(__file__).resolve().parents[1]]
