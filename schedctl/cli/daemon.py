"""`schedctl daemon`: the foreground scheduler for containers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Annotated

import typer

from schedctl import __version__, config, log, operate, redact
from schedctl.cli.context import state
from schedctl.config import URL_VAR
from schedctl.daemon import Daemon, Hooks, health_server
from schedctl.durations import parse_duration
from schedctl.errors import ConfigError, ValidationError
from schedctl.models import Job


def daemon(
    ctx: typer.Context,
    tag: Annotated[
        str | None, typer.Option("--tag", "-t", help="Only schedule jobs with this tag.")
    ] = None,
    health_port: Annotated[
        int | None, typer.Option(help="Serve GET /health on this TCP port (liveness probes).")
    ] = None,
    stop_timeout: Annotated[
        str, typer.Option(help="On SIGTERM, wait this long for running jobs before stopping them.")
    ] = "25s",
    refresh: Annotated[str, typer.Option(help="Re-read job definitions this often.")] = "5s",
) -> None:
    """Run due slots of the enabled jobs placed on this host, with neither systemd nor cron.

    Several replicas may run: each slot still runs once. Example: schedctl daemon --health-port 8080
    """
    if health_port is not None and not 1 <= health_port <= 65535:
        raise ValidationError(f"--health-port {health_port} is not a TCP port: give 1-65535")
    # Jobs run as this same user in a container; the database URL is in this process.
    redact.hide_from_same_user()
    # Settings its runs would refuse are refused here first, before anything is scheduled.
    host, labels = config.host_name(os.environ), config.host_labels(os.environ)
    config.heartbeat_seconds(os.environ)
    st = state(ctx)
    from schedctl.db.connector import connect

    store = st.store()
    # The daemon outlives database restarts: a lost session is replaced at the next statement.
    store.reopen = lambda: connect(st.settings.database, "schedctl daemon")
    env = dict(os.environ)
    if st.settings.source == "--db":
        # A --db given to the daemon must reach its runs too; run never hands it to the job.
        # From the environment or a config file, the runs find it themselves.
        env[URL_VAR] = st.settings.database.raw
    argv = [sys.executable, "-m", "schedctl", "run", "--trigger", "daemon"]
    cfg = log.config()
    if not os.environ.get(log.LEVEL_VAR):
        # A daemon's log is the record of what ran (a container's log): info by default
        # whatever stderr is, for it and for the runs it starts, which write to the same log.
        cfg = cfg._replace(level="info")
        env[log.LEVEL_VAR] = "info"
    emit = log.structlog_emitter(cfg)

    def spawn(job: Job) -> subprocess.Popen[bytes]:
        # Own session: a Ctrl-C meant for the daemon must not hit jobs it is waiting for.
        return subprocess.Popen([*argv, job.name], env=env, start_new_session=True)

    def spawn_step() -> subprocess.Popen[bytes]:
        # A child of its own: a slow receiver never holds up the scheduling loop.
        step = [sys.executable, "-m", "schedctl", "notify"]
        return subprocess.Popen(step, env=env, start_new_session=True)

    said: set[str] = set()

    def load_jobs() -> list[Job]:
        jobs = store.list_jobs()
        for name, e in store.malformed.items():
            if name not in said:  # once per job: the loop reloads every --refresh
                said.add(name)
                emit("job.malformed", level="error", job=name, error=str(e))
        return jobs

    hooks = Hooks(
        load_jobs=load_jobs,
        db_now=store.now,
        ran=lambda pairs: operate.ran_slots(store, pairs),
        spawn=spawn,
        emit=emit,
        clock=st.clock,
        spawn_step=spawn_step,
        labels=labels,
        register=lambda: store.register_host(host, labels, __version__, "daemon", synced=True),
    )
    every = parse_duration(refresh, what="--refresh")
    if every < 1:
        raise ValidationError("--refresh must be at least 1s")
    loop = Daemon(
        hooks,
        tag=tag,
        refresh_seconds=float(every),
        stop_timeout=float(parse_duration(stop_timeout, what="--stop-timeout")),
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: loop.stop())
    server = None
    if health_port is not None:
        try:
            server = health_server(loop, health_port)
        except OSError as e:
            raise ConfigError(
                f"cannot serve /health on port {health_port}: {e.strerror}; pick a free port"
            ) from None
    try:
        code = loop.run()
    finally:
        if server is not None:
            server.shutdown()
    raise typer.Exit(code)
