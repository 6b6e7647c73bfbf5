"""Error types that carry the exit code and a one-line, actionable message."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes; documented in docs/exit-codes.md."""

    OK = 0
    INTERNAL = 1
    USAGE = 2
    NOT_FOUND = 3
    CONFLICT = 4
    SCHEMA = 5
    OUTPUT = 74
    DB_UNAVAILABLE = 75
    DB_AUTH = 77
    CONFIG = 78
    SECRET = 79
    REFUSED = 80  # `run`: this host refuses the job's definition (signature or host policy)
    CHANGED_AFTER_SIGNING = 81  # an edit or `sign` of a job changed since it was signed


class SchedctlError(Exception):
    """Base error: `str(err)` is one line that says what is wrong and what to do."""

    exit_code: ExitCode = ExitCode.INTERNAL


class ValidationError(SchedctlError):
    """Input that cannot be accepted."""

    exit_code = ExitCode.USAGE


class NotFoundError(SchedctlError):
    """A named object does not exist."""

    exit_code = ExitCode.NOT_FOUND


class ConflictError(SchedctlError):
    """An object with that identity already exists, or changed underneath us."""

    exit_code = ExitCode.CONFLICT


class SchemaError(SchedctlError):
    """The database schema is missing, behind, or ahead of this schedctl."""

    exit_code = ExitCode.SCHEMA


class DatabaseUnavailableError(SchedctlError):
    """The database cannot be reached right now."""

    exit_code = ExitCode.DB_UNAVAILABLE


class DatabaseAuthError(SchedctlError):
    """The database refused our credentials."""

    exit_code = ExitCode.DB_AUTH


class OutputError(SchedctlError):
    """Standard output cannot be written: closed, disk full, an I/O error."""

    exit_code = ExitCode.OUTPUT


class ConfigError(SchedctlError):
    """Settings that cannot work (unsupported URL, unreadable config file)."""

    exit_code = ExitCode.CONFIG


class PrivilegeError(ConfigError):
    """The database role may not do what the command needs (SQLSTATE 42501)."""


class TransactionPoolerError(ConfigError):
    """The connection reaches PostgreSQL through a pooler that does not keep a session's backend."""

    def __init__(self) -> None:
        super().__init__(
            "the database connection goes through a transaction-pooling proxy (such as "
            "PgBouncer with pool_mode = transaction), which cannot hold a job's lock: point "
            "schedctl at PostgreSQL directly or at a pool with pool_mode = session"
        )


class ChangedAfterSigningError(SchedctlError):
    """A job's stored definition no longer matches its signature: nothing was stored."""

    exit_code = ExitCode.CHANGED_AFTER_SIGNING

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class MalformedJobError(ConfigError):
    """A stored job row holds a value of the wrong type (written into the database by hand)."""

    def __init__(self, job: str, field: str, problem: str, fix: str) -> None:
        self.job = job
        self.field = field
        super().__init__(
            f"job {job!r} is malformed in the database: its {field} {problem}; rewrite it with "
            f"`{fix}` (the stored {field} is dropped) or remove the job with "
            f"`schedctl remove {job}`"
        )


class SecretUnavailableError(SchedctlError):
    """A secret of the job cannot be read on this host: the job was not run."""

    exit_code = ExitCode.SECRET
