"""Signed definitions: `schedctl sign` and `schedctl verify`."""

from __future__ import annotations

import os
from typing import Annotated, NamedTuple

import typer

from schedctl import services, signing, trust
from schedctl.cli.completion import complete_job
from schedctl.cli.context import SIGNING_KEY_VAR, state
from schedctl.cli.output import Layout, Output, Table, cell, done, note, print_json, print_table
from schedctl.errors import ConfigError, ExitCode
from schedctl.models import Job


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
    accept_changes: Annotated[
        bool,
        typer.Option(
            "--accept-changes",
            help="Sign the named jobs even if they changed after they were signed (review "
            "the change with `schedctl verify JOB` first).",
        ),
    ] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Sign jobs' definitions as they stand, so hosts that require signatures run them.

    A job changed after it was signed is signed only when named with --accept-changes (exit
    81 otherwise; without names it is skipped and listed, exit 81). Each job's revision goes
    up by one. Example: SCHEDCTL_SIGNER=alice@example.com schedctl sign --sign-with ~/.ssh/id_ed25519.pub nightly-backup
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
    result = services.sign_jobs(st.store(), list(names or []), st.clock, accept_changes)
    if json_:
        print_json([{"job": j.name, "revision": j.revision,
                     "signer": j.seal.signer if j.seal else None,
                     "key": j.seal.key if j.seal else None} for j in result.signed]
                   + [{"job": j.name, "skipped": why} for j, why in result.skipped])  # fmt: skip
    else:
        for j in result.signed:
            assert j.seal is not None
            done(f"signed job {j.name} revision {j.revision} as {j.seal.signer} ({j.seal.key})")
        for j, why in result.skipped:
            note(f"skipped job {j.name}: {why}")
    if result.skipped:
        raise typer.Exit(int(ExitCode.CHANGED_AFTER_SIGNING))


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

    KEY is read from the signature itself; a job changed after it was signed is listed below
    the table field by field (signed -> now).
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
    seen = {v.job.name: _since_signing(v) for v in found}
    if json_:
        print_json([{**v.to_dict(), **seen[v.job.name].to_dict()} for v in found])
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
            since = seen[v.job.name]
            sig = "unsigned" if seal is None else (
                "valid" if v.valid else "invalid" if v.valid is False else "not checked"
            )  # fmt: skip
            if since.changed or since.key_mismatch:
                sig = "changed after signing"
            bad = v.valid is False or seal is None or since.changed or since.key_mismatch
            style = "green" if v.valid and not bad else "red" if bad else "white"
            here = (
                "runs" if v.refusal is None else f"refused ({v.refusal.kind}): {v.refusal.reason}"
            )
            if v.refusal is None and v.valid is False:
                here = f"runs (signatures not required): {v.why}"
            table.add_row(
                cell(v.job.name),
                str(v.job.revision),
                cell(seal.signer if seal else "-"),
                cell(since.key or "-", "red" if since.key_mismatch else ""),
                cell(sig, style),
                cell(here, "red" if v.refusal else "green"),
            )
        print_table(table)
        for v in found:
            for line in seen[v.job.name].lines(v.job):
                done(line)
    if refused:
        raise typer.Exit(int(ExitCode.REFUSED))


class SinceSigning(NamedTuple):
    """What `verify` found of a job's row against its own signature, allowed or not."""

    key: str  # the fingerprint of the key that made the signature, read from the signature
    key_mismatch: bool  # the stored signing_key names another key: the row was changed
    changed: bool  # the stored definition is not the one signed
    changes: list[signing.Change] | None  # field by field; None: the signed text is unknown

    def to_dict(self) -> dict[str, object]:
        """Return the JSON fields (`key` replaces the stored, unsigned one)."""
        return {
            "key": self.key or None,
            "key_matches_stored": not self.key_mismatch,
            "changed_after_signing": self.changed,
            "changes": None if self.changes is None else [c._asdict() for c in self.changes],
        }

    def lines(self, job: Job) -> list[str]:
        """Return what to say below the table about `job`."""
        said: list[str] = []
        seal = job.seal
        if seal is None:
            return said
        if self.key_mismatch:
            said.append(
                f"job {job.name}: its stored key {seal.key} is not the key that made its "
                f"signature ({self.key}): the row was changed after signing"
            )
        if not self.changed:
            return said
        if self.changes is None:
            said.append(
                f"job {job.name} changed after {seal.signer} signed it; what changed cannot be "
                f"shown: {signing.unknown_signed(job)}"
            )
            return said
        said.append(f"job {job.name} changed after {seal.signer} signed it:")
        said.extend(f"  {c.field}: {c.signed} -> {c.now}" for c in self.changes)
        said.append(
            f"  re-sign it with `schedctl sign {job.name} --accept-changes` only if this change "
            f"is intended"
        )
        return said


def _since_signing(v: trust.Verdict) -> SinceSigning:
    seal = v.job.seal
    if seal is None:
        return SinceSigning("", False, False, None)
    key = signing.signature_key(seal)
    changed = False
    if not v.valid:  # a valid signature covers the stored definition already
        changed = not signing.intact(signing.canonical(v.job.spec, v.job.revision), seal)
    changes = signing.changes_since_signing(v.job) if changed else None
    return SinceSigning(key, key != seal.key, changed, changes)
