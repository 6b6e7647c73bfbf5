"""What this host agrees to run: signed definitions and its own policy (docs/security.md).

Read from the host's configuration (the config file, then the environment):
SCHEDCTL_REQUIRE_SIGNATURE, SCHEDCTL_ALLOWED_SIGNERS, SCHEDCTL_ALLOWED_USERS and
SCHEDCTL_COMMAND_DIRS. `run` and `sync` judge every job by them before running or
installing it; `verify` shows the verdicts.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from schedctl.errors import ConfigError
from schedctl.models import Job

REQUIRE_VAR = "SCHEDCTL_REQUIRE_SIGNATURE"
SIGNERS_VAR = "SCHEDCTL_ALLOWED_SIGNERS"
USERS_VAR = "SCHEDCTL_ALLOWED_USERS"
DIRS_VAR = "SCHEDCTL_COMMAND_DIRS"
SECRETS_VAR = "SCHEDCTL_SECRETS_DIR"  # where `file:` secrets come from (config.secrets_dir)
# What a shell command may not hold for its first word to be the program that runs.
_SHELL_SPECIALS = frozenset(";&|`$()<>\n\\*?[]{}~!#'\"")
# Variables that make the allowed program (its loader, its shell, its interpreter, or a tool
# it starts) load or run code from elsewhere: refused in a job's --env under COMMAND_DIRS.
# Exact names, then prefixes. docs/security.md lists them.
CODE_ENV = frozenset({
    "BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "PS4", "PROMPT_COMMAND", "IFS", "CDPATH",
    "GLOBIGNORE", "GCONV_PATH", "GETCONF_DIR", "LOCPATH", "NLSPATH", "HOSTALIASES",
    "GLIBC_TUNABLES", "CLASSPATH", "TCLLIBPATH", "PHPRC", "PHP_INI_SCAN_DIR", "EDITOR",
    "VISUAL", "PAGER", "BROWSER", "LESSOPEN", "LESSCLOSE", "SSH_ASKPASS", "SUDO_ASKPASS",
    "OPENSSL_CONF", "OPENSSL_ENGINES", "HOME", "ZDOTDIR", "XDG_CONFIG_HOME", "XDG_CONFIG_DIRS",
    "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS",
})  # fmt: skip
CODE_ENV_PREFIXES = (
    "LD_", "BASH_FUNC_", "PYTHON", "PERL", "RUBY", "GEM_", "LUA_", "NODE_", "NPM_CONFIG_",
    "JAVA_", "GIT_", "GCONV_", "DYLD_",
)  # fmt: skip


def code_env(name: str) -> bool:
    """Return whether a job's --env `name` can make a program load or run other code."""
    return name in CODE_ENV or name.startswith(CODE_ENV_PREFIXES)


class HostTrust(NamedTuple):
    """This host's settings for which jobs it runs."""

    require_signature: bool = False
    allowed_signers: Path | None = None
    allowed_users: tuple[str, ...] | None = None  # None: any user
    command_dirs: tuple[str, ...] | None = None  # None: anywhere

    @property
    def active(self) -> bool:
        """Return whether this host judges jobs at all."""
        return self.require_signature or self.has_policy

    @property
    def has_policy(self) -> bool:
        """Return whether a user or command-directory policy is set."""
        return self.allowed_users is not None or self.command_dirs is not None


class Refusal(NamedTuple):
    """Why this host will not run a job: `signature` or `policy`, and a sentence."""

    kind: str
    reason: str

    @property
    def event(self) -> str:
        """Return the event logged for it."""
        return f"run.refused.{self.kind}"


def fix_for(kind: str, name: str) -> str:
    """Return what to do about a refusal of job `name`."""
    if kind == "signature":
        return (
            f"check `schedctl verify {name}` (what changed after signing, who signed it) and "
            f"re-sign it with `schedctl sign {name} --accept-changes` only if the change is "
            f"intended, or add its signer to this host's SCHEDCTL_ALLOWED_SIGNERS file"
        )
    return (
        f"change the job (`schedctl edit {name}`) or this host's SCHEDCTL_ALLOWED_USERS / "
        f"SCHEDCTL_COMMAND_DIRS"
    )


def _items(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


TRUST_VARS = (REQUIRE_VAR, SIGNERS_VAR, USERS_VAR, DIRS_VAR)


def host_trust(env: Mapping[str, str]) -> HostTrust:
    """Return this host's settings: the configuration file's, the environment's where it is silent.

    A setting the file makes is the host's: an environment that gives it another value is a
    ConfigError, never a way to loosen what the file requires.
    """
    from schedctl.config import config_file, read_env_file

    path = config_file(env)
    found = {} if path is None else read_env_file(path)
    for key in (*TRUST_VARS, SECRETS_VAR):
        if key in found and key in env and env[key].strip() != found[key].strip():
            raise ConfigError(
                f"{key} is set in the environment ({env[key][:60]!r}) and in {path} "
                f"({found[key][:60]!r}); the file decides it on this host: unset {key} in the "
                f"environment, or change it in {path}"
            )
    return parse_trust({**env, **found}, _flag(found) or _flag(env))


def _flag(values: Mapping[str, str]) -> bool:
    flag = values.get(REQUIRE_VAR, "").strip().lower()
    if flag not in ("", "0", "1", "yes", "no", "true", "false"):
        raise ConfigError(f"{REQUIRE_VAR} is {flag[:20]!r}: set it to 1 or 0")
    return flag in ("1", "yes", "true")


def parse_trust(values: Mapping[str, str], require: bool) -> HostTrust:
    """Parse this host's settings; a value that cannot work is a ConfigError."""
    signers = values.get(SIGNERS_VAR, "").strip()
    path = Path(signers) if signers else None
    if path is not None and not path.is_absolute():
        raise ConfigError(f"{SIGNERS_VAR} is {signers!r}: give an absolute path")
    if require and path is None:
        raise ConfigError(
            f"{REQUIRE_VAR} is set but {SIGNERS_VAR} is not: name the allowed-signers file "
            f"(docs/security.md, Signed definitions)"
        )
    users = _items(values[USERS_VAR]) if USERS_VAR in values else None
    dirs = None
    if values.get(DIRS_VAR, "").strip():
        dirs = _items(values[DIRS_VAR])
        for d in dirs:
            if not d.startswith("/"):
                raise ConfigError(f"{DIRS_VAR} holds {d!r}: give absolute directories")
        dirs = tuple(os.path.realpath(d) for d in dirs)
    return HostTrust(require, path, users, dirs)


class Admitted(NamedTuple):
    """This host runs the job; under COMMAND_DIRS, exactly the program it checked.

    `executable` is the absolute path the check resolved (every symlink followed) and `argv`
    the job's words, so the runner starts that file and no lookup can find another one.
    """

    executable: str | None = None
    argv: tuple[str, ...] | None = None


def admit(job: Job, trust: HostTrust, base_env: Mapping[str, str]) -> Refusal | Admitted:
    """Return why this host must not run `job`, or what it runs when it may."""
    if trust.require_signature:
        refused = signature_refusal(job, trust)
        if refused is not None:
            return refused
    if trust.allowed_users is not None:
        reason = _user_refusal(job, trust.allowed_users)
        if reason is not None:
            return Refusal("policy", reason)
    if trust.command_dirs is not None:
        found = _command_check(job, trust.command_dirs, base_env)
        if isinstance(found, str):
            return Refusal("policy", found)
        return found
    return Admitted()


def judge(job: Job, trust: HostTrust, base_env: Mapping[str, str]) -> Refusal | None:
    """Return why this host must not run `job`, or None when it may."""
    found = admit(job, trust, base_env)
    return found if isinstance(found, Refusal) else None


def signature_refusal(job: Job, trust: HostTrust) -> Refusal | None:
    """Return why `job`'s signature does not hold here, or None when it does."""
    from schedctl import signing

    assert trust.allowed_signers is not None
    if job.seal is None:
        return Refusal("signature", "its definition is unsigned")
    if not os.access(trust.allowed_signers, os.R_OK):
        return Refusal(
            "signature", f"the allowed-signers file {trust.allowed_signers} cannot be read"
        )
    why = signing.verify(signing.canonical(job.spec, job.revision), job.seal,
                         trust.allowed_signers)  # fmt: skip
    return None if why is None else Refusal("signature", why)


def runs_as(job: Job) -> str:
    """Return the user the job runs as here: its --user, else whoever starts `schedctl run`."""
    if job.spec.run_as_user:
        return job.spec.run_as_user
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _user_refusal(job: Job, users: tuple[str, ...]) -> str | None:
    user = runs_as(job)
    if user not in users:
        listed = ", ".join(users) or "no user"
        return f"it runs as {user!r}, and {USERS_VAR} lists only {listed}"
    return None


def _inside(path: str, dirs: tuple[str, ...]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in dirs)


def _path_refusal(path_var: str, dirs: tuple[str, ...]) -> str | None:
    """Return why a job's own PATH could lead the allowed program to other code, or None."""
    from schedctl.pathtrust import untrusted

    for entry in path_var.split(":"):
        if not entry.startswith("/"):
            shown = entry or "an empty entry"
            return (
                f"its --env PATH holds {shown!r}, which means its working directory or one "
                f"relative to it; under {DIRS_VAR} give only absolute directories"
            )
        if _inside(os.path.realpath(entry), dirs):
            continue
        why = untrusted(entry, (0,), must_exist=False)
        if why is not None:
            return (
                f"its --env PATH holds {entry}, which someone other than root could change "
                f"({why}); under {DIRS_VAR} list only allowed or root-only directories"
            )
    return None


def _lookup(program: str, path_var: str) -> str | None:
    """Return the file a bare `program` names on `path_var`, as exec would find it.

    Only absolute entries count: the checked path is what runs, so an empty, `.` or relative
    entry (the job's working directory) never decides what starts.
    """
    for entry in path_var.split(":"):
        if not entry.startswith("/"):
            continue
        candidate = os.path.join(entry, program)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _command_check(job: Job, dirs: tuple[str, ...], base_env: Mapping[str, str]) -> str | Admitted:
    """Return how the job's command breaks COMMAND_DIRS, or the file and words it runs."""
    spec = job.spec
    allowed = ", ".join(dirs)
    env = dict(spec.env)
    for key in sorted(env):
        if code_env(key):
            return (
                f"its --env sets {key}, which {DIRS_VAR} does not allow (it can make the "
                f"program load or run other code; docs/security.md lists them)"
            )
    if "PATH" in env:
        why = _path_refusal(env["PATH"], dirs)
        if why is not None:
            return why
    if spec.shell:
        text = spec.command[0] if spec.command else ""
        if any(c in _SHELL_SPECIALS for c in text):
            return (
                f"its shell command holds shell syntax (quotes, ;, |, $, redirections...), so "
                f"what it runs cannot be checked against {DIRS_VAR}: make it a plain command"
            )
        import shlex

        words = tuple(shlex.split(text))
    else:
        words = tuple(spec.command)
    program = words[0] if words else ""
    path_var = env.get("PATH") or base_env.get("PATH") or os.defpath
    if "/" in program:
        if not program.startswith("/"):
            return f"its command {program!r} is a relative path: give an absolute one"
        found: str | None = program
    else:
        found = _lookup(program, path_var)
    if not program or found is None or not os.path.isfile(found):
        return f"its command {program!r} is not found on this host"
    real = os.path.realpath(found)
    if not _inside(real, dirs):
        return f"its command resolves to {real}, outside {DIRS_VAR} ({allowed})"
    return Admitted(real, words)


class Verdict(NamedTuple):
    """What `schedctl verify` says of one job on this host."""

    job: Job
    valid: bool | None  # the signature against this host's allowed signers; None: not checked
    why: str  # why it is not valid, or why it was not checked
    refusal: Refusal | None  # what `run` here would refuse, None when it would run it

    def to_dict(self) -> dict[str, object]:
        """Return the JSON form."""
        seal = self.job.seal
        return {
            "job": self.job.name,
            "revision": self.job.revision,
            "signed": seal is not None,
            "signer": seal.signer if seal else None,
            "key": seal.key if seal else None,
            "valid": self.valid,
            "reason": self.why or None,
            "refused": self.refusal is not None,
            "refusal": None if self.refusal is None else self.refusal._asdict(),
        }


def verdict(job: Job, trust: HostTrust, base_env: Mapping[str, str]) -> Verdict:
    """Judge `job` as this host would, and check its signature even where none is required."""
    refusal = judge(job, trust, base_env)
    if trust.allowed_signers is None:
        return Verdict(job, None, f"no {SIGNERS_VAR} on this host", refusal)
    found = signature_refusal(job, trust)
    if found is None:
        return Verdict(job, True, "", refusal)
    return Verdict(job, False, found.reason, refusal)
