"""Per-invocation state shared by the commands: settings, clock, store."""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import typer

from schedctl import config, datadir, log
from schedctl.clock import Clock, DatabaseClock, SystemClock

if TYPE_CHECKING:
    from schedctl.db.repository import Repository, Sealer
    from schedctl.errors import MalformedJobError
    from schedctl.models import Job, JobSpec, Seal

SIGNING_KEY_VAR = "SCHEDCTL_SIGNING_KEY"
SIGNER_VAR = "SCHEDCTL_SIGNER"
UNSIGNED_NOTE = "unsigned: hosts with require_signature will refuse it"


@dataclass
class State:
    """What the root callback resolved for this invocation."""

    db_flag: str | None = None
    debug: bool = False
    clock: Clock = field(default_factory=SystemClock)
    sign_with: str | None = None  # --sign-with: overrides $SCHEDCTL_SIGNING_KEY
    _settings: config.Settings | None = None
    _store: Repository | None = None
    _said_unsigned: bool = False

    @property
    def settings(self) -> config.Settings:
        """Resolve settings on first use (so `--help` never touches the environment)."""
        if self._settings is None:
            log.configure()  # a bad SCHEDCTL_LOG_* is a configuration error, as a bad URL is
            self._settings = config.resolve(os.environ, self.db_flag)
            for warning in (
                config.db_flag_warning(self._settings),
                self._settings.passfile_warning,
            ):
                if warning:
                    sys.stderr.write(f"{log.prefix('warning')}schedctl: warning: {warning}\n")
            note = self._settings.personal_database_note()
            path = self._settings.database.sqlite_path
            if note and path is not None and not path.exists():
                # Once, when that database is about to be created: later runs stay quiet.
                sys.stderr.write(f"{log.prefix('warning')}schedctl: warning: {note}\n")
        return self._settings

    def left_out(self) -> list[MalformedJobError]:
        """Return the malformed jobs the command left out of what it listed."""
        return [] if self._store is None else list(self._store.malformed.values())

    def store(self) -> Repository:
        """Open the database once, checking (or, for SQLite, creating) the schema.

        Results spooled by a `run` that lost the database are written first, as every
        command does.
        """
        if self._store is None:
            # Imported here so --help and --version never open a database driver.
            from schedctl.db.repository import open_current

            datadir.check(self.settings.data_dir)  # before anything in it is opened
            from schedctl.db.connector import connect

            url = self.settings.database
            self._store = open_current(url, self.clock)
            # A one-shot command replaces a session lost between statements (a flush the
            # server cut off, a restart) once, instead of failing what needs none of that.
            self._store.reopen = lambda: connect(url)
            self._store.sealer = self.sealer()
            self._store.guard = _resign_guard
            _settle(self._store, self.settings)
        return self._store

    def sealer(self) -> Sealer:
        """Return what signs each definition stored: the operator's key, or a note once.

        The key is $SCHEDCTL_SIGNING_KEY (or --sign-with), the principal $SCHEDCTL_SIGNER; the
        environment wins over the configuration file.
        """
        from pathlib import Path

        from schedctl.errors import ConfigError

        values = {**config.file_values(os.environ), **os.environ}
        key = self.sign_with or values.get(SIGNING_KEY_VAR, "").strip()
        if not key:

            def unsigned(spec: JobSpec, revision: int) -> Seal | None:
                if not self._said_unsigned:
                    self._said_unsigned = True
                    # Under --json stdout carries only the document.
                    stream = sys.stderr if "--json" in sys.argv[1:] else sys.stdout
                    stream.write(f"{UNSIGNED_NOTE} (set {SIGNING_KEY_VAR} to sign)\n")
                return None

            return unsigned
        signer = values.get(SIGNER_VAR, "").strip()
        if not signer or any(c.isspace() or c in ',"' for c in signer):
            raise ConfigError(
                f"a signing key is set but {SIGNER_VAR} is {'not set' if not signer else 'not a principal'}: "
                f"set it to your principal in the hosts' allowed-signers files "
                f"(e.g. {SIGNER_VAR}=alice@example.com)"
            )
        path = Path(key).expanduser()

        def seal(spec: JobSpec, revision: int) -> Seal | None:
            from schedctl import signing

            return signing.sign(signing.canonical(spec, revision), path, signer)

        return seal

    def settled_store(self) -> Repository:
        """Open the database, then also mark runs whose runner is gone as `lost`."""
        from schedctl.errors import PrivilegeError

        store = self.store()
        # A read-only role (`db grant --reader`) leaves that to the hosts.
        with contextlib.suppress(PrivilegeError):
            store.reconcile_lost(config.host_name(os.environ))
        return store

    def db_clock(self) -> Clock:
        """Return the database's clock (opening the database): stored times are judged by it."""
        return DatabaseClock(self.store())

    def default_timezone(self) -> str:
        """Return the host's default zone for new jobs."""
        return config.default_timezone(os.environ)


# The invocation's state, for the end of the command (entry.py) once its context is gone.
current: list[State] = []


def finish(code: int) -> int:
    """Warn of each malformed job the command left out; then its exit code is at least 78.

    One bad row does not stop a command that lists jobs, but the command did not do all it
    was asked: a script or a timer sees that in the exit status.
    """
    left_out = current[-1].left_out() if current else []
    if not left_out:
        return code
    from schedctl.cli.output import warn
    from schedctl.errors import ExitCode

    for e in left_out:
        warn(f"left out: {e}")
    return ExitCode.CONFIG if code == 0 else code


def state(ctx: typer.Context) -> State:
    """Return the State stored on the root context."""
    obj = ctx.find_root().obj
    assert isinstance(obj, State)
    return obj


def _resign_guard(job: Job) -> None:
    """Refuse to store again a job changed after signing (services.resign_guard)."""
    from schedctl import services, trust

    services.resign_guard(trust.host_trust(os.environ).allowed_signers)(job)


def _settle(store: Repository, settings: config.Settings) -> None:
    """Write results spooled by a `run` that lost the database."""
    from schedctl.db import spool

    spool_dir = settings.data_dir / "spool"
    if not spool.waiting(spool_dir):
        return
    from schedctl.cli.run import emit
    from schedctl.services import settle_spool

    settle_spool(store, spool_dir, emit)
