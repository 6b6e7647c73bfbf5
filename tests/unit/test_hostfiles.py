"""Host file writes: all or nothing, no leftovers, on a real filesystem."""

from __future__ import annotations

import resource
import signal
from pathlib import Path

import pytest

from schedctl.errors import ConfigError
from schedctl.hostfiles import FileChange, apply


def test_apply_writes_replaces_and_removes(tmp_path: Path) -> None:
    (tmp_path / "keep").write_text("old keep\n")
    (tmp_path / "gone").write_text("old gone\n")
    apply(
        [
            FileChange(tmp_path / "keep", "old keep\n", "new keep\n"),
            FileChange(tmp_path / "fresh", None, "fresh\n"),
            FileChange(tmp_path / "gone", "old gone\n", None),
        ],
        mode=0o640,
    )
    assert (tmp_path / "keep").read_text() == "new keep\n"
    assert (tmp_path / "fresh").read_text() == "fresh\n"
    assert (tmp_path / "fresh").stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh", "keep"]


def test_a_file_that_cannot_be_staged_leaves_every_old_file_whole(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("old a\n")
    (tmp_path / "b").write_text("old b\n")
    changes = [
        FileChange(tmp_path / "a", "old a\n", "new a\n"),
        FileChange(tmp_path / "missing-dir" / "c", None, "c\n"),  # staging this one fails
        FileChange(tmp_path / "b", "old b\n", None),
    ]
    with pytest.raises(ConfigError, match="cannot write in"):
        apply(changes)
    assert (tmp_path / "a").read_text() == "old a\n"  # not replaced: staging came first
    assert (tmp_path / "b").read_text() == "old b\n"  # not removed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no staged file left


def test_a_write_the_disk_refuses_is_one_config_error_and_replaces_nothing(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("old a\n")
    # A real short write: the kernel refuses to grow any file past 64 bytes (EFBIG), as a full
    # disk refuses with ENOSPC.
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, hard))
    try:
        with pytest.raises(ConfigError, match=r"cannot write .*/b: File too large; free space"):
            apply(
                [
                    FileChange(tmp_path / "a", "old a\n", "new a\n"),
                    FileChange(tmp_path / "b", None, "x" * 4096),
                ]
            )
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert (tmp_path / "a").read_text() == "old a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
