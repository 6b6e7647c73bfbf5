"""Write docs/reference.md from the installed `schedctl`'s own `--help` of every command.

    ~/.local/share/schedctl/venv/bin/python docs/gen_reference.py          # rewrite the file
    ~/.local/share/schedctl/venv/bin/python docs/gen_reference.py --check  # exit 1 if stale

Run it with the interpreter of the virtualenv schedctl is installed in: the command tree is
read from the installed package and each page is what that virtualenv's `schedctl` prints.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import click
import typer

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "reference.md"
REGENERATE = "~/.local/share/schedctl/venv/bin/python docs/gen_reference.py"
WIDTH = "100"

HEADER = f"""\
# Command reference

Generated from the installed `schedctl`'s own `--help` ({WIDTH} columns, no colour) by
`docs/gen_reference.py`; do not edit it by hand. After changing a command or its help, run
`{REGENERATE}`
(a test fails while this page differs from `--help`).

What the commands do beyond their help: [jobs](jobs.md), [how `run` works](how-run-works.md),
[monitoring and history](monitoring.md), [deployment](deployment.md),
[exit codes](exit-codes.md).
"""


def command_paths() -> Iterator[tuple[str, ...]]:
    """Yield every command's path below `schedctl`, in the order `--help` lists them."""
    from schedctl.cli.app import app

    def walk(command: click.Command, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        yield path
        if isinstance(command, click.Group):
            ctx = click.Context(command)  # the root builds its commands only when looked up
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None, name
                yield from walk(sub, (*path, name))

    yield from walk(typer.main.get_command(app), ())


def help_text(schedctl: Path, path: tuple[str, ...], home: Path) -> str:
    """Return what `schedctl PATH --help` prints, lines stripped of rich's trailing padding."""
    empty = home / "empty.env"
    empty.touch()
    # A fixed environment: rich wraps to COLUMNS, colours unless NO_COLOR, and Typer reads
    # TERMINAL_WIDTH and FORCE_COLOR; nothing of the caller's may leak in.
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "COLUMNS": WIDTH,
        "TERMINAL_WIDTH": WIDTH,
        "LINES": "50",
        "NO_COLOR": "1",
        "TERM": "dumb",
        "TZ": "UTC",
        "SCHEDCTL_CONFIG": str(empty),
        "SCHEDCTL_DATA_DIR": str(home / "data"),
    }
    argv = [str(schedctl), *path, "--help"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0 or done.stderr:
        sys.exit(f"gen_reference: `{' '.join(argv)}` failed ({done.returncode}): {done.stderr}")
    lines = [line.rstrip() for line in done.stdout.splitlines()]
    return "\n".join(lines).strip("\n")


def render(schedctl: Path) -> str:
    """Return the whole reference page."""
    with tempfile.TemporaryDirectory(prefix="schedctl-ref-") as tmp:
        pages = [(path, help_text(schedctl, path, Path(tmp))) for path in command_paths()]
    titles = [" ".join(("schedctl", *path)) for path, _ in pages]
    index = "\n".join(f"- [`{t}`](#{t.replace(' ', '-')})" for t in titles)
    body = "\n\n".join(
        f"## `{title}`\n\n```text\n{text}\n```"
        for title, (_, text) in zip(titles, pages, strict=True)
    )
    return f"{HEADER}\n{index}\n\n{body}\n"


def main() -> int:
    """Write or check docs/reference.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--schedctl",
        type=Path,
        default=Path(sys.executable).parent / "schedctl",
        help="the installed schedctl to ask (default: the one beside this interpreter)",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args()
    if not args.schedctl.exists():
        sys.exit(f"gen_reference: {args.schedctl} not found: run ./install.sh first")
    text = render(args.schedctl)
    if args.check:
        if REFERENCE.exists() and REFERENCE.read_text() == text:
            return 0
        sys.stderr.write(
            f"gen_reference: docs/{REFERENCE.name} differs from the installed schedctl's --help; "
            f"regenerate it: {REGENERATE}\n"
        )
        return 1
    REFERENCE.write_text(text)
    print(f"wrote {REFERENCE} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
