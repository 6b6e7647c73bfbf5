"""Signed definitions: `schedctl sign` and `schedctl verify`."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from schedctl import services, trust
from schedctl.cli.completion import complete_job
from schedctl.cli.context import SIGNING_KEY_VAR, state
from schedctl.cli.output import Layout, Output, Table, cell, done, print_json, print_table
from schedctl.errors import ConfigError, ExitCode


def sign(
    ctx: typer.Context,
    names: Annotated[
        list[str] | None,
        typer.Argument(help="The jobs [default: every job].", autocompletion=complete_job),
    ] = None,
    sign_with: Annotated[
        str | None,
        typer.Option(
            "--sign-with",
            metavar="KEY",
            help=f"The SSH key [default: ${SIGNING_KEY_VAR}].",
            show_default=False,
        ),
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Sign jobs' definitions as they stand, so hosts that require signatures run them.

    Each job's revision goes up by one. Example: SCHEDCTL_SIGNER=alice@example.com schedctl sign --sign-with ~/.ssh/id_ed25519.pub nightly-backup
    """
    st = state(ctx)
    st.sign_with = sign_with or st.sign_with
    values = {**os.environ}
    if not st.sign_with and not values.get(SIGNING_KEY_VAR):
        from schedctl import config

        if not config.file_values(os.environ).get(SIGNING_KEY_VAR):
            raise ConfigError(
                f"no signing key: set {SIGNING_KEY_VAR} (and SCHEDCTL_SIGNER) or give --sign-with KEY"
            )
    signed = services.sign_jobs(st.store(), list(names or []), st.clock)
    if json_:
        print_json([{"job": j.name, "revision": j.revision,
                     "signer": j.seal.signer if j.seal else None,
                     "key": j.seal.key if j.seal else None} for j in signed])  # fmt: skip
        return
    for j in signed:
        assert j.seal is not None
        done(f"signed job {j.name} revision {j.revision} as {j.seal.signer} ({j.seal.key})")


def verify(
    ctx: typer.Context,
    names: Annotated[
        list[str] | None,
        typer.Argument(help="The jobs [default: every job].", autocompletion=complete_job),
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    output: Output = Layout.table,
) -> None:
    """Show who signed each job and whether this host would run it; exit 80 if it would refuse any.

    Judged by this host's SCHEDCTL_ALLOWED_SIGNERS, SCHEDCTL_REQUIRE_SIGNATURE,
    SCHEDCTL_ALLOWED_USERS and SCHEDCTL_COMMAND_DIRS. Example: schedctl verify nightly-backup
    """
    st = state(ctx)
    store = st.store()
    jobs = [services.get_job(store, n) for n in names] if names else services.list_jobs(store)
    settings = trust.host_trust(os.environ)
    env = dict(os.environ)
    found = [trust.verdict(j, settings, env) for j in jobs]
    refused = any(v.refusal is not None for v in found)
    if json_:
        print_json([v.to_dict() for v in found])
    elif not found:
        done("no jobs")
    else:
        table = Table(wide=output is Layout.wide, header_style="bold")
        table.add_column("JOB", no_wrap=True)
        for col, priority in (("REV", 5), ("SIGNER", 2), ("KEY", 4), ("SIGNATURE", 1)):
            table.add_column(col, priority=priority, no_wrap=True)
        table.add_column("HERE", priority=0, shrink=16, overflow="fold")
        for v in found:
            seal = v.job.seal
            sig = "unsigned" if seal is None else (
                "valid" if v.valid else "invalid" if v.valid is False else "not checked"
            )  # fmt: skip
            style = "green" if v.valid else "red" if v.valid is False or seal is None else "white"
            here = (
                "runs" if v.refusal is None else f"refused ({v.refusal.kind}): {v.refusal.reason}"
            )
            if v.refusal is None and v.valid is False:
                here = f"runs (signatures not required): {v.why}"
            table.add_row(
                cell(v.job.name),
                str(v.job.revision),
                cell(seal.signer if seal else "-"),
                cell(seal.key if seal else "-"),
                cell(sig, style),
                cell(here, "red" if v.refusal else "green"),
            )
        print_table(table)
    if refused:
        raise typer.Exit(int(ExitCode.REFUSED))
