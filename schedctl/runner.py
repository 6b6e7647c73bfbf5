"""Supervise one job process: own process group, output streamed through, bounded tail, timeout.

Kept free of heavy imports: it sits on the `schedctl run` hot path.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

TIMEOUT_EXIT = 124
DEFAULT_GRACE = 10.0
_CHUNK = 65536
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class RunRequest(NamedTuple):
    """What to run and under which limits."""

    argv: Sequence[str]
    env: Mapping[str, str]
    cwd: str | None = None
    timeout: float | None = None
    output_limit: int = 64 * 1024
    grace: float = DEFAULT_GRACE
    user: str | None = None  # run as this user (needs root)


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


def _write_all(fd: int, data: bytes) -> bool:
    """Write `data` to `fd`; return False once the reader has gone (EPIPE), so we stop trying."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BrokenPipeError:
            return False
        except InterruptedError:
            continue
        view = view[n:]
    return True


class Supervisor:
    """Run one job process and supervise it until it and its process group are done."""

    def __init__(
        self,
        request: RunRequest,
        *,
        stdout_fd: int = 1,
        stderr_fd: int = 2,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.request = request
        self._out = {1: stdout_fd, 2: stderr_fd}
        self._open = {1: True, 2: True}
        self._now = monotonic
        self._tail = _Ring(request.output_limit)
        self._proc: subprocess.Popen[bytes] | None = None
        self._forwarded: int | None = None
        self._stopped: str | None = None
        self._term_sent_at: float | None = None
        self._killed = False
        self._timed_out = False

    @property
    def pid(self) -> int | None:
        """Return the job's process id once started."""
        return self._proc.pid if self._proc else None

    def stop(self, reason: str) -> None:
        """Ask the job to stop (SIGTERM to its group now, SIGKILL after the grace period)."""
        if self._stopped is None:
            self._stopped = reason
        self._terminate()

    def _signal_group(self, sig: int) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def _terminate(self) -> None:
        if self._term_sent_at is None:
            self._term_sent_at = self._now()
            self._signal_group(signal.SIGTERM)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self._forwarded is None:
            self._forwarded = signum
        # Pass the signal itself on (a job may treat SIGHUP or SIGINT specially), then make sure
        # it ends: the grace clock starts now, SIGKILL follows.
        self._signal_group(signum)
        if self._term_sent_at is None:
            self._term_sent_at = self._now()

    def run(self, tick: Callable[[], None] | None = None, tick_interval: float = 5.0) -> RunOutcome:
        """Start the job, stream its output, enforce limits; call `tick` every `tick_interval` s.

        `tick` is where the caller heartbeats; it may call `stop()`.
        """
        req = self.request
        started = self._now()
        self._proc = subprocess.Popen(
            list(req.argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(req.env),
            cwd=req.cwd,
            start_new_session=True,  # own session and process group: signals reach grandchildren
            close_fds=True,
            user=req.user,
            group=_primary_group(req.user),
            extra_groups=[] if req.user else None,
            # schedctl run is single-threaded, and the hook only calls prctl (no imports).
            preexec_fn=_die_with_parent_hook(),  # noqa: PLW1509
        )
        previous = {s: signal.signal(s, self._on_signal) for s in FORWARDED_SIGNALS}
        try:
            self._pump(started, tick, tick_interval)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        return self._outcome(started)

    def _pump(self, started: float, tick: Callable[[], None] | None, tick_interval: float) -> None:
        assert self._proc is not None and self._proc.stdout and self._proc.stderr
        req = self.request
        sel = selectors.DefaultSelector()
        sel.register(self._proc.stdout, selectors.EVENT_READ, 1)
        sel.register(self._proc.stderr, selectors.EVENT_READ, 2)
        next_tick = started + tick_interval
        main_exited_at: float | None = None
        while sel.get_map():
            now = self._now()
            if req.timeout is not None and not self._timed_out and now - started >= req.timeout:
                self._timed_out = True
                self._terminate()
            if main_exited_at is None and self._proc.poll() is not None:
                main_exited_at = now
                # Like systemd's KillMode=control-group: what the job left behind in its group
                # is stopped, so leftover children cannot hold the slot (or its pipes) forever.
                # SIGTERM even after a forwarded SIGINT, which background children ignore.
                self._signal_group(signal.SIGTERM)
                if self._term_sent_at is None:
                    self._term_sent_at = now
            grace_over = self._term_sent_at is not None and now - self._term_sent_at >= req.grace
            if grace_over and not self._killed:
                self._killed = True
                self._signal_group(signal.SIGKILL)
            if tick is not None and now >= next_tick:
                next_tick = now + tick_interval
                tick()
            for key, _ in sel.select(timeout=0.2):
                stream = key.data
                try:
                    chunk = os.read(key.fd, _CHUNK)
                except InterruptedError:
                    continue
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                self._tail.add(chunk)
                if self._open[stream]:
                    self._open[stream] = _write_all(self._out[stream], chunk)
        sel.close()
        self._proc.stdout.close()
        self._proc.stderr.close()

    def _reap_group(self) -> None:
        """Stop whatever the job left in its process group, even with its output closed.

        Leftovers would otherwise keep running outside the job's lock.
        """
        assert self._proc is not None
        deadline: float | None = None
        while _group_has_live_members(self._proc.pid):
            now = self._now()
            if deadline is None:
                self._signal_group(signal.SIGTERM)
                deadline = now + self.request.grace
            elif now >= deadline:
                self._signal_group(signal.SIGKILL)
            time.sleep(0.05)

    def _outcome(self, started: float) -> RunOutcome:
        assert self._proc is not None
        code = self._proc.wait()
        duration = self._now() - started
        self._reap_group()
        sig = -code if code < 0 else None
        total = self._tail.total
        tail, truncated = self._tail.take_text()
        if self._timed_out:
            exit_code = TIMEOUT_EXIT
        elif self._forwarded is not None:
            exit_code = 128 + self._forwarded
        elif sig is not None:
            exit_code = 128 + sig
        else:
            exit_code = code
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
        )


def _group_has_live_members(pgid: int) -> bool:
    """Return whether any non-zombie process is in process group `pgid`.

    kill(-pgid, 0) answers "nobody at all" in one call, the common case once the job's own
    process is reaped. Its yes is not enough: it also succeeds for zombies, which linger for as
    long as PID 1 takes to reap orphans (some container inits never do); only then scan /proc,
    which costs a read per process on the host.
    """
    try:
        os.killpg(pgid, 0)
        signalable = True
    except ProcessLookupError:
        return False
    except PermissionError:
        signalable = False  # members exist, but none we may signal (e.g. setuid)
    try:
        entries = os.listdir("/proc")
    except OSError:
        return signalable
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # Fields after the parenthesised command name: state ppid pgrp ...
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def _primary_group(user: str | None) -> int | None:
    if user is None:
        return None
    import pwd

    return pwd.getpwnam(user).pw_gid


def _die_with_parent_hook() -> Callable[[], None]:
    """Return a child-side hook: SIGKILL the job if schedctl dies, so it never runs unlocked."""
    import ctypes

    prctl = ctypes.CDLL(None).prctl  # resolved here, in the parent, not after fork
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, signal.SIGKILL)

    return hook
