"""A job that looks for the database password around it and prints everything it finds.

Run by the secrets tests as a job: it reads its runner's (its parent's) environment and
memory, its own environment and schedctl's config file, and prints what it could read, so a
test can assert the password is in none of it. Standard library only: it runs under
/usr/bin/python3 as any user.
"""

from __future__ import annotations

import os
import re
import sys

URL = re.compile(rb"postgres(?:ql)?://[^\s\x00'\"]{1,300}")


def read(path: str) -> bytes | str:
    """Return the file's bytes, or why it could not be read."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        return f"unreadable ({e.strerror})"


def scan_memory(pid: int) -> str:
    """Return the database URLs found in process `pid`'s readable memory, or why none."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            maps = f.read().splitlines()
        mem = open(f"/proc/{pid}/mem", "rb")  # noqa: SIM115 - read region by region below
    except OSError as e:
        return f"unreadable ({e.strerror})"
    found: list[bytes] = []
    size = 0
    with mem:
        for line in maps:
            span, perms = line.split()[:2]
            if "r" not in perms:
                continue
            start, end = (int(x, 16) for x in span.split("-"))
            try:
                mem.seek(start)
                data = mem.read(end - start)
            except (OSError, ValueError, OverflowError):
                continue
            size += len(data)
            found += URL.findall(data)
    return f"read {size} bytes; URLs: {sorted(set(found))!r}"


def main() -> int:
    parent = os.getppid()
    print(f"uid={os.getuid()} gid={os.getgid()} groups={sorted(os.getgroups())}")
    for key in ("HOME", "USER", "LOGNAME", "SHELL"):
        print(f"{key}={os.environ.get(key)}")
    print(f"cwd={os.getcwd()}")
    print(f"parent environ: {read(f'/proc/{parent}/environ')!r}")
    print(f"parent memory: {scan_memory(parent)}")
    print(f"own environ: {read('/proc/self/environ')!r}")
    config = sys.argv[1] if len(sys.argv) > 1 else "/etc/schedctl/schedctl.env"
    print(f"config file: {read(config)!r}")
    print("probe done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
