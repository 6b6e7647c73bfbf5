"""Results that could not be written to the database, kept in local files until they can.

`DATA_DIR/spool` is a queue that any number of schedctl processes flush at once:

- `run-ID.json` is a pending result. It appears whole: written to a temporary file of a unique
  name (created exclusively, never through a symlink), synced, then renamed into place.
- A flusher takes a file before reading it: it locks it, then renames it to a name of its own
  (`.taken.PID.TOKEN.run-ID.json`). The rename succeeds for one process only, so each result
  reaches the database once; a file another process took is simply not there any more.
- Stored: the taken file is removed. The database failing meanwhile: it is renamed back, for a
  later command. A taken file whose taker died (its lock is free) is put back the same way.
- A file that cannot be decoded, or whose result the database refuses for good, is moved to
  `bad/`, never deleted, so that it cannot stop every later command from working.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from schedctl.datadir import private_dir
from schedctl.db.repository import RecordRefusedError, RunDB, Runner, RunResult
from schedctl.errors import SchedctlError
from schedctl.models import RunStatus

BAD_DIR = "bad"
_TAKEN = ".taken."
_TMP = ".tmp."
# Bigger than any result schedctl writes (a 16 MiB output tail, JSON-escaped), so only a
# stray file is this large; reading it whole would cost the memory of every command.
_MAX_BYTES = 256 * 1024 * 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_TIME_KEYS = ("started_at", "finished_at")


class SpoolWriteError(Exception):
    """A result could not be kept in the spool; `str()` says why and what to do."""


class SetAside(NamedTuple):
    """A spool file moved to `bad/`, and why."""

    path: Path
    reason: str


class FlushReport(NamedTuple):
    """What one flush did."""

    stored: int
    set_aside: list[SetAside]
    kept: int  # files left in place because the database failed
    error: str  # that failure, "" when there was none


def _encode(result: RunResult) -> dict[str, Any]:
    data = result._asdict()
    data["status"] = result.status.value
    for key in _TIME_KEYS:
        value = data[key]
        data[key] = value.isoformat() if value is not None else None
    return data


class _BadRecord(Exception):
    pass


_NONE = type(None)
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "status": (str,),
    "exit_code": (int, _NONE),
    "signal": (int, _NONE),
    "started_at": (str, _NONE),
    "finished_at": (str,),
    "duration_seconds": (int, float, _NONE),
    "output_tail": (str,),
    "output_bytes": (int,),
    "output_truncated": (bool,),
}


def _decode(raw: bytes, name: str) -> tuple[int, RunResult, Runner | None]:
    """Return (run id, result, runner) from a spool file's bytes, or raise _BadRecord saying why.

    Files of versions that did not record the runner have none.
    """
    if _order(name)[0]:
        raise _BadRecord("its name is not run-NUMBER.json")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # ValueError covers bad UTF-8 and bad JSON
        raise _BadRecord(f"not JSON ({e})" if raw.strip() else "an empty file") from None
    if not isinstance(data, dict) or set(data) - {"runner"} != {"run_id", "result"}:
        raise _BadRecord(
            'not a spooled result (expected the keys "run_id", "result" and optionally "runner")'
        )
    run_id, fields = data["run_id"], data["result"]
    runner = _runner(data.get("runner"))
    if type(run_id) is not int or f"run-{run_id}.json" != name:
        raise _BadRecord(f"run_id {run_id!r} does not match its name")
    if not isinstance(fields, dict):
        raise _BadRecord('"result" is not an object')
    missing = [k for k in RunResult._fields if k not in fields]
    if missing:
        raise _BadRecord(f'"result" lacks {", ".join(missing)}')
    extra = sorted(set(fields) - set(RunResult._fields))
    if extra:
        raise _BadRecord(f'"result" has unknown keys {", ".join(extra)}')
    for key, allowed in _FIELD_TYPES.items():
        value = fields[key]
        # JSON true is a Python int too; it is never a number here
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise _BadRecord(f"{key} {value!r} has the wrong type")
    for key, value in fields.items():
        if isinstance(value, str):
            _storable(key, value)
    try:
        status = RunStatus(fields["status"])
    except ValueError:
        raise _BadRecord(f"unknown status {fields['status']!r}") from None
    if status is RunStatus.RUNNING:
        raise _BadRecord("status running is not a result")
    values = dict(fields, status=status)
    for key in _TIME_KEYS:
        if values[key] is not None:
            try:
                when = datetime.fromisoformat(values[key])
            except ValueError:
                raise _BadRecord(f"{key} {values[key]!r} is not an ISO 8601 time") from None
            if when.tzinfo is None:
                raise _BadRecord(f"{key} {values[key]!r} has no UTC offset")
            values[key] = when
    return run_id, RunResult(**values), runner


def _runner(value: Any) -> Runner | None:
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or set(value) != {"host", "pid"}
        or not isinstance(value["host"], str)
        or type(value["pid"]) is not int
    ):
        raise _BadRecord('"runner" is not an object of a host name and a pid')
    _storable("runner host", value["host"])
    return Runner(value["host"], value["pid"])


def _storable(key: str, text: str) -> None:
    """Raise _BadRecord unless `text` is UTF-8 text a database can hold.

    JSON can spell a lone surrogate (`\\ud800`), which has no UTF-8 form: no database would
    ever take it, so the file must not wait for one. A NUL is stored as U+FFFD (finish).
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise _BadRecord(
            f"{key} holds a lone surrogate (U+{ord(text[e.start]):04X} at character {e.start}), "
            f"which is not text any database can store"
        ) from None


def write(spool_dir: Path, run_id: int, result: RunResult, runner: Runner | None = None) -> Path:
    """Store `result` for run `run_id` whole or not at all; return the file's path.

    `runner` (this host and process) is kept with it: the result finishes no other run that
    may have that id later. Raise SpoolWriteError (nothing half-written left behind) when it
    cannot be stored.
    """
    record: dict[str, Any] = {"run_id": run_id, "result": _encode(result)}
    if runner is not None:
        record["runner"] = runner._asdict()
    data = json.dumps(record).encode()
    name = f"run-{run_id}.json"
    try:
        private_dir(spool_dir.parent, "data directory", create=True)
        private_dir(spool_dir, "spool directory", create=True, link_ok=False)
    except SchedctlError as e:
        raise SpoolWriteError(str(e)) from None
    except OSError as e:
        raise SpoolWriteError(_advice(e, f"cannot create the spool directory {spool_dir}")) from e
    tmp = f"{_TMP}{os.getpid()}.{os.urandom(4).hex()}.{name}"
    try:
        dfd = os.open(spool_dir, _DIR_FLAGS)
    except OSError as e:
        raise SpoolWriteError(_advice(e, f"cannot open the spool directory {spool_dir}")) from e
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=dfd)  # fmt: skip
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dfd)
        os.close(dfd)
        raise SpoolWriteError(_advice(e, f"cannot write a spool file in {spool_dir}")) from e
    # So that the rename, too, survives a crash of the host; failing, the file is there anyway.
    with contextlib.suppress(OSError):
        os.fsync(dfd)
    os.close(dfd)
    return spool_dir / name


def _advice(e: OSError, what: str) -> str:
    fix = {
        errno.ENOSPC: "free space on its file system",
        errno.EDQUOT: "free space on its file system",
        errno.EROFS: "mount it writable",
        errno.EACCES: "make it writable for this user",
        errno.EPERM: "make it writable for this user",
    }.get(e.errno or 0, "fix it")
    return f"{what} ({e.strerror or e}): {fix}"


def waiting(spool_dir: Path) -> bool:
    """Return whether the spool holds anything to flush (cheap: one directory read)."""
    try:
        names = os.listdir(spool_dir)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return any(n.startswith(("run-", _TAKEN)) for n in names)


def flush(spool_dir: Path, db: RunDB) -> FlushReport:
    """Write every spooled result to the database, taking each file so no other flush can.

    Never raises for one file's sake: a bad file is set aside, and when the database (or the
    spool directory) fails, the files stay for a later command and the error is reported.
    """
    try:
        dfd = os.open(spool_dir, _DIR_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        return FlushReport(0, [], 0, "")
    try:
        return _Queue(spool_dir, dfd).flush(db)
    finally:
        os.close(dfd)


def _order(name: str) -> tuple[int, int, str]:
    """Sort key: well-named files by run id, oldest first; any other name after them."""
    stem = name.removeprefix("run-").removesuffix(".json")
    good = name == f"run-{stem}.json" and stem.isascii() and stem.isdigit() and len(stem) < 19
    return (0, int(stem), name) if good else (1, 0, name)


class _Unusable(Exception):
    """A spool entry that cannot even be opened as a file (a symlink, a socket)."""


class _Queue:
    """One flush over an open spool directory."""

    def __init__(self, spool_dir: Path, dfd: int) -> None:
        self.spool_dir = spool_dir
        self.dfd = dfd
        self.set_aside: list[SetAside] = []

    def flush(self, db: RunDB) -> FlushReport:
        names = os.listdir(self.dfd)
        pending = {n for n in names if n.startswith("run-")} | self.put_back_orphans(names)
        stored, kept, error = 0, 0, ""
        for name in sorted(pending, key=_order):
            if error:
                kept += 1
                continue
            try:
                taken = self.take(name)
            except _Unusable as e:
                self.move_to_bad(name, name, str(e))
                continue
            except OSError as e:  # the spool directory itself: no use trying the others
                error = f"cannot take {self.spool_dir / name}: {e.strerror or e}"
                kept += 1
                continue
            if taken is None:
                continue  # another process has it
            fd, own = taken
            try:
                run_id, result, runner = _decode(_read(fd), name)
            except Exception as e:  # whatever the content, it is this file's fault
                reason = str(e) if isinstance(e, _BadRecord) else f"unreadable ({e})"
                self.move_to_bad(own, name, reason)
                os.close(fd)
                continue
            try:
                db.finish_spooled(run_id, result, runner)
            except RecordRefusedError as e:
                self.move_to_bad(own, name, f"the database refused it: {e}")
            except (UnicodeError, ValueError, TypeError) as e:
                # The values, not the database: the same file would fail the same way forever.
                self.move_to_bad(own, name, f"the database cannot take it ({e})")
            except Exception as e:  # the database failed: keep the file for a later command
                error = (str(e).splitlines() or [type(e).__name__])[0]
                _rename(self.dfd, own, name)
                kept += 1
            else:
                # Stored: were the file left behind, the result would be written again, the
                # same values, by whoever puts it back.
                with contextlib.suppress(OSError):
                    os.unlink(own, dir_fd=self.dfd)
                stored += 1
            finally:
                os.close(fd)
        return FlushReport(stored, self.set_aside, kept, error)

    def take(self, name: str) -> tuple[int, str] | None:
        """Lock `name` and rename it to a name of this process; return (fd, that name).

        None: another process has it. The lock is held until the file is stored, put back or
        set aside, so a taken file whose lock is free has lost its taker (put_back_orphans).
        """
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(name, flags, dir_fd=self.dfd)
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise _Unusable("a symlink, not a file") from None
            if e.errno in (errno.ENXIO, errno.EACCES, errno.EPERM, errno.ENODEV):
                raise _Unusable(f"cannot be opened ({e.strerror})") from None
            raise
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            own = f"{_TAKEN}{os.getpid()}.{os.urandom(4).hex()}.{name}"
            try:
                os.rename(name, own, src_dir_fd=self.dfd, dst_dir_fd=self.dfd)
            except FileNotFoundError:
                os.close(fd)
                return None
            if _inode(self.dfd, own) != os.fstat(fd).st_ino:
                _rename(self.dfd, own, name)  # not the file we locked: leave it be
                os.close(fd)
                return None
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        return fd, own

    def put_back_orphans(self, names: list[str]) -> set[str]:
        """Rename taken files whose taker died back to their own names; return those names."""
        back = set()
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        for own in names:
            if not own.startswith(_TAKEN):
                continue
            name = own.split(".", 4)[-1]
            try:
                fd = os.open(own, flags, dir_fd=self.dfd)
            except OSError:
                continue  # gone meanwhile, or not a file of ours
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if _inode(self.dfd, own) != os.fstat(fd).st_ino:
                    continue
                if _inode(self.dfd, name) is not None:
                    self.move_to_bad(own, name, "a second copy of a pending file")
                elif _rename(self.dfd, own, name):
                    back.add(name)
            except OSError:
                continue  # its taker is alive (it holds the lock), or it moved on meanwhile
            finally:
                os.close(fd)
        return back

    def move_to_bad(self, own: str, name: str, reason: str) -> None:
        """Move entry `own` (once called `name`) to bad/ under a name not yet used there."""
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(BAD_DIR, 0o700, dir_fd=self.dfd)
            bfd = os.open(BAD_DIR, _DIR_FLAGS, dir_fd=self.dfd)
            try:
                target = name
                while _inode(bfd, target) is not None:
                    target = f"{name}.{os.urandom(4).hex()}"
                os.rename(own, target, src_dir_fd=self.dfd, dst_dir_fd=bfd)
            finally:
                os.close(bfd)
        except OSError as e:
            if _inode(self.dfd, own) is None:
                return  # another process moved it first
            # Left where it is: warned about again by the next command, but in no one's way.
            _rename(self.dfd, own, name)
            self.set_aside.append(
                SetAside(self.spool_dir / name, f"{reason}; could not move it to {BAD_DIR}/ "
                         f"({e.strerror or e})")
            )  # fmt: skip
            return
        self.set_aside.append(SetAside(self.spool_dir / BAD_DIR / target, reason))


def _read(fd: int) -> bytes:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise _BadRecord("not a regular file")
    if st.st_size > _MAX_BYTES:
        raise _BadRecord(f"{st.st_size} bytes, more than any result")
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _inode(dfd: int, name: str) -> int | None:
    try:
        return os.stat(name, dir_fd=dfd, follow_symlinks=False).st_ino
    except FileNotFoundError:
        return None


def _rename(dfd: int, src: str, dst: str) -> bool:
    """Rename within the spool; failing, a taken file is put back once its taker has exited."""
    try:
        os.rename(src, dst, src_dir_fd=dfd, dst_dir_fd=dfd)
    except OSError:
        return False
    return True
