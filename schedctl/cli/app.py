"""The Typer application: global options and command registration."""

from __future__ import annotations

import gc
import importlib
import re
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer
from typer.core import TyperCommand, TyperGroup

from schedctl import __version__
from schedctl.cli import context
from schedctl.cli.context import State, state

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

# Every command, in the order --help lists it, and where it is defined: (module, attribute).
# A module is imported only when one of its commands runs (or --help lists them all), so a
# command pays at start-up for what it uses, not for the daemon, deployment or reports.
_COMMANDS: dict[str, tuple[str, str] | None] = {
    "add": ("schedctl.cli.jobs", "add"),
    "edit": ("schedctl.cli.jobs", "edit"),
    "remove": ("schedctl.cli.jobs", "remove"),
    "enable": ("schedctl.cli.jobs", "enable"),
    "disable": ("schedctl.cli.jobs", "disable"),
    "list": ("schedctl.cli.jobs", "list_"),
    "show": ("schedctl.cli.jobs", "show"),
    "import": ("schedctl.cli.importing", "import_app"),
    "next": ("schedctl.cli.jobs", "next_"),
    "upcoming": ("schedctl.cli.runs", "upcoming"),
    "export": ("schedctl.cli.declare", "export"),
    "apply": ("schedctl.cli.declare", "apply"),
    "sign": ("schedctl.cli.trust", "sign"),
    "verify": ("schedctl.cli.trust", "verify"),
    "history": ("schedctl.cli.runs", "history"),
    "logs": ("schedctl.cli.runs", "logs"),
    "locks": ("schedctl.cli.runs", "locks"),
    "report": ("schedctl.cli.ops", "report"),
    "metrics": ("schedctl.cli.ops", "metrics"),
    "prune": ("schedctl.cli.ops", "prune"),
    "notify": ("schedctl.cli.notify", "notify"),
    "hosts": ("schedctl.cli.hosts", "hosts"),
    "daemon": ("schedctl.cli.daemon", "daemon"),
    "quickstart": ("schedctl.cli.quickstart", "quickstart"),
    "run": None,  # defined below: entry.py dispatches it before this module loads
    "check": None,
    "render": ("schedctl.cli.deploy", "render_app"),
    "sync": ("schedctl.cli.deploy", "sync_app"),
    "db": ("schedctl.cli.db", "app"),
    "completion": ("schedctl.cli.completion", "completion"),
}


def _build(name: str, where: tuple[str, str]) -> click.Command:
    """Import the module defining `name` and let Typer turn it into a click command."""
    module, attribute = where
    target = getattr(importlib.import_module(module), attribute)
    # A one-command application built with the root's settings: the command gets exactly
    # the options, help and callback wrapper it would get registered on the root directly.
    holder = typer.Typer(
        suggest_commands=False, add_completion=False, pretty_exceptions_enable=False
    )
    if isinstance(target, typer.Typer):
        holder.add_typer(target, name=name)
    else:
        holder.command(name)(target)
    return _plain_help(typer.main.get_group(holder).commands[name])


# What rich markup would read as a tag (rich's own pattern): help text is plain, so a
# `[default: forbid]` in it is escaped, not dropped as an unknown style.
_TAG = re.compile(r"(\\*)(\[[a-z#/@][^[]*?])")


def _escape(text: str | None) -> str | None:
    return None if text is None else _TAG.sub(lambda m: f"{m[1]}{m[1]}\\{m[2]}", text)


def _plain_help(command: click.Command) -> click.Command:
    """Make `command`'s --help (and its subcommands') show its help texts as written.

    Escaped only while --help is printed: completion shows the same texts to the shell as is.
    """
    texts: list[Any] = [command, *command.params]
    if isinstance(command, click.Group):
        texts += command.commands.values()
        for sub in command.commands.values():
            _plain_help(sub)
    format_help = command.format_help

    def escaped_help(ctx: click.Context, formatter: click.HelpFormatter) -> None:
        saved = [(t, getattr(t, "help", None), getattr(t, "epilog", None)) for t in texts]
        for t, help_text, epilog in saved:
            t.help = _escape(help_text)
            if epilog is not None:
                t.epilog = _escape(epilog)
        try:
            format_help(ctx, formatter)
        finally:
            for t, help_text, epilog in saved:
                t.help = help_text
                if epilog is not None:
                    t.epilog = epilog

    setattr(command, "format_help", escaped_help)  # noqa: B010 (a method of this one object)
    return command


class _LazyGroup(TyperGroup):
    """The root group: builds a command only when it is looked up."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = _COMMANDS.get(cmd_name)
        if where is not None and cmd_name not in self.commands:
            self.commands[cmd_name] = _build(cmd_name, where)
        return self.commands.get(cmd_name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.exceptions.NoSuchCommand as e:
            # click suggests close names from the commands built so far: offer them all.
            raise click.exceptions.NoSuchCommand(
                e.command_name, possibilities=list(_COMMANDS), ctx=ctx
            ) from None


app = typer.Typer(
    cls=_LazyGroup,
    suggest_commands=False,  # click already says "Did you mean"
    name="schedctl",
    help="Run periodic jobs on a fleet of Linux hosts, exactly once per scheduled slot.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"schedctl {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    ctx: typer.Context,
    db_url: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="Database URL (postgresql://... or sqlite:////path); "
            "default: $SCHEDCTL_DATABASE_URL, the config file, or the embedded SQLite file. "
            "Visible to all users in ps: keep passwords in $SCHEDCTL_DATABASE_URL.",
            show_default=False,
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
    sign_with: Annotated[
        str | None,
        typer.Option(
            "--sign-with",
            metavar="KEY",
            help="Sign the definitions this command stores with this SSH key (a private key, "
            "or a public key whose private half is in ssh-agent); default: "
            "$SCHEDCTL_SIGNING_KEY. The principal is $SCHEDCTL_SIGNER.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run periodic jobs on a fleet of Linux hosts, exactly once per scheduled slot."""
    # The command is loaded by now (entry.py turned the collector off for that); what it
    # allocates from here, over a long `daemon` or `prune` too, is collected as usual.
    gc.freeze()
    gc.enable()
    ctx.obj = State(db_flag=db_url, debug=debug, sign_with=sign_with)
    context.current.append(ctx.obj)


class _OwnParserCommand(TyperCommand):
    """`run` and `check`: their own parser reads the arguments; completion offers job names."""

    options: tuple[str, ...] = ()

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[CompletionItem]:
        from click.shell_completion import CompletionItem

        if incomplete.startswith("-"):
            return [CompletionItem(o) for o in self.options if o.startswith(incomplete)]
        from schedctl.cli.completion import complete_job

        return [CompletionItem(n) for n in complete_job(ctx, incomplete)]


class _RunCommand(_OwnParserCommand):
    options = ("--now", "--at-slot", "--trigger", "--json", "--db", "--debug", "--help")


class _CheckCommand(_OwnParserCommand):
    options = ("--json", "--settle", "--db", "--debug", "--help")


@app.command(
    "run",
    cls=_RunCommand,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def run_command(ctx: typer.Context) -> None:
    """Run a job's current slot exactly once across hosts (see `schedctl run --help`)."""
    # entry.py normally dispatches `run` before this application is loaded; this entry lists
    # it in --help and serves the odd invocation that reaches Typer first.
    from schedctl.cli.run import main as run_main

    raise typer.Exit(run_main(list(ctx.args), state(ctx).db_flag))


@app.command(
    "check",
    cls=_CheckCommand,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def check_command(ctx: typer.Context) -> None:
    """Monitoring check: exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (see `schedctl check --help`)."""
    # Like `run`, entry.py dispatches `check` before this application is loaded.
    from schedctl.cli.check import main as check_main

    raise typer.Exit(check_main(list(ctx.args), state(ctx).db_flag))
