"""Jobs as files: export, apply."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from schedctl import declare
from schedctl.cli.context import state
from schedctl.cli.output import print_json
from schedctl.errors import ValidationError


def export(
    ctx: typer.Context,
    jobs: Annotated[
        list[str] | None, typer.Argument(help="The jobs to export [default: every job].")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write atomically to this file instead of stdout."),
    ] = None,
    with_secrets: Annotated[
        bool,
        typer.Option(
            "--with-secrets",
            help="Write webhook URLs and secret-env values whole (a file written with -o is "
            'then mode 0600); without it they read webhook:https://HOST/*** and "***", and '
            "apply keeps the stored ones. --secret references are always written.",
        ),
    ] = False,
) -> None:
    """Write job definitions as a TOML file that `schedctl apply -f` reads back.

    Keys equal to `add`'s defaults are left out.

    Example: schedctl export -o jobs.toml; edit it; schedctl apply -f jobs.toml --dry-run
    """
    st = state(ctx)
    text, secret = declare.export(st.store(), list(jobs or ()), with_secrets)
    if output is None:
        sys.stdout.write(text)
        return
    from schedctl.hostfiles import atomic_write

    atomic_write(output, text, 0o600 if secret else 0o644)


_WORDS = {
    "create": ("+", "created", "would create"),
    "change": ("~", "changed", "would change"),
    "unchanged": ("=", "unchanged", "unchanged"),
    "remove": ("-", "removed", "would remove"),
    "keep": ("!", "not in file, kept", "not in file, kept"),
}


def _read(path: str) -> tuple[str, str]:
    """Return the file's text and the name errors give it."""
    if path == "-":
        data, source = sys.stdin.buffer.read(), "<stdin>"
    else:
        source = path
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise ValidationError(
                f"cannot read {path}: {e.strerror}; give a readable file"
            ) from None
    try:
        return data.decode("utf-8"), source
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ValidationError(f"{source}:{line}: not UTF-8 text: save the file as UTF-8") from None


def apply(
    ctx: typer.Context,
    file: Annotated[
        str,
        typer.Option("--file", "-f", help="The job file (TOML, as export writes it); - for stdin."),
    ],
    prune: Annotated[
        bool, typer.Option("--prune", help="Remove stored jobs the file does not name.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would change; change nothing.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Make the stored jobs match a job file, in one transaction, and print the differences.

    Jobs the file does not name are kept (listed as such) unless --prune. A file with any
    problem changes nothing; a job edited by someone else meanwhile changes nothing (exit 4).

    Example: schedctl export | schedctl apply -f - --dry-run
    """
    from schedctl import jobfile

    st = state(ctx)
    text, source = _read(file)
    entries = jobfile.parse(text, source, st.default_timezone())
    if prune and not entries:
        # An empty input is more often a failed `export` upstream in a pipe than a wish.
        raise ValidationError(
            f"{source} defines no job, and --prune would remove every stored job: remove them "
            f"with `schedctl remove` instead"
        )
    store = st.store()
    the_plan = declare.plan(store, entries, source, prune)
    if not dry_run:
        declare.apply(store, the_plan, st.clock)
    if json_out:
        print_json(_plan_json(the_plan, dry_run))
        return
    lines = []
    for step in the_plan.steps:
        mark, did, would = _WORDS[step.action]
        word = would if dry_run else did
        extra = ""
        if step.action == "change" and step.job is not None and not dry_run:
            extra = f" (revision {step.job.revision} -> {step.job.revision + 1})"
        lines.append(f"{mark} {word}: {step.name}{extra}\n")
        if step.action == "change":
            lines.extend(f"    {key}: {old} -> {new}\n" for key, old, new in step.changes)
    counts = ", ".join(
        f"{the_plan.count(a)} {_WORDS[a][1]}"
        for a in ("create", "change", "unchanged", "remove", "keep")
        if a not in ("remove", "keep") or (a == "remove") == prune
    )
    lines.append(f"{'dry run, nothing changed: ' if dry_run else ''}{counts}\n")
    sys.stdout.write("".join(lines))


def _plan_json(the_plan: declare.Plan, dry_run: bool) -> dict[str, Any]:
    return {
        "dry_run": dry_run,
        "jobs": [
            {
                "name": s.name,
                "action": s.action,
                "revision": None if s.job is None else s.job.revision,
                "changes": [{"field": k, "old": o, "new": n} for k, o, n in s.changes],
            }
            for s in the_plan.steps
        ],
        "counts": {
            a: the_plan.count(a) for a in ("create", "change", "unchanged", "remove", "keep")
        },
    }
