"""Whether only trusted users can change what a path on this host names (docs/security.md).

A directory is trusted when it, every directory above it and every symlink on the way (as
written and once resolved) belong to a trusted owner, and none of them is writable by its
group or others, except an ancestor with the sticky bit (/tmp): there others may add entries
but not replace one they do not own, and the entry below it is checked in turn.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection


def _prefixes(path: str) -> list[str]:
    """Return `path` and each directory above it, ending at /."""
    found = [path]
    while path != "/":
        path = os.path.dirname(path)
        found.append(path)
    return found


def untrusted(path: str, owners: Collection[int], must_exist: bool = True) -> str | None:
    """Return why someone outside `owners` could change what `path` names, or None.

    `path` must be absolute. Without `must_exist`, a missing `path` is judged by its nearest
    existing directory, which then must not be writable by others even when sticky (anyone
    could create the missing part there).
    """
    lexical = os.path.normpath(path)
    real = os.path.realpath(lexical)
    final = real
    if not os.path.lexists(real):
        if must_exist:
            return f"{path} does not exist"
        while not os.path.lexists(final):
            final = os.path.dirname(final)
    seen: set[str] = set()
    for where in (*_prefixes(lexical), *_prefixes(final)):
        if where in seen:
            continue
        seen.add(where)
        try:
            st = os.lstat(where)
        except FileNotFoundError:
            continue  # a missing part of the path as written: judged by its nearest ancestor
        except OSError as e:
            return f"{where} cannot be checked: {e.strerror}"
        if st.st_uid not in owners:
            return f"{where} belongs to uid {st.st_uid}"
        if stat.S_ISLNK(st.st_mode):
            continue  # a symlink's own mode means nothing; its target is on the resolved path
        if st.st_mode & 0o022:
            sticky = st.st_mode & stat.S_ISVTX and where != final
            if not sticky:
                mode = stat.S_IMODE(st.st_mode)
                return f"{where} is writable by its group or others (mode {mode:04o})"
    return None
