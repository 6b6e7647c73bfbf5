"""Console entry point: one line per error, a documented exit code, never a stray traceback."""

from __future__ import annotations

import contextlib
import gc
import io
import os
import sys
from typing import Any

from schedctl import boundary, log, redact
from schedctl.errors import ExitCode, OutputError


def _fast_args(args: list[str]) -> tuple[str, list[str], str | None] | None:
    """Return (command, its own args, a --db given before it) for `run` and `check`."""
    db: str | None = None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("run", "check"):
            return arg, args[i + 1 :] + (["--debug"] if "--debug" in args[:i] else []), db
        if arg == "--db" and i + 1 < len(args):
            db = args[i + 1]
            i += 2
        elif arg.startswith("--db="):
            db = arg.split("=", 1)[1]
            i += 1
        elif arg == "--debug":
            i += 1
        else:
            return None
    return None


def _fail(message: str, code: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"{log.prefix('error')}schedctl: error: {redact.scrub(message)}\n")
        sys.stderr.flush()
    return code


def _standard_streams() -> bool:
    """Give a closed stdin, stdout or stderr /dev/null; return whether stdout was closed.

    Otherwise the next file opened (a database, a lock) would get its number, and the job's
    output or an event line would be written into it.
    """
    closed = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            closed.append(fd)
            # The lowest free number: this one, as those below it are open by now.
            os.open(os.devnull, os.O_RDWR)
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    stdout_closed = sys.stdout is None
    if stdout_closed:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    return stdout_closed or 1 in closed


class _Stdout(io.RawIOBase):
    """File descriptor 1 for the main CLI: a write that fails raises OutputError.

    A full disk, a closed or failing descriptor then ends the command with one line and its own
    exit code, and what is left unwritten is dropped so that exiting does not try again.
    """

    failed = False

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return 1

    def isatty(self) -> bool:
        return os.isatty(1)

    def write(self, data: Any) -> int:
        if self.failed:
            return len(data)
        try:
            return os.write(1, data)
        except BrokenPipeError:
            self.failed = True
            raise
        except OSError as e:
            self.failed = True
            raise OutputError(f"cannot write output: {e.strerror}") from None


def _guard_stdout() -> None:
    old = sys.stdout
    sys.stdout = io.TextIOWrapper(
        io.BufferedWriter(_Stdout()),
        encoding=old.encoding,
        errors=old.errors,
        line_buffering=bool(old.line_buffering),
    )


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return the process exit code."""
    args = sys.argv[1:] if argv is None else argv
    stdout_closed = _standard_streams()
    instruction = os.environ.get("_SCHEDCTL_COMPLETE")
    if instruction:
        # The shell asks for completions (the script `schedctl completion SHELL` prints).
        from schedctl.cli.completion import complete

        return complete(instruction)
    fast = _fast_args(args)
    if fast is not None:
        # Hot paths: timers start `run` and monitoring starts `check` on every host, again and
        # again; keep click, Typer, rich and SQLAlchemy out of them.
        name, own, db = fast
        # Importing the driver allocates enough to set off the cycle collector many times over;
        # nothing of it is garbage yet. `run` turns collection back on before the job starts.
        gc.disable()
        if name == "run":
            from schedctl.cli.run import main as run_main

            return run_main(own, db)
        from schedctl.cli.check import main as check_main

        return check_main(own, db, stdout_closed)
    if stdout_closed:
        return _fail(
            "cannot write output: standard output is closed; give the command somewhere to "
            "write (e.g. >/dev/null)",
            ExitCode.OUTPUT,
        )
    _guard_stdout()
    return boundary.guarded(lambda: _typer_main(args), boundary.debug_requested(args))


def _typer_main(args: list[str]) -> int:
    """Run the Typer app; click's own errors end here, everything else at the boundary."""
    # As for `run`: loading the framework and the command sets off the cycle collector again
    # and again with nothing to collect; the root callback turns it back on.
    gc.disable()
    import click
    import typer

    from schedctl.cli.app import app

    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name="schedctl", standalone_mode=False)
        sys.stdout.flush()  # here, where a failure still gets its line and exit code
    except click.UsageError as e:
        message = e.format_message()
        if not message:
            # A bare `schedctl` (or group): the help just printed is the whole answer.
            return ExitCode.USAGE
        path = e.ctx.command_path if e.ctx else "schedctl"
        if isinstance(e, click.NoSuchOption) and e.ctx and e.ctx.info_name in ("add", "edit"):
            # `add y -s @daily ls -la`: the job's own options reach schedctl's parser.
            message += (
                f" If it belongs to the job's command, put the command after `--`, e.g. "
                f"{path} NAME -s @daily -- ls -la."
            )
        return _fail(f"{message} (see `{path} --help`)", ExitCode.USAGE)
    except click.ClickException as e:
        return _fail(e.format_message(), e.exit_code)
    except click.Abort:
        raise KeyboardInterrupt from None
    except BrokenPipeError:
        # Output piped into `head` and closed early: not an error worth a message.
        sys.stderr.close()
        return 0
    from schedctl.cli.context import finish

    return finish(result if isinstance(result, int) else 0)


def run() -> None:
    """Exit the process with main()'s code (console_scripts target)."""
    code = main()
    if _fast_args(sys.argv[1:]) is not None:
        # `run` and `check` have closed their database and reaped their job by now; skip the
        # interpreter's tear-down of every imported module, ~25 ms of each timer firing.
        _flush_and_exit(code)
    sys.exit(code)


def _flush_and_exit(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        # Reader gone or stream closed: nothing left to deliver.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()
    os._exit(code)
