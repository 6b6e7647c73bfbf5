"""`schedctl notify`: the minutely delivery step of the notification outbox."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from schedctl import config
from schedctl.cli.context import State, state
from schedctl.cli.output import done, print_json

# What `sync` spends delivering each minute at most: its own work must not wait behind a
# slow receiver (the notify timer, if enabled, takes the rest).
SYNC_BUDGET = 20.0


def step_after_sync(st: State) -> None:
    """Run the delivery step within SYNC_BUDGET; a failure is a warning, never sync's error."""
    from schedctl import notify as outbox
    from schedctl import redact
    from schedctl.cli.run import emit

    try:
        settings = outbox.settings_from({**config.file_values(os.environ), **os.environ})
        host = config.host_name(os.environ)
        outbox.step(st.store(), st.db_clock(), settings, emit, host, budget=SYNC_BUDGET)
    except Exception as e:
        emit("notify.step_failed", level="warning", error=redact.describe(e))


def notify(
    ctx: typer.Context,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Deliver due notifications and report missed slots; run every minute by a timer.

    Sends what `run` could not within its budget, retries failed deliveries with backoff
    ($SCHEDCTL_NOTIFY_BACKOFF, doubled each time) and gives one up after
    $SCHEDCTL_NOTIFY_ATTEMPTS attempts. Any number of hosts may run it at once: each
    notification is claimed by one of them and sent once.

    Example: schedctl notify
    """
    from schedctl import notify as outbox
    from schedctl.cli.run import emit

    st = state(ctx)
    settings = outbox.settings_from({**config.file_values(os.environ), **os.environ})
    host = config.host_name(os.environ)
    report = outbox.step(st.settled_store(), st.db_clock(), settings, emit, host)
    o = report.outcome
    if json_:
        print_json({"missed_slots": report.missed, "sent": o.sent, "retrying": o.retrying,
                    "gave_up": o.gave_up})  # fmt: skip
    elif report.missed or o.sent or o.retrying or o.gave_up:
        done(
            f"sent {o.sent}, retrying {o.retrying}, gave up {o.gave_up}; "
            f"missed slots found {report.missed}"
        )
