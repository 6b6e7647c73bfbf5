"""Signed job definitions: the canonical bytes, signing with ssh-keygen, and verifying them.

A job's canonical definition is every field that changes what a host runs, when, where or as
whom, plus its revision, as sorted-key compact JSON with a version tag (docs/security.md,
"Signed definitions"). Operators sign it with `ssh-keygen -Y sign -n schedctl-job`; hosts
verify it against an allowed-signers file (the format git uses for SSH-signed commits).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NamedTuple

from schedctl.errors import ConfigError
from schedctl.models import MASK, Job, JobSpec, Seal

NAMESPACE = "schedctl-job"
CANONICAL_VERSION = 1
SSH_KEYGEN = "ssh-keygen"
# ssh-keygen answers in milliseconds; a hung agent or a prompt must not hang an edit or a run.
SSH_KEYGEN_TIMEOUT = 30.0


def canonical(spec: JobSpec, revision: int) -> bytes:
    """Return the bytes a job's signature covers: deterministic for equal definitions.

    Left out: description, tags, retention and which env values are masked in output, which
    change nothing a host runs.
    """
    doc: dict[str, Any] = {
        "schedctl-job": CANONICAL_VERSION,
        "name": spec.name,
        "revision": revision,
        "command": list(spec.command),
        "shell": spec.shell,
        "env": dict(spec.env),
        "run_as_user": spec.run_as_user,
        "workdir": spec.workdir,
        "timeout_seconds": spec.timeout_seconds,
        "schedule": spec.schedule,
        "timezone": spec.timezone,
        "placement": spec.placement,
        "concurrency": spec.concurrency.value,
        "catch_up": spec.catch_up.value,
        "jitter_seconds": spec.jitter_seconds,
        "retries": spec.retries,
        "retry_delay_seconds": spec.retry_delay_seconds,
        "output_limit_bytes": spec.output_limit_bytes,
        "enabled": spec.enabled,
        # exec: targets are commands the host runs too.
        "notify": list(spec.notify),
        "notify_on": list(spec.notify_on),
        # Where each host reads a secret from decides what the job gets.
        "secrets": dict(spec.secrets),
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def _read_string(blob: bytes, at: int) -> tuple[bytes, int]:
    if at + 4 > len(blob):
        raise ValueError("truncated")
    size = int.from_bytes(blob[at : at + 4], "big")
    end = at + 4 + size
    if end > len(blob):
        raise ValueError("truncated")
    return blob[at + 4 : end], end


def key_fingerprint(signature: str) -> str:
    """Return the SHA256 fingerprint of the public key inside an armored SSH signature.

    Raise ValueError when `signature` is not one.
    """
    # Here, not at the top: a host verifying on the run path never needs the fingerprint.
    import base64
    import hashlib

    lines = [x.strip() for x in signature.strip().splitlines()]
    if len(lines) < 3 or lines[0] != "-----BEGIN SSH SIGNATURE-----":
        raise ValueError("not an SSH signature")
    if lines[-1] != "-----END SSH SIGNATURE-----":
        raise ValueError("not an SSH signature")
    try:
        blob = base64.b64decode("".join(lines[1:-1]), validate=True)
    except ValueError:
        raise ValueError("not an SSH signature") from None
    if not blob.startswith(b"SSHSIG"):
        raise ValueError("not an SSH signature")
    public_key, _ = _read_string(blob, 10)  # after the magic and the version
    digest = base64.b64encode(hashlib.sha256(public_key).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def _keygen(args: list[str], data: bytes, signature: str | None = None) -> tuple[int, str, str]:
    """Run ssh-keygen with `data` on stdin (and `signature` on a pipe); return code, out, err."""
    import subprocess

    fds: tuple[int, ...] = ()
    read_end = -1
    if signature is not None:
        # A pipe, not a temporary file: nothing to clean up, nothing another user can swap.
        read_end, write_end = os.pipe()
        try:
            os.write(write_end, signature.encode())
        finally:
            os.close(write_end)
        fds = (read_end,)
        args = [a.replace("{sig}", f"/dev/fd/{read_end}") for a in args]
    try:
        done = subprocess.run(
            [SSH_KEYGEN, *args],
            input=data,
            capture_output=True,
            pass_fds=fds,
            timeout=SSH_KEYGEN_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise ConfigError(
            "ssh-keygen is not installed: install OpenSSH's client tools (openssh-client)"
        ) from None
    except subprocess.TimeoutExpired:
        raise ConfigError(
            f"ssh-keygen did not answer within {SSH_KEYGEN_TIMEOUT:g} s (a passphrase prompt? "
            f"an ssh-agent that hangs?): load the key into ssh-agent and try again"
        ) from None
    finally:
        if read_end >= 0:
            os.close(read_end)
    err = (done.stderr.decode(errors="replace").strip().splitlines() or [""])[-1]
    return done.returncode, done.stdout.decode(errors="replace"), err


def sign(data: bytes, key: Path, signer: str) -> Seal:
    """Sign `data` with `key` (a private key, or a public key whose private half is in ssh-agent)."""
    if not key.is_file():
        raise ConfigError(
            f"signing key {key} is not a readable file: fix SCHEDCTL_SIGNING_KEY or --sign-with"
        )
    code, out, err = _keygen(["-Y", "sign", "-q", "-n", NAMESPACE, "-f", str(key)], data)
    if code != 0 or "BEGIN SSH SIGNATURE" not in out:
        raise ConfigError(
            f"ssh-keygen could not sign with {key} ({err or f'exit {code}'}): give a private "
            f"key without a passphrase, or a public key whose private half is in ssh-agent"
        )
    return Seal(out.strip(), signer, key_fingerprint(out), data.decode("utf-8"))


def verify(data: bytes, seal: Seal, allowed_signers: Path) -> str | None:
    """Return None when `seal` is a valid signature of `data` by an allowed signer, else why not."""
    code, _, err = _keygen(
        ["-Y", "verify", "-f", str(allowed_signers), "-I", seal.signer, "-n", NAMESPACE,
         "-s", "{sig}"],
        data,
        seal.signature,
    )  # fmt: skip
    if code == 0:
        return None
    # Only on failure: a second look tells an unknown signer from a changed definition.
    intact, _, _ = _keygen(["-Y", "check-novalidate", "-n", NAMESPACE, "-s", "{sig}"], data,
                           seal.signature)  # fmt: skip
    if intact == 0:
        return (
            f"signer {seal.signer!r} with key {seal.key} is not allowed to sign jobs by "
            f"{allowed_signers} ({err or 'not listed'})"
        )
    return (
        "the definition was changed after it was signed, or its signature is damaged "
        f"(signed by {seal.signer!r}, key {seal.key})"
    )


def intact(data: bytes, seal: Seal) -> bool:
    """Return whether `seal` is a good signature of `data`, whoever made it.

    Needs no allowed-signers file: it says the bytes are the ones signed, not who may sign.
    """
    code, _, _ = _keygen(["-Y", "check-novalidate", "-n", NAMESPACE, "-s", "{sig}"], data,
                         seal.signature)  # fmt: skip
    return code == 0


def signature_key(seal: Seal) -> str:
    """Return the fingerprint of the key that made the signature, read from the signature."""
    try:
        return key_fingerprint(seal.signature)
    except ValueError:
        return "unreadable"


class Change(NamedTuple):
    """One field of a job's definition, as signed and as stored now."""

    field: str
    signed: str
    now: str


def _shown(value: Any) -> str:
    return "(unset)" if value is _UNSET else json.dumps(value, ensure_ascii=False)


_UNSET = object()


def unknown_signed(job: Job) -> str | None:
    """Return why the definition `job`'s signature covers cannot be shown, or None if it can."""
    seal = job.seal
    if seal is None:
        return "it is unsigned"
    if not seal.signed:
        return "the signed definition is not stored (signed before it was kept)"
    if not intact(seal.signed.encode("utf-8"), seal):
        return "the stored signed definition does not match the signature either"
    return None


def changes_since_signing(job: Job) -> list[Change] | None:
    """Return what differs between the definition that was signed and the stored one.

    None when the signed text is not known: not stored (signed before it was kept) or not the
    text the signature covers. Values of masked env entries are shown as ***.
    """
    if unknown_signed(job) is not None:
        return None
    assert job.seal is not None
    seal = job.seal
    try:
        before = json.loads(seal.signed)
    except ValueError:
        return None
    if not isinstance(before, dict):
        return None
    after = json.loads(canonical(job.spec, job.revision))
    masked = set(job.spec.secret_env)
    found: list[Change] = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key, _UNSET), after.get(key, _UNSET)
        if old == new:
            continue
        if key == "env" and isinstance(old, dict) and isinstance(new, dict):
            for name in sorted(set(old) | set(new)):
                a, b = old.get(name, _UNSET), new.get(name, _UNSET)
                if a != b:
                    if name in masked:
                        a, b = (x if x is _UNSET else MASK for x in (a, b))
                    found.append(Change(f"env.{name}", _shown(a), _shown(b)))
            continue
        found.append(Change(key, _shown(old), _shown(new)))
    return found


def unsafe_to_resign(job: Job, allowed_signers: Path | None) -> str | None:
    """Return why signing `job` again would sign what nobody reviewed, or None when it would not.

    A signature that no longer matches the stored definition means someone changed the row
    after signing; a signer `allowed_signers` (when given) does not list is no one to vouch
    for it either.
    """
    seal = job.seal
    if seal is None:
        return None
    data = canonical(job.spec, job.revision)
    if not intact(data, seal):
        changed = changes_since_signing(job)
        what = (
            unknown_signed(job) or ""
            if changed is None
            else ", ".join(dict.fromkeys(c.field.split(".")[0] for c in changed)) or "revision"
        )
        return f"its definition was changed after {seal.signer!r} signed it ({what})"
    if allowed_signers is not None and verify(data, seal, allowed_signers) is not None:
        return f"it is signed by {seal.signer!r}, whom {allowed_signers} does not allow"
    return None
