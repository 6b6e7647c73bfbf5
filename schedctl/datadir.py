"""The data directory and its lock and spool directories: usable only if private.

Whoever can write into one of them can forge a run's result, or plant a symlink that makes
schedctl (often root) overwrite a file of their choosing; so each is checked before use.
Kept to a stat per directory: `schedctl run` checks them every time.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from schedctl.errors import ConfigError

SUBDIRS = {
    "spool": "spool directory",
    "locks": "lock directory",
    "procs": "process record directory",  # what it lists, the next run kills
}


def check(data_dir: Path) -> None:
    """Refuse a data directory, or one of its own, that exists and someone else could change."""
    if private_dir(data_dir, "data directory"):
        for name, what in SUBDIRS.items():
            private_dir(data_dir / name, what, link_ok=False)


def private_dir(path: Path, what: str, create: bool = False, link_ok: bool = True) -> bool:
    """Check that only the running user can change `path`; return whether it exists.

    With `create`, make it (mode 0700, and its missing parents) first. A directory made by
    someone else meanwhile is refused like any other. Without `link_ok` (a directory inside
    the data directory, which schedctl opens without following links) a symlink is refused.
    """
    if create:
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700, parents=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    me = os.geteuid()
    if stat.S_ISLNK(st.st_mode) and not link_ok:
        raise ConfigError(
            f"unsafe {what} {path}: a symlink (to {_target(path)}), which schedctl does not "
            f"follow inside its data directory; remove it (`rm {path}`) and schedctl creates "
            f"the directory, or set SCHEDCTL_DATA_DIR to a directory of your own"
        )
    if stat.S_ISLNK(st.st_mode):
        # A link the running user or root made is a choice; anyone else's is a redirection.
        if st.st_uid not in (me, 0):
            raise ConfigError(
                f"unsafe {what} {path}: a symlink that belongs to user {_user(st.st_uid)}, who "
                f"can point it anywhere; remove it (`rm {path}`) or set SCHEDCTL_DATA_DIR to a "
                f"directory of your own"
            )
        st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(
            f"{what} {path} is not a directory; move it away or set SCHEDCTL_DATA_DIR to a "
            f"directory of your own"
        )
    if st.st_uid != me:
        raise ConfigError(
            f"unsafe {what} {path}: it belongs to user {_user(st.st_uid)}, not {_user(me)}, and "
            f"its owner could forge results or redirect what schedctl writes; check what is in "
            f"it, then `chown -R {_user(me)} {path}`, or set SCHEDCTL_DATA_DIR to a directory "
            f"of your own"
        )
    if st.st_mode & 0o022:
        who = _writers(st.st_mode)
        raise ConfigError(
            f"unsafe {what} {path}: writable by {who} (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"check what is in it, then `chmod go-w {path}`"
        )
    return True


def root_trusts(path: Path, what: str, instead: str) -> None:
    """Refuse, when running as root, a file or directory another user owns or can write.

    What it holds decides what root runs (as ssh judges its configuration). `instead` says
    what else the user can do. A missing path is left to whoever opens it.
    """
    if os.geteuid() != 0:
        return
    try:
        st = os.stat(path)
    except OSError:
        return
    if stat.S_ISCHR(st.st_mode):
        return  # /dev/null as an empty configuration: nobody can change what it reads as
    if st.st_uid != 0:
        raise ConfigError(
            f"unsafe {what} {path}: it belongs to user {_user(st.st_uid)}, and root runs what "
            f"it says; check what is in it, then `chown root {path}`, or {instead}"
        )
    if st.st_mode & 0o022:
        who = _writers(st.st_mode)
        raise ConfigError(
            f"unsafe {what} {path}: writable by {who} (mode {stat.S_IMODE(st.st_mode):04o}), and "
            f"root runs what it says; check what is in it, then `chmod go-w {path}`, or {instead}"
        )


def _writers(mode: int) -> str:
    """Name who besides the owner may write a file of `mode`."""
    return {0o020: "its group", 0o002: "others"}.get(mode & 0o022, "group and others")


def _target(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError as e:
        return f"unreadable: {e.strerror}"


def _user(uid: int) -> str:
    import pwd  # only on the error path

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
