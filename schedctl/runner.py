"""Supervise one job: all of its processes, output streamed through, bounded tail, timeout.

Kept free of heavy imports: it sits on the `schedctl run` hot path.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from schedctl import redact
from schedctl.proctree import (
    Proc,
    ProcRecord,
    RunCgroup,
    child_setup_hook,
    children,
    send,
    set_subreaper,
    subtree,
)

TIMEOUT_EXIT = 124
DEFAULT_GRACE = 10.0
_CHUNK = 65536
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# How stale the view of the job's processes (and their record) may get, while the job runs and
# while it is being stopped; a job of very many processes is swept less often, so that sweeping
# never takes more than a small share of a CPU.
SWEEP_INTERVAL = 0.2
_STOPPING_SWEEP_INTERVAL = 0.05
_SWEEP_SHARE = 0.05


class RunRequest(NamedTuple):
    """What to run and under which limits."""

    argv: Sequence[str]
    env: Mapping[str, str]
    cwd: str | None = None
    timeout: float | None = None
    output_limit: int = 64 * 1024
    grace: float = DEFAULT_GRACE
    user: str | None = None  # run as this user, with its groups (needs root)
    cgroup: bool = True  # also hold the job in a cgroup of its own where the host allows it
    executable: str | None = None  # the file to start, argv[0] being only its name


class RunOutcome(NamedTuple):
    """How the job ended and what it printed."""

    exit_code: int  # the job's own code; 128+n when a signal ended it; 124 on timeout
    signal: int | None  # the signal that ended the job's main process, if any
    timed_out: bool
    forwarded: int | None  # a signal schedctl received and passed on to the job
    stopped: str | None  # reason given to Supervisor.stop(), e.g. "lock_lost"
    duration: float
    tail: str  # what is stored: the output's end, at most output_limit bytes as UTF-8
    total_bytes: int  # bytes the job printed
    truncated: bool  # the tail holds less than everything the job printed
    in_cgroup: bool = False  # the job ran in a cgroup of its own
    survivors: int = 0  # processes of the job still there after SIGKILL and another grace


class _Ring:
    """The last `limit` bytes written to it, in one buffer overwritten in place."""

    def __init__(self, limit: int) -> None:
        self.limit = max(limit, 0)
        self.buf = bytearray()
        self.pos = 0  # where the oldest byte is, once the buffer is full
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        limit = self.limit
        view = memoryview(chunk)
        if len(view) >= limit:
            view = view[len(view) - limit :]
            if len(self.buf) == limit:
                self.buf[:] = view  # same size: copied in place
            else:
                self.buf = bytearray(view)
            self.pos = 0
            return
        room = limit - len(self.buf)
        if room > 0:
            self.buf += view[:room]
            view = view[room:]
        if not view:
            return
        end = self.pos + len(view)
        if end <= limit:
            self.buf[self.pos : end] = view
        else:
            first = limit - self.pos
            self.buf[self.pos :] = view[:first]
            self.buf[: end - limit] = view[first:]
        self.pos = end % limit

    def parts(self) -> tuple[memoryview, memoryview]:
        """Return the kept bytes, oldest first, as two views of the buffer."""
        view = memoryview(self.buf)
        return view[self.pos :], view[: self.pos]

    def truncated(self) -> bool:
        """Return whether bytes were dropped to stay within the limit."""
        return self.total > len(self.buf)

    def take_text(self) -> tuple[str, bool]:
        """Return the tail as it is stored and whether it is short of all output; empty the ring.

        Invalid UTF-8 and NUL (which PostgreSQL text cannot hold) become U+FFFD, three bytes
        each, so the text is cut to the limit again after that, at a character. The decoding
        goes block by block into a second ring, so memory stays within about twice the limit.
        """
        head, rest = self.parts()
        skip = 0
        if self.truncated():  # the kept bytes may begin inside a character: drop its rest
            first = (bytes(head[:3]) + bytes(rest[:3]))[:3]
            while skip < len(first) and first[skip] & 0xC0 == 0x80:
                skip += 1
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        out = _Ring(self.limit)
        for part in (head, rest):
            cut = min(skip, len(part))
            skip -= cut
            for i in range(cut, len(part), _CHUNK):
                out.add(decoder.decode(part[i : i + _CHUNK]).replace("\0", "\ufffd").encode())
        out.add(decoder.decode(b"", final=True).encode())
        truncated = self.truncated() or out.truncated()
        head.release()
        rest.release()
        self.buf = bytearray()
        self.pos = 0
        clean = b"".join(out.parts())
        del out
        start = 0
        if truncated:  # cut inside a character maybe: start at the next one
            while start < min(len(clean), 3) and clean[start] & 0xC0 == 0x80:
                start += 1
        return str(memoryview(clean)[start:], "utf-8"), truncated


class CannotStart(Exception):
    """The job's process could not be started (missing, not executable, no fork).

    `workdir` is set when it was the working directory that could not be entered.
    """

    def __init__(self, error: OSError, workdir: str | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.workdir = workdir


def _write_all(fd: int, data: bytes) -> bool:
    """Write `data` to `fd`; return False once it cannot take more, so we stop trying.

    A reader gone (EPIPE), a full disk, a closed or failing descriptor: the job's output is
    still kept in the tail, and the job itself must not notice.
    """
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except InterruptedError:
            continue
        except OSError:
            return False
        view = view[n:]
    return True


class Supervisor:
    """Run one job and supervise it until every process it started is done.

    The runner is a child subreaper while it supervises, so whatever leaves the job's process
    group or session still ends up below it: the timeout, forwarded signals, a lost lock and the
    main process's exit reach all of it, and `run` returns only once it has all ended.
    """

    def __init__(
        self,
        request: RunRequest,
        *,
        stdout_fd: int = 1,
        stderr_fd: int = 2,
        monotonic: Callable[[], float] = time.monotonic,
        record: ProcRecord | None = None,
    ) -> None:
        self.request = request
        self._out = {1: stdout_fd, 2: stderr_fd}
        self._open = {1: True, 2: True}
        self._now = monotonic
        self._tail = _Ring(request.output_limit)
        self._record = record
        self._proc: subprocess.Popen[bytes] | None = None
        self._cgroup: RunCgroup | None = None
        self._foreign: set[int] = set()  # our children from before the job: not the job's
        self._live: dict[int, Proc] = {}  # the job's running processes at the last sweep
        self._main_reaped = False
        self._stop_signal: int | None = None
        self._signalled: set[Proc] = set()
        self._forwarded: int | None = None
        self._stopped: str | None = None
        self._term_sent_at: float | None = None
        self._killed_at: float | None = None
        self._timed_out = False
        self._survivors = 0
        self._next_sweep = 0.0
        self._sweep_cost = 0.0

    @property
    def pid(self) -> int | None:
        """Return the job's process id once started."""
        return self._proc.pid if self._proc else None

    def stop(self, reason: str) -> None:
        """Ask the job to stop (SIGTERM to all of it now, SIGKILL after the grace period)."""
        if self._stopped is None:
            self._stopped = reason
        self._terminate()

    def _terminate(self) -> None:
        if self._term_sent_at is None:
            self._term_sent_at = self._now()
            self._stopping(signal.SIGTERM)

    def _stopping(self, sig: int) -> None:
        """Send `sig` to every process of the job, and from now on to each one found later."""
        self._stop_signal = sig
        self._signalled = set()
        self._signal_new()

    def _signal_new(self) -> None:
        """Send the stop signal to the job's processes that have not had it yet."""
        sig = self._stop_signal
        assert self._proc is not None and sig is not None
        if not self._main_reaped:
            # The whole group at once, children forked a moment ago included. Only while the
            # main process is unreaped: until then its pid (the group's id) cannot be reused.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, sig)
        if sig == signal.SIGKILL and self._cgroup is not None:
            self._cgroup.kill()
        for proc in list(self._live.values()):
            if proc not in self._signalled:
                send(proc, sig)
                self._signalled.add(proc)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self._forwarded is None:
            self._forwarded = signum
        # Pass the signal itself on (a job may treat SIGHUP or SIGINT specially), then make sure
        # it ends: the grace clock starts now, SIGKILL follows.
        if self._killed_at is None:
            self._stopping(signum)
        if self._term_sent_at is None:
            self._term_sent_at = self._now()

    def run(self, tick: Callable[[], None] | None = None, tick_interval: float = 5.0) -> RunOutcome:
        """Start the job, stream its output, enforce limits; call `tick` every `tick_interval` s.

        `tick` is where the caller heartbeats; it may call `stop()`. Returns once every process
        of the job has ended (or survived SIGKILL for a grace period: see `survivors`).
        """
        req = self.request
        who = identity(req.user) if req.user else None
        redact.hide_from_same_user()  # before the job exists, whoever started schedctl
        started = self._now()
        was_subreaper = set_subreaper(True)
        try:
            self._foreign = set(children(os.getpid()))
            self._cgroup = RunCgroup.create() if req.cgroup else None
            self._save_record(cgroup_changed=True)  # a crash from here on leaves it on record
            # The forwarded signals wait, blocked, until their handler is in place: one that
            # came while the job started ended schedctl itself and left the job unwatched. The
            # job starts with the mask schedctl had (the hook restores it before exec).
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
            previous: dict[int, Any] = {}
            try:
                self._proc = _start(
                    list(req.argv),
                    executable=req.executable,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=dict(req.env),
                    cwd=req.cwd,
                    start_new_session=True,  # own session and process group
                    close_fds=True,
                    # The user's own groups (initgroups), none of schedctl's.
                    group=who.gid if who else None,
                    extra_groups=who.groups if who else None,
                    # schedctl run is single-threaded, and the hook makes no imports.
                    preexec_fn=child_setup_hook(self._cgroup, who.uid if who else None, mask),
                )
                previous = {s: signal.signal(s, self._on_signal) for s in FORWARDED_SIGNALS}
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a pending one is handled now
            try:
                if self._cgroup is not None and not self._cgroup.holds(self._proc.pid):
                    self._drop_cgroup()  # the host would not let the job join it: do without
                self._sweep()
                self._pump(started, tick, tick_interval)
            except BaseException:
                self._kill_all()  # an error in here must not leave the job running unwatched
                raise
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)
            return self._outcome(started)
        finally:
            self._clean_up()
            if not was_subreaper:
                set_subreaper(False)

    def _kill_all(self) -> None:
        """SIGKILL every process of the job; wait for them a grace period at most."""
        assert self._proc is not None
        deadline = self._now() + self.request.grace
        self._stopping(signal.SIGKILL)
        while True:
            if not self._main_reaped and self._proc.poll() is not None:
                self._main_reaped = True
            self._sweep()
            self._signal_new()
            if self._main_reaped and not self._live:
                return
            if self._now() >= deadline:
                self._survivors = max(len(self._live), 1)
                return
            time.sleep(0.02)

    def _drop_cgroup(self) -> None:
        if self._cgroup is not None and self._cgroup.remove():
            self._cgroup = None
            self._save_record(cgroup_changed=True)

    def _save_record(self, cgroup_changed: bool = False) -> None:
        if self._record is None:
            return
        if cgroup_changed:
            self._record.cgroup = str(self._cgroup.path) if self._cgroup else None
        try:
            self._record.write(self._live.values())
        except OSError:
            self._record = None  # the job still runs supervised; only a crash would tell

    def _clean_up(self) -> None:
        """Remove the cgroup and the record once nothing of the job is left."""
        if self._survivors:
            return  # the record stays, so the next run tries again
        if self._cgroup is not None:
            for _ in range(20):  # the kernel may take a moment to see the last one gone
                if self._cgroup.remove():
                    break
                time.sleep(0.01)
            else:
                return
        if self._record is not None:
            self._record.remove()

    def _sweep(self) -> None:
        """Find the job's running processes, reap its orphans that ended, update the record."""
        assert self._proc is not None
        began = self._now()
        main = self._proc.pid
        roots = [pid for pid in children(os.getpid()) if pid not in self._foreign]
        live = subtree(roots)
        for pid in roots:
            if pid not in live and pid != main:  # an orphan that ended; the main one is Popen's
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
        self._live = live
        self._save_record()
        self._sweep_cost = self._now() - began

    def _sweep_interval(self, interval: float) -> float:
        return max(interval, self._sweep_cost / _SWEEP_SHARE)

    def _pump(self, started: float, tick: Callable[[], None] | None, tick_interval: float) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout and proc.stderr
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ, 1)
        sel.register(proc.stderr, selectors.EVENT_READ, 2)
        pidfd = _pidfd(proc.pid)  # wakes us the moment the main process exits
        if pidfd is not None:
            sel.register(pidfd, selectors.EVENT_READ, 0)
        next_tick = started + tick_interval if tick is not None else float("inf")
        self._next_sweep = started + SWEEP_INTERVAL
        try:
            while not self._advance(started, sel):
                if tick is not None and self._now() >= next_tick:
                    next_tick = self._now() + tick_interval
                    tick()
                due = min(self._next_sweep, next_tick)
                self._read(sel, max(0.0, min(due - self._now(), SWEEP_INTERVAL)))
        finally:
            sel.close()
            if pidfd is not None:
                os.close(pidfd)
            proc.stdout.close()
            proc.stderr.close()

    def _advance(self, started: float, sel: selectors.BaseSelector) -> bool:
        """Enforce the timeout, grace and the main process's end; return True once all is over."""
        assert self._proc is not None
        req = self.request
        now = self._now()
        if req.timeout is not None and not self._timed_out and now - started >= req.timeout:
            self._timed_out = True
            self._terminate()
        if not self._main_reaped and self._proc.poll() is not None:
            self._main_reaped = True
            for key in list(sel.get_map().values()):
                if key.data == 0:  # the pidfd has told us what it could
                    sel.unregister(key.fileobj)
            # Like systemd's KillMode=control-group: what the job left behind is stopped,
            # wherever it went, so it cannot run on outside the lock. SIGTERM even after a
            # forwarded SIGINT, which background children ignore.
            self._sweep()
            self._next_sweep = now + self._sweep_interval(_STOPPING_SWEEP_INTERVAL)
            if self._killed_at is None:
                self._stopping(signal.SIGTERM)
            if self._term_sent_at is None:
                self._term_sent_at = now
        elif now >= self._next_sweep:
            self._sweep()
            stopping = self._term_sent_at is not None
            interval = _STOPPING_SWEEP_INTERVAL if stopping else SWEEP_INTERVAL
            self._next_sweep = now + self._sweep_interval(interval)
            if self._stop_signal is not None:
                self._signal_new()
        term_at, killed_at = self._term_sent_at, self._killed_at
        if term_at is not None and killed_at is None and now - term_at >= req.grace:
            self._killed_at = now
            self._stopping(signal.SIGKILL)
        if not self._main_reaped:
            return False
        if killed_at is not None and now - killed_at >= req.grace:
            self._survivors = len(self._live)  # not ours to end (D state, setuid programs)
            return True
        return self._over(sel)

    def _read(self, sel: selectors.BaseSelector, wait: float) -> None:
        """Pass on and keep what the job printed, waiting up to `wait` seconds for it."""
        for key, _ in sel.select(timeout=wait):
            if key.data == 0:
                continue  # the main process exited: _advance takes it
            try:
                chunk = os.read(key.fd, _CHUNK)
            except InterruptedError:
                continue
            if not chunk:
                sel.unregister(key.fileobj)
                continue
            self._tail.add(chunk)
            stream = key.data
            if self._open[stream]:
                self._open[stream] = _write_all(self._out[stream], chunk)

    def _over(self, sel: selectors.BaseSelector) -> bool:
        """Return whether nothing of the job runs any more and its output is all read."""
        if self._live:
            return False
        if self._cgroup is not None and self._cgroup.populated():
            # The kernel counts the last exit a moment after it is reaped: look again soon.
            self._next_sweep = min(self._next_sweep, self._now() + 0.002)
            return False
        # What is still in the pipes is the job's; a pipe still open once that is read is held
        # by a process outside the job (it was handed on), which we do not wait for.
        for _ in range(64):  # more than full pipes hold, not whatever an outsider goes on writing
            if not sel.get_map() or not sel.select(timeout=0):
                break
            self._read(sel, 0)
        return True

    def _outcome(self, started: float) -> RunOutcome:
        assert self._proc is not None
        code = self._proc.wait()
        duration = self._now() - started
        sig = -code if code < 0 else None
        if self._timed_out:
            exit_code = TIMEOUT_EXIT
        elif self._forwarded is not None:
            exit_code = 128 + self._forwarded
        elif sig is not None:
            exit_code = 128 + sig
        else:
            exit_code = code
        total = self._tail.total
        tail, truncated = self._tail.take_text()
        return RunOutcome(
            exit_code=exit_code,
            signal=sig,
            timed_out=self._timed_out,
            forwarded=self._forwarded,
            stopped=self._stopped,
            duration=duration,
            tail=tail,
            total_bytes=total,
            truncated=truncated,
            in_cgroup=self._cgroup is not None,
            survivors=self._survivors,
        )


# What chdir(2) fails with; the steps before exec that can fail otherwise (setgroups,
# setgid) fail with EPERM.
_CHDIR_ERRORS = {errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.ELOOP, errno.ENAMETOOLONG,
                 errno.EIO}  # fmt: skip


def _start(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start the job's process; raise CannotStart when it cannot be started."""
    try:
        return subprocess.Popen(argv, **kwargs)
    except OSError as e:
        # subprocess names the working directory as the file when the child failed before
        # exec, and the command when exec itself failed.
        cwd = kwargs.get("cwd")
        entering = cwd is not None and e.filename == cwd and e.errno in _CHDIR_ERRORS
        raise CannotStart(e, str(cwd) if entering else None) from e


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except OSError:  # before Linux 5.3, or already reaped
        return None


class Identity(NamedTuple):
    """Who a job runs as: what setuid needs, and what its environment should say."""

    name: str
    uid: int
    gid: int
    groups: list[int]  # supplementary groups, as initgroups() would set them
    home: str
    shell: str


def identity(user: str) -> Identity:
    """Look `user` up in the host's user and group databases; raise KeyError if unknown."""
    import pwd

    pw = pwd.getpwnam(user)
    groups = os.getgrouplist(pw.pw_name, pw.pw_gid)
    return Identity(pw.pw_name, pw.pw_uid, pw.pw_gid, groups, pw.pw_dir, pw.pw_shell or "/bin/sh")
