"""The host side of sync: atomic file writes, unified diffs, systemctl and crontab commands."""

from __future__ import annotations

import difflib
import os
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from schedctl.errors import ConfigError


@dataclass(frozen=True)
class FileChange:
    """One file to create (old None), rewrite, or remove (new None)."""

    path: Path
    old: str | None
    new: str | None

    def diff(self) -> str:
        """Return the change as a unified diff."""
        before = (self.old or "").splitlines(keepends=True)
        after = (self.new or "").splitlines(keepends=True)
        source = "/dev/null" if self.old is None else f"a/{str(self.path).lstrip('/')}"
        dest = "/dev/null" if self.new is None else f"b/{str(self.path).lstrip('/')}"
        return "".join(difflib.unified_diff(before, after, source, dest))


def read_text(path: Path) -> str | None:
    """Return a file's text, None if it does not exist."""
    try:
        # Bytes as they are: no newline translation, undecodable bytes kept for the write back.
        return path.read_bytes().decode("utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}; check its permissions") from None


def atomic_write(path: Path, text: str, mode: int = 0o644) -> None:
    """Write `text` to `path` so readers see the old or the new file, never a part."""
    apply([FileChange(path, None, text)], mode)


def _stage(path: Path, text: str, mode: int) -> str:
    """Write `text` to a new hidden file beside `path`, on disk; return the file's path."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise ConfigError(
            f"cannot write in {path.parent}: {exc.strerror}; run as root or choose another "
            f"directory"
        ) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape", newline="") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())  # the content is on disk before any name points at it
    except OSError as exc:  # disk full, quota, I/O error: the host's problem, not schedctl's
        Path(tmp).unlink(missing_ok=True)
        raise ConfigError(
            f"cannot write {path}: {exc.strerror}; free space in {path.parent} and try again "
            f"(no file was replaced)"
        ) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def _fsync_dir(directory: Path) -> None:
    """Make the renames and removals in `directory` survive a crash."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def ensure_dir(path: Path) -> None:
    """Create `path` (and parents, 0755) if missing, or raise a one-line ConfigError."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o755)
    except OSError as exc:
        raise ConfigError(
            f"cannot create {path}: {exc.strerror}; run as root or choose another directory"
        ) from None


def apply(changes: Sequence[FileChange], mode: int = 0o644) -> None:
    """Write or remove each changed file; each directory is synced once, not once per file.

    Every new text is on disk before the first file is replaced, so a failure while staging
    (disk full) leaves the old set of files whole.
    """
    staged: list[tuple[str, Path]] = []
    renamed = 0
    try:
        for ch in changes:
            if ch.new is not None:
                staged.append((_stage(ch.path, ch.new, mode), ch.path))
        for tmp, path in staged:
            try:
                os.replace(tmp, path)
            except OSError as exc:  # a directory there, say
                raise ConfigError(
                    f"cannot write {path}: {exc.strerror}; give the path of a file "
                    f"(no file was replaced)"
                ) from None
            renamed += 1
    finally:
        for tmp, _ in staged[renamed:]:
            Path(tmp).unlink(missing_ok=True)
    for ch in changes:
        if ch.new is None:
            try:
                ch.path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise ConfigError(f"cannot remove {ch.path}: {exc.strerror}; run as root") from None
    for directory in sorted({ch.path.parent for ch in changes}):
        _fsync_dir(directory)


def managed_files(directory: Path, prefix: str, mark: str) -> dict[str, str]:
    """Return {name: text} of the files in `directory` that schedctl wrote (first line `mark`)."""
    found: dict[str, str] = {}
    try:
        entries = sorted(directory.iterdir())
    except FileNotFoundError:
        return found
    except OSError as exc:
        raise ConfigError(
            f"cannot list {directory}: {exc.strerror}; check its permissions"
        ) from None
    for p in entries:
        if p.name.startswith(prefix) and p.is_file() and not p.is_symlink():
            text = read_text(p)
            if text is not None and text.startswith(mark + "\n"):
                found[p.name] = text
    return found


def command(
    argv: Sequence[str], what: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a host command; raise a one-line ConfigError naming `what` to do if it fails."""
    try:
        done = subprocess.run(
            list(argv), input=stdin, capture_output=True, text=True, check=False, timeout=120
        )
    except OSError as exc:
        raise ConfigError(f"cannot run {argv[0]}: {exc.strerror}; {what}") from None
    except subprocess.TimeoutExpired:
        raise ConfigError(f"{' '.join(argv)} did not finish in 120 s: {what}") from None
    return done


def check(done: subprocess.CompletedProcess[str], what: str) -> None:
    """Raise if a command from `command` failed."""
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise ConfigError(f"`{' '.join(done.args)}` failed ({detail}): {what}")
