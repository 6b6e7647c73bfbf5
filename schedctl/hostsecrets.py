"""Secrets a job receives that are not stored in the database: a file or a systemd credential.

A job stores only `NAME=REF`: NAME is the environment variable the job gets, REF says where
each host finds the value, `file:PATH` (under the host's secrets directory) or
`credential:ID` (a systemd credential, `LoadCredential=ID` in the job's unit). `schedctl run`
reads the values just before the job starts (`resolve`); the values go to the job's
environment only, and `mask` takes them out of the output schedctl stores.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from schedctl.errors import SecretUnavailableError, ValidationError
from schedctl.models import MASK

KINDS = ("file", "credential")
# One path component under the secrets directory; a credential ID is one of these too, and so
# can go into a `LoadCredential=` line as it is.
_PART = re.compile(r"[A-Za-z0-9_@+-][A-Za-z0-9_.@+-]{0,127}")
MAX_PARTS = 8
# A value shorter than this is not masked in stored output: "***" for every "a" or "01" the
# job prints would garble the output and protect nothing.
MIN_MASKED = 3
# Over this a secret is not read: the value goes into the job's environment.
MAX_VALUE_BYTES = 64 * 1024


def check_ref(name: str, ref: str) -> str:
    """Return `ref` if it names a place a secret may come from, else raise ValidationError."""
    kind, sep, where = ref.partition(":")
    how = (
        "use file:NAME (a file under the host's secrets directory) or credential:ID "
        "(a systemd credential)"
    )
    if not sep or kind not in KINDS:
        raise ValidationError(f"secret {name}: {ref!a} is not a reference: {how}")
    parts = where.split("/")
    if kind == "credential" and len(parts) > 1:
        raise ValidationError(f"secret {name}: a credential ID has no '/': {how}")
    if where.startswith("/"):
        raise ValidationError(
            f"secret {name}: {ref!a} is an absolute path: name a file relative to the "
            f"host's secrets directory (SCHEDCTL_SECRETS_DIR)"
        )
    if ".." in parts or "." in parts:
        raise ValidationError(
            f"secret {name}: {ref!a} leaves its directory ('..' or '.'): name a file "
            f"inside the host's secrets directory"
        )
    if len(parts) > MAX_PARTS or not all(_PART.fullmatch(p) for p in parts):
        raise ValidationError(
            f"secret {name}: {ref!a}: use letters, digits and _ . @ + - "
            f"(a file may add '/' for a subdirectory), up to 128 per part"
        )
    return ref


def parse_pair(text: str) -> tuple[str, str]:
    """Split `NAME=REF` (from `--secret`), or raise naming the expected form."""
    name, sep, ref = text.partition("=")
    if not sep:
        raise ValidationError(
            f"bad --secret {text!a}: use NAME=REF, e.g. --secret TOKEN=file:token"
        )
    return name, ref


def credentials(secrets: Iterable[tuple[str, str]]) -> list[str]:
    """Return the systemd credential IDs the job's unit must load, in order, once each."""
    ids = (ref.partition(":")[2] for _, ref in secrets if ref.startswith("credential:"))
    return list(dict.fromkeys(ids))


def resolve(
    secrets: Iterable[tuple[str, str]],
    secrets_dir: Path | None,
    credentials_dir: str | None,
) -> dict[str, str]:
    """Return NAME -> value for each secret; raise SecretUnavailableError on the first missing.

    `secrets_dir` is the host's secrets directory (None: file secrets are refused), and
    `credentials_dir` the `$CREDENTIALS_DIRECTORY` systemd gave this service (None: not
    started by a unit that loads credentials).
    """
    values: dict[str, str] = {}
    for name, ref in secrets:
        kind, _, where = ref.partition(":")
        try:
            check_ref(name, ref)
        except ValidationError as e:
            raise SecretUnavailableError(f"{e}; fix it with `schedctl edit --secret`") from None
        if kind == "file":
            raw = _read_file(name, ref, where, secrets_dir)
        else:
            raw = _read_credential(name, where, credentials_dir)
        values[name] = _value(name, ref, raw)
    return values


def _refuse(name: str, ref: str, why: str) -> SecretUnavailableError:
    return SecretUnavailableError(f"secret {name} ({ref}): {why}; the job was not run")


def _owners() -> set[int]:
    return {0, os.geteuid()}


def _who() -> str:
    return "root" if os.geteuid() == 0 else "root or you"


def _check_dir(name: str, ref: str, directory: str, what: str) -> None:
    """Refuse a directory another user could change: a secret there is not this host's."""
    from schedctl.pathtrust import untrusted

    why = untrusted(directory, _owners())
    if why is not None:
        raise _refuse(
            name, ref,
            f"the {what} {directory} is not safe ({why}): it and every directory above it "
            f"must belong to {_who()} and be writable by no one else (`chown`, `chmod go-w`), "
            f"or another user could swap a secret",
        )  # fmt: skip


def _inside(name: str, ref: str, directory: str, path: str, what: str) -> str:
    """Return where `path` leads, refusing a symlink that leaves `directory`."""
    base = os.path.realpath(directory)
    real = os.path.realpath(path)
    if os.path.commonpath([base, real]) != base:
        raise _refuse(
            name, ref,
            f"{path} is a symlink that leads out of the {what} {directory} "
            f"(to {real}): put the file itself there",
        )  # fmt: skip
    return real


def _read_file(name: str, ref: str, where: str, secrets_dir: Path | None) -> bytes:
    if secrets_dir is None:
        raise _refuse(name, ref, "this host has no secrets directory: set SCHEDCTL_SECRETS_DIR")
    what = "secrets directory"
    path = os.path.join(secrets_dir, where)
    real = _inside(name, ref, str(secrets_dir), path, what)
    if os.path.isdir(secrets_dir):
        _check_dir(name, ref, str(secrets_dir), what)
        # Each subdirectory and symlink on the way, as named and as resolved; the file itself
        # is checked once open.
        for directory in {os.path.dirname(path), os.path.dirname(real)}:
            if os.path.isdir(directory):
                _check_dir(name, ref, directory, what)
        if os.path.islink(path) and os.lstat(path).st_uid not in _owners():
            raise _refuse(
                name, ref, f"{path} is a symlink owned by uid {os.lstat(path).st_uid}, not "
                f"{_who()}: replace it with the file",
            )  # fmt: skip
    hint = f"create it (owned by root, mode 0600) in {secrets_dir}"
    return _read_checked(name, ref, path, real, 0o077, hint)


def _read_checked(name: str, ref: str, path: str, real: str, refused_bits: int, hint: str) -> bytes:
    """Read the file `path` leads to (`real`): a regular file of root or ours, no mode bit
    of `refused_bits`."""
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        fix = hint if isinstance(e, FileNotFoundError) else "check the file"
        raise _refuse(name, ref, f"cannot read {path}: {e.strerror}: {fix}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(name, ref, f"{path} is not a regular file: put the value in a file")
        if st.st_uid not in _owners():
            raise _refuse(
                name, ref,
                f"{path} is owned by uid {st.st_uid}, not {_who()}: `chown` it (a secret "
                f"another user can replace is not this host's)",
            )  # fmt: skip
        if st.st_mode & refused_bits:
            mode = stat.S_IMODE(st.st_mode)
            raise _refuse(
                name, ref,
                f"{path} has mode {mode:04o}, open to others: `chmod 600 {path}`",
            )  # fmt: skip
        data = os.read(fd, MAX_VALUE_BYTES + 1)
    except OSError as e:
        raise _refuse(name, ref, f"cannot read {path}: {e.strerror}") from None
    finally:
        os.close(fd)
    return data


def _read_credential(name: str, cred: str, credentials_dir: str | None) -> bytes:
    ref = f"credential:{cred}"
    if not credentials_dir:
        raise _refuse(
            name, ref,
            "no systemd credentials here ($CREDENTIALS_DIRECTORY is unset): a credential "
            "reaches only a run started by the job's systemd unit (LoadCredential=), not cron, "
            "the daemon or a shell; use a file: secret there",
        )  # fmt: skip
    what = "credentials directory"
    path = os.path.join(credentials_dir, cred)
    hint = (
        f"add `LoadCredential={cred}` to the job's unit (`schedctl sync` does) and put the "
        f"credential in /etc/credstore/{cred}"
    )
    if not os.path.isdir(credentials_dir):
        raise _refuse(name, ref, f"cannot read {path}: no such directory: {hint}")
    real = _inside(name, ref, credentials_dir, path, what)
    _check_dir(name, ref, credentials_dir, what)
    # systemd writes each credential 0400 (0440 with an ACL for the unit's user), owned by
    # root or the unit's user, which is who runs `schedctl run` (systemd.exec(5)).
    return _read_checked(name, ref, path, real, 0o027, hint)


def _value(name: str, ref: str, raw: bytes) -> str:
    if len(raw) > MAX_VALUE_BYTES:
        raise _refuse(name, ref, f"the value is longer than {MAX_VALUE_BYTES} bytes")
    if b"\0" in raw:
        raise _refuse(name, ref, "the value holds a NUL byte, which no environment can carry")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _refuse(name, ref, "the value is not UTF-8 text") from None
    # Editors end a file with a newline that is no part of the value.
    return text[:-1] if text.endswith("\n") else text


def maskables(values: Iterable[str]) -> list[str]:
    """Return the texts `mask` replaces: each value and each line of it, longest first."""
    found = set()
    for value in values:
        for text in (value, *value.splitlines()):
            if len(text) >= MIN_MASKED:
                found.add(text)
    return sorted(found, key=len, reverse=True)


def mask(text: str, texts: list[str]) -> str:
    """Return `text` with each of `texts` (from `maskables`) replaced by ***."""
    for secret in texts:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def secret_values(env: Mapping[str, str], secret_env: Iterable[str]) -> list[str]:
    """Return the values of the job's environment that are marked secret."""
    return [env[k] for k in secret_env if k in env]
