"""Every process a job starts: find them, stop them, and leave a record that outlives the runner.

A job's processes can leave its process group (`setsid`, daemons), so the process group alone
does not find them. The runner is a child subreaper, so orphans of the job become its children
and the tree below it holds the whole job. Where the host lets schedctl create a cgroup (cgroup2,
writable), the job also runs in a cgroup of its own, which holds it even after the runner dies.
A record of the job's processes (and cgroup) is kept in a private file while the job runs, so
that the next run of the job on the host can stop what a killed runner left behind.

Kept free of heavy imports: it sits on the `schedctl run` path once the claim is won.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37
CGROUP_PREFIX = "schedctl-run-"
_GONE = (b"Z", b"X", b"x")  # zombie or dead: no longer runs


class Proc(NamedTuple):
    """One process, named so that a reused pid is never mistaken for it."""

    pid: int
    start: int  # clock ticks after boot (/proc/PID/stat field 22)


class _Stat(NamedTuple):
    state: bytes
    ppid: int
    start: int


def _stat(pid: int) -> _Stat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # After the parenthesised command name (which may hold anything): state ppid ... starttime.
    fields = raw[raw.rfind(b")") + 2 :].split()
    if len(fields) < 20:
        return None
    return _Stat(fields[0], int(fields[1]), int(fields[19]))


def identify(pid: int) -> Proc | None:
    """Return `pid` with its start time, or None if no such process runs (zombies do not)."""
    st = _stat(pid)
    return Proc(pid, st.start) if st is not None and st.state not in _GONE else None


def alive(proc: Proc) -> bool:
    """Return whether `proc` (that very process, not a reuse of its pid) still runs."""
    return identify(proc.pid) == proc


def boot_id() -> str:
    """Return this boot's id: start times count from boot, so records do not cross a reboot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def children(pid: int) -> list[int]:
    """Return the pids of `pid`'s children (zombies included)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                found += [int(c) for c in f.read().split()]
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}/task/{tid}"):
                continue  # the thread ended meanwhile
            return _children_by_scan(pid)  # a kernel without /proc/PID/task/TID/children
        except OSError:
            continue
    return found


def _children_by_scan(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None and st.ppid == pid:
                found.append(int(entry))
    return found


def subtree(roots: Iterable[int]) -> dict[int, Proc]:
    """Return the running processes among `roots` and all their descendants."""
    found: dict[int, Proc] = {}
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        proc = identify(pid)
        if proc is None:
            continue  # a zombie has no children left: they were handed on when it died
        found[pid] = proc
        todo += children(pid)
    return found


def send(proc: Proc, sig: int) -> bool:
    """Send `sig` to `proc` unless its pid now names another process; False when not allowed.

    Through a pidfd, checked after opening, so the signal cannot reach a process that took
    over the pid after `proc` had gone.
    """
    try:
        fd = os.pidfd_open(proc.pid)
    except ProcessLookupError:
        return True
    except OSError:  # no pidfd on this kernel: the plain kill is the best there is
        with contextlib.suppress(ProcessLookupError):
            try:
                os.kill(proc.pid, sig)
            except PermissionError:
                return False
        return True
    try:
        if identify(proc.pid) == proc:
            signal.pidfd_send_signal(fd, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        return False
    finally:
        os.close(fd)
    return True


def _prctl() -> Any:
    import ctypes

    return ctypes.CDLL(None, use_errno=True).prctl


def set_subreaper(on: bool) -> bool:
    """Make this process (un)adopt its descendants' orphans; return the previous setting."""
    import ctypes

    prctl = _prctl()
    previous = ctypes.c_int(0)
    prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(previous))
    prctl(_PR_SET_CHILD_SUBREAPER, int(on))
    return bool(previous.value)


def child_setup_hook(
    cgroup: RunCgroup | None, uid: int | None, mask: Iterable[int] = ()
) -> Callable[[], None]:
    """Return the job's pre-exec hook: join the run's cgroup, drop to `uid`, die with us.

    The cgroup is joined while still privileged, so the job cannot leave it before it starts.
    PR_SET_PDEATHSIG is set last: a change of user clears it. The signal mask becomes `mask`
    (the parent blocks signals while the job starts; the job must not inherit that).
    """
    blocked = set(mask)
    prctl = _prctl()  # resolved here, in the parent, not after fork
    procs_file = str(cgroup.path / "cgroup.procs") if cgroup is not None else None
    parent = os.getpid()

    def hook() -> None:
        if procs_file is not None:
            with contextlib.suppress(OSError):  # then the parent sees it and goes without
                fd = os.open(procs_file, os.O_WRONLY)
                try:
                    os.write(fd, b"0")
                finally:
                    os.close(fd)
        if uid is not None:
            os.setuid(uid)
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)  # schedctl died before the hook ran: never run without it
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    return hook


# -- the run's cgroup -----------------------------------------------------------------------


def _cgroup_of(pid: int | str) -> str | None:
    """Return the cgroup2 path of `pid` (as /proc/PID/cgroup gives it; zombies too)."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    rel = next((line[3:] for line in lines if line.startswith("0::")), None)
    return rel.rstrip("/") if rel is not None and rel.startswith("/") else None


def _own_cgroup_dir() -> tuple[str, Path] | None:
    """Return this process's cgroup2 cgroup and its directory, if cgroup2 is mounted."""
    rel = _cgroup_of("self")
    try:
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    if rel is None:
        return None
    for mount in mounts:
        head, _, tail = mount.partition(" - ")
        if not tail.startswith("cgroup2 "):
            continue
        fields = head.split()
        root, point = fields[3].rstrip("/"), fields[4]
        if rel == root or rel.startswith(root + "/"):
            return rel, Path(point + rel[len(root) :])
    return None


def cgroup_root() -> Path | None:
    """Return where cgroup2 is mounted, if it is."""
    try:
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for mount in mounts:
        head, _, tail = mount.partition(" - ")
        if tail.startswith("cgroup2 "):
            return Path(head.split()[4])
    return None


class RunCgroup:
    """A cgroup2 cgroup of the run's own, below schedctl's, that the job is started in."""

    def __init__(self, path: Path, name: str | None = None) -> None:
        self.path = path
        self.name = name  # as /proc/PID/cgroup names it

    @classmethod
    def create(cls) -> RunCgroup | None:
        """Create the run's cgroup; None where this host does not let schedctl have one."""
        own = _own_cgroup_dir()
        if own is None or not os.access(own[1], os.W_OK):
            return None
        leaf = f"{CGROUP_PREFIX}{os.getpid()}-{time.monotonic_ns()}"
        cgroup = cls(own[1] / leaf, f"{own[0].rstrip('/')}/{leaf}")
        try:
            cgroup.path.mkdir()
        except OSError:
            return None
        if not (cgroup.path / "cgroup.kill").exists():  # before Linux 5.14: no killing it whole
            cgroup.remove()
            return None
        return cgroup

    def holds(self, pid: int) -> bool:
        """Return whether `pid` (running or a zombie) is in this cgroup."""
        return self.name is not None and _cgroup_of(pid) == self.name

    def populated(self) -> bool:
        """Return whether any process is left in the cgroup (or below it)."""
        try:
            text = (self.path / "cgroup.events").read_text()
        except FileNotFoundError:
            return False
        except OSError:
            return True
        return "populated 1" in text

    def kill(self) -> None:
        """SIGKILL every process in the cgroup at once (no fork can slip past)."""
        with contextlib.suppress(OSError):
            (self.path / "cgroup.kill").write_text("1")

    def remove(self) -> bool:
        """Remove the (empty) cgroup; return whether it is gone."""
        try:
            self.path.rmdir()
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return True


# -- the record a runner leaves --------------------------------------------------------------


class ProcRecord:
    """A private file listing a running job's processes, for whoever comes after a crash.

    Rewritten (atomically) whenever the set changes, and removed once everything is stopped.
    """

    def __init__(self, path: Path, job: str, run_id: int, token: str) -> None:
        self.path = path
        self.job = job
        self.run_id = run_id
        self.token = token
        self.cgroup: str | None = None
        self._written: tuple[str | None, frozenset[Proc]] | None = None
        self._runner = identify(os.getpid())
        self._boot = boot_id()

    def write(self, procs: Iterable[Proc]) -> None:
        """Store `procs` (and the cgroup) unless that is what the file already says."""
        current = frozenset(procs)
        if (self.cgroup, current) == self._written:
            return
        data = {
            "boot": self._boot,
            "runner": list(self._runner) if self._runner else None,
            "job": self.job,
            "run_id": self.run_id,
            "token": self.token,
            "cgroup": self.cgroup,
            "procs": sorted(list(p) for p in current),
        }
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, json.dumps(data).encode())
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self._written = (self.cgroup, current)

    def remove(self) -> None:
        """Delete the record: nothing of the job is left."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def record_dir(path: Path) -> Path:
    """Create (0700) and return the directory of process records; refuse a foreign one.

    Whatever it says gets killed, so only a directory of our own may say it.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if not path.is_dir() or path.is_symlink():
        raise OSError(f"{path} is not a directory")
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise OSError(f"{path} is not owned by this user or is writable by others")
    return path


def record_path(directory: Path, job_id: int, run_id: int) -> Path:
    """Return the record file of run `run_id` of job `job_id` by this runner."""
    return directory / f"{job_id}-{run_id}-{os.getpid()}.json"


class Leftovers(NamedTuple):
    """What a dead runner left and what became of it."""

    runs: list[int]  # run ids whose runner died with processes recorded
    stopped: int  # processes found still running and stopped
    survivors: int  # processes that could not be stopped


def stop_leftovers(directory: Path, job_id: int, grace: float) -> Leftovers:
    """Stop whatever runners of job `job_id` that died left running; their records go too.

    A record whose runner still runs (the `allow` policy) is left to that runner.
    """
    runs: list[int] = []
    stopped = survivors = 0
    for path in sorted(directory.glob(f"{job_id}-*.json")):
        with _claim(path) as raw:
            if raw is None:
                continue  # gone: another run of the job dealt with it
            left = _stop_recorded(path, raw, grace)
        if left is not None:
            runs.append(left[0])
            stopped += left[1]
            survivors += left[2]
    return Leftovers(runs, stopped, survivors)


@contextlib.contextmanager
def _claim(path: Path) -> Iterator[bytes | None]:
    """Hold `path` locked and yield its content; None if it went (or is someone else's now).

    Runs of an `allow` job start together and all find what a killed runner left: one stops
    it and removes the record; the others wait for that, then find the record gone.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        yield None
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except OSError:
            same = False
        if not same:
            yield None
            return
        with open(fd, "rb", closefd=False) as f:
            yield f.read()
    finally:
        os.close(fd)


def _stop_recorded(path: Path, raw: bytes, grace: float) -> tuple[int, int, int] | None:
    """Stop what the (claimed) record lists; return (run id, stopped, survivors) if any ran."""
    try:
        data = json.loads(raw)
        runner = Proc(*data["runner"]) if data["runner"] else None
        if runner is not None and alive(runner):
            return None
        if data["boot"] != boot_id():
            _unlink(path)  # processes of an earlier boot are gone
            return None
        procs = {Proc(*p) for p in data["procs"]}
        # A record without a token (written before tokens) gets no environment scan:
        # job and run id alone could match another user's or database's processes.
        token = data.get("token")
        marks = (
            (
                f"SCHEDCTL_JOB={data['job']}",
                f"SCHEDCTL_RUN_ID={data['run_id']}",
                f"SCHEDCTL_RUN_TOKEN={token}",
            )
            if isinstance(token, str) and token
            else ()
        )
        cgroup = _recorded_cgroup(data["cgroup"])
        started = runner.start if runner else 0
        run_id = int(data["run_id"])
    except (ValueError, KeyError, TypeError, OSError):
        _unlink(path)  # unreadable: nothing in it can be acted on
        return None

    find = _finder(procs, marks, started)
    found = find()
    if not found and (cgroup is None or not cgroup.populated()):
        _forget(path, cgroup)
        return None
    left = _stop(find, cgroup, grace)
    if not left:
        _forget(path, cgroup)
    return run_id, len(found), left


def _finder(
    procs: set[Proc], marks: tuple[str, ...], started: int
) -> Callable[[], dict[int, Proc]]:
    """Return a function finding what is left: the recorded processes, the marked ones, below."""
    marked: list[Proc] = []
    scanned = -1.0

    def find() -> dict[int, Proc]:
        nonlocal marked, scanned
        if marks and time.monotonic() - scanned >= 1.0:  # every environment: not too often
            marked = _marked(marks, started)
            scanned = time.monotonic()
        return subtree([p.pid for p in procs | set(marked) if alive(p)])

    return find


def _recorded_cgroup(path: str | None) -> RunCgroup | None:
    """Return the recorded cgroup if it is one schedctl made (never any other cgroup)."""
    if not path:
        return None
    root = cgroup_root()
    p = Path(path)
    if root is None or not p.name.startswith(CGROUP_PREFIX) or root not in p.parents:
        return None
    return RunCgroup(p)


def _forget(path: Path, cgroup: RunCgroup | None) -> None:
    if cgroup is None or cgroup.remove():
        _unlink(path)


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _stop(find: Callable[[], dict[int, Proc]], cgroup: RunCgroup | None, grace: float) -> int:
    """SIGTERM, then SIGKILL after `grace`; return how many still run after another grace."""
    signalled: set[Proc] = set()
    began = time.monotonic()
    killed_at: float | None = None
    while True:
        found = find()
        if not found and (cgroup is None or not cgroup.populated()):
            return 0
        now = time.monotonic()
        if killed_at is None and now - began >= grace:
            killed_at = now
        if killed_at is not None:
            if now - killed_at >= grace:
                return len(found)
            if cgroup is not None:
                cgroup.kill()
            for proc in found.values():
                send(proc, signal.SIGKILL)
        else:
            for proc in found.values():
                if proc not in signalled:
                    send(proc, signal.SIGTERM)
                    signalled.add(proc)
            if cgroup is not None:
                for pid in _cgroup_pids(cgroup):
                    member = identify(pid)
                    if member is not None and member not in signalled:
                        send(member, signal.SIGTERM)
                        signalled.add(member)
        time.sleep(0.05)


def _cgroup_pids(cgroup: RunCgroup) -> list[int]:
    pids: list[int] = []
    for procs in cgroup.path.rglob("cgroup.procs"):
        with contextlib.suppress(OSError, ValueError):
            pids += [int(p) for p in procs.read_text().split()]
    return pids


def _marked(marks: tuple[str, ...], started: int) -> list[Proc]:
    """Return processes started since `started` whose environment carries all `marks`.

    A job's processes inherit SCHEDCTL_JOB, SCHEDCTL_RUN_ID and the run's unguessable
    SCHEDCTL_RUN_TOKEN: this finds those that left the tree after the runner last recorded it
    (unless they dropped their environment).
    """
    wanted = [b"\0" + m.encode() + b"\0" for m in marks]
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        proc = identify(int(entry))
        if proc is None or proc.start < started:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = b"\0" + f.read()
        except OSError:
            continue
        if all(w in env for w in wanted):
            found.append(proc)
    return found
