"""Per-invocation state shared by the commands: settings, clock, store."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import typer

from schedctl import config, datadir
from schedctl.clock import Clock, SystemClock

if TYPE_CHECKING:
    from schedctl.db.repo import Store


@dataclass
class State:
    """What the root callback resolved for this invocation."""

    db_flag: str | None = None
    debug: bool = False
    clock: Clock = field(default_factory=SystemClock)
    _settings: config.Settings | None = None
    _store: Store | None = None

    @property
    def settings(self) -> config.Settings:
        """Resolve settings on first use (so `--help` never touches the environment)."""
        if self._settings is None:
            self._settings = config.resolve(os.environ, self.db_flag)
            warning = config.db_flag_warning(self._settings)
            if warning:
                sys.stderr.write(f"schedctl: warning: {warning}\n")
        return self._settings

    def store(self) -> Store:
        """Open the store once, checking (or, for SQLite, creating) the schema."""
        if self._store is None:
            # Imported here so --help and --version never load SQLAlchemy.
            from schedctl.db.repo import Store

            datadir.check(self.settings.data_dir)  # before anything in it is opened
            self._store = Store.open(self.settings.database)
            _flush_spool(self.settings)
        return self._store

    def settled_store(self) -> Store:
        """Open the store after flushing the spool and reconciling dead runners."""
        store = self.store()
        _flush_spool(self.settings, reconcile=True)
        return store

    def default_timezone(self) -> str:
        """Return the host's default zone for new jobs."""
        return config.default_timezone(os.environ)


def state(ctx: typer.Context) -> State:
    """Return the State stored on the root context."""
    obj = ctx.find_root().obj
    assert isinstance(obj, State)
    return obj


def _flush_spool(settings: config.Settings, reconcile: bool = False) -> None:
    """Write results spooled by a `run` that lost the database (any command does this).

    With `reconcile`, also mark runs whose runner is gone as `lost` (history, locks).
    """
    from schedctl.db import spool

    spool_dir = settings.data_dir / "spool"
    waiting = spool.waiting(spool_dir)
    if not reconcile and not waiting:
        return
    from schedctl.cli.run import emit
    from schedctl.db.rundb import open_rundb
    from schedctl.services import settle_spool

    db = open_rundb(settings.database, SystemClock(), "schedctl")
    try:
        if waiting:
            settle_spool(db, spool_dir, emit)
        if reconcile:
            db.reconcile_lost(config.host_name(os.environ))
    finally:
        db.close()
