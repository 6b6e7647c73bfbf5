"""Notifications: build the document a run or missed slot gives, and deliver the outbox.

Triggers on `runs` put a row in the outbox (the `notifications` table) in the same
transaction as the run's result; `deliver` claims due rows, sends each to its target and
records the outcome. `schedctl run` calls it for its own runs within a small budget; the
minutely `schedctl notify` (timer, `sync`, the daemon) delivers the rest, retries with
backoff and adds missed slots. Transports and JSON are imported only when something is sent.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from schedctl.models import NOTIFY_EVENTS, Job, iso, mask_target

if TYPE_CHECKING:
    from schedctl.clock import Clock
    from schedctl.db.repository import Repository

TAIL_BYTES = 4096  # of the run's output, in every document
# Missed slots are looked for this far back (and never before the job's last edit).
MISSED_WINDOW = timedelta(days=1)
# Sent and abandoned notifications are deleted this long after they were created.
KEEP_DONE = timedelta(days=30)
CLAIM_BATCH = 10


class NotifySettings(NamedTuple):
    """How deliveries are made; each from $SCHEDCTL_NOTIFY_* or the configuration file."""

    timeout: float = 10.0  # connect and reply, per attempt (TIMEOUT)
    backoff: float = 30.0  # before the first retry, doubled each time (BACKOFF)
    backoff_max: float = 3600.0  # the longest wait between attempts (BACKOFF_MAX)
    attempts: int = 10  # then the notification is given up, recorded as failed (ATTEMPTS)
    budget: float = 5.0  # what `run` may spend delivering after the job (BUDGET)
    # Set on hosts that require signed definitions (trust.py): an exec: target runs only when
    # the job's definition, verified against this allowed-signers file, names it.
    allowed_signers: str = ""

    @property
    def lease(self) -> float:
        """Return how long a claim holds: longer than any attempt can take (twice the timeout)."""
        return 3 * self.timeout + 30.0

    def delay(self, attempts: int) -> float:
        """Return the wait before attempt `attempts` + 1."""
        return float(min(self.backoff * 2 ** max(attempts - 1, 0), self.backoff_max))


_NUMBERS = {
    "timeout": ("SCHEDCTL_NOTIFY_TIMEOUT", 0.1),
    "backoff": ("SCHEDCTL_NOTIFY_BACKOFF", 0.0),
    "backoff_max": ("SCHEDCTL_NOTIFY_BACKOFF_MAX", 0.0),
    "attempts": ("SCHEDCTL_NOTIFY_ATTEMPTS", 1),
    "budget": ("SCHEDCTL_NOTIFY_BUDGET", 0.0),
}


def settings_from(values: Mapping[str, str]) -> NotifySettings:
    """Read the delivery settings from `values` (environment over configuration file)."""
    from schedctl.errors import ConfigError

    found: dict[str, Any] = {}
    for key, (var, least) in _NUMBERS.items():
        text = values.get(var)
        if not text:
            continue
        import math

        try:
            number: float | None = int(text) if isinstance(least, int) else float(text)
        except ValueError:
            number = None
        if number is None or not math.isfinite(number) or number < least:
            raise ConfigError(f"{var}={text!r} is not a number of at least {least}: fix it")
        found[key] = number
    if values.get("SCHEDCTL_REQUIRE_SIGNATURE", "").strip().lower() in ("1", "yes", "true"):
        found["allowed_signers"] = values.get("SCHEDCTL_ALLOWED_SIGNERS", "").strip() or "-"
    return NotifySettings(**found)


class Dropped(Exception):
    """A notification that must never be delivered; the message says why, for `last_error`."""


def _vet(store: Repository, row: Mapping[str, Any], signers: str) -> Job:
    """Return the job a claimed row is for, as it is now; raise Dropped unless it lists the target.

    The outbox is not the job's definition: whoever can write it could otherwise choose what
    a host runs (exec:) or mails. Only a target the job's current definition lists is used,
    and on hosts that require signatures only one its verified definition lists.
    """
    from pathlib import Path

    from schedctl.errors import MalformedJobError, ValidationError
    from schedctl.trust import HostTrust, signature_refusal
    from schedctl.validate import check_target

    target = str(row["target"])
    try:
        job = None if row["job_id"] is None else store.job_by_id(int(row["job_id"]))
    except MalformedJobError as e:  # its targets cannot be read: nothing is sent for it
        raise Dropped(f"dropped: {e}") from None
    if job is None:
        raise Dropped("dropped: the job is gone, so its targets cannot be checked")
    if target not in job.spec.notify:
        raise Dropped(f"dropped: job {job.name} lists no such target (not delivered)")
    try:
        check_target(target)
    except ValidationError:
        raise Dropped(f"dropped: job {job.name} lists an unusable target") from None
    if signers and target.startswith("exec:"):
        refusal = signature_refusal(job, HostTrust(True, Path(signers)))
        if refusal is not None:
            raise Dropped(f"refused: this host requires signed definitions and {refusal.reason}")
    return job


class Outcome(NamedTuple):
    """What one `deliver` did."""

    sent: int = 0
    retrying: int = 0
    gave_up: int = 0


# -- the document -------------------------------------------------------------------------


def last_bytes(text: str | None, limit: int = TAIL_BYTES) -> str:
    """Return the end of `text` that fits `limit` bytes of UTF-8, no character cut in two."""
    data = (text or "").encode("utf-8", "replace")
    return data[-limit:].decode("utf-8", "ignore") if len(data) > limit else (text or "")


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    return f", {value:.2f} s" if value < 10 else f", {value:.1f} s"


def summary(doc: Mapping[str, Any]) -> str:
    """Return the one-paragraph text chat tools show as is."""
    job, slot = doc["job"], doc["slot"]
    where = f" on {doc['host']}" if doc.get("host") else ""
    at = f" (slot {slot})" if slot else " (manual run)"
    if doc["event"] == "missed":
        return f"schedctl: job {job} missed its slot {slot}: no host ran it"
    if doc["event"] == "recovery":
        return (
            f"schedctl: job {job} recovered: run {doc['run_id']} succeeded{where}{at}"
            f"{_seconds(doc['duration_seconds'])}"
        )
    how = doc["status"]
    if doc.get("exit_code") is not None:
        how += f", exit code {doc['exit_code']}"
    if doc.get("signal"):
        how += f", signal {doc['signal']}"
    text = (
        f"schedctl: job {job} failed{where}{at}: run {doc['run_id']} attempt "
        f"{doc['attempt']} {how}{_seconds(doc['duration_seconds'])}"
    )
    tail = (doc.get("output_tail") or "").strip()
    if tail:
        text += "\n" + "\n".join(tail.splitlines()[-10:])
    return text


def document(row: Mapping[str, Any]) -> dict[str, Any]:
    """Return the JSON document of one claimed outbox row (with its run's fields)."""
    missed = row["event"] == "missed"
    doc: dict[str, Any] = {
        "event": row["event"],
        "job": row["job_name"],
        "run_id": row["run_id"],
        "slot": iso(row["slot"]),
        "status": "missed" if missed else row["status"],
        "exit_code": row["exit_code"],
        "signal": row["signal"],
        "host": row["host"],
        "duration_seconds": row["duration_seconds"],
        "attempt": row["attempt"],
        "trigger": row["trigger"],
        "started_at": iso(row["started_at"]),
        "finished_at": iso(row["finished_at"]),
        "output_tail": last_bytes(row["output_tail"]),
        "notification_id": row["id"],
    }
    doc["text"] = summary(doc)
    return doc


# -- transports ---------------------------------------------------------------------------


class DeliveryError(Exception):
    """One attempt failed; the message names the target masked, never its secret."""


def _post_within(url: str, body: bytes, timeout: float, total: float, notification_id: int) -> None:
    """POST, and give up once `total` seconds have passed, however the receiver dribbles.

    The socket's timeout bounds each wait, not the whole exchange: a receiver sending a byte
    now and then would hold a plain request for ever.
    """
    import threading

    failure: list[BaseException] = []
    finished = threading.Event()

    def post() -> None:
        try:
            _post(url, body, timeout, notification_id)
        except BaseException as e:  # handed to the caller's thread
            failure.append(e)
        finally:
            finished.set()

    threading.Thread(target=post, daemon=True, name="schedctl-webhook").start()
    if not finished.wait(total):
        raise DeliveryError(f"no complete reply within {total:g} s")
    if failure:
        raise failure[0]


def _post(url: str, body: bytes, timeout: float, notification_id: int) -> None:
    import http.client
    from urllib.parse import urlsplit

    from schedctl import __version__

    parts = urlsplit(url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname or "", parts.port, timeout=timeout)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request(
            "POST", path, body=body,
            headers={"Content-Type": "application/json", "User-Agent": f"schedctl/{__version__}",
                     "Idempotency-Key": f"schedctl-notification-{notification_id}"},
        )  # fmt: skip
        reply = conn.getresponse()
        reply.read(65536)
    except TimeoutError:
        raise DeliveryError(f"no reply within {timeout:g} s") from None
    except OSError as e:
        raise DeliveryError(e.strerror or type(e).__name__) from None
    except http.client.HTTPException as e:
        raise DeliveryError(f"bad HTTP reply ({type(e).__name__})") from None
    finally:
        conn.close()
    if not 200 <= reply.status < 300:
        raise DeliveryError(f"HTTP {reply.status} {reply.reason}".strip())


def _command(argv: list[str], stdin: bytes, timeout: float) -> None:
    import signal
    import subprocess

    from schedctl.services import inherited_env

    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=inherited_env(os.environ), start_new_session=True,
        )  # fmt: skip
    except OSError as e:
        raise DeliveryError(f"cannot run {argv[0]}: {e.strerror}") from None
    try:
        _, stderr = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        # The whole group: a child left holding the pipes would keep communicate() waiting.
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=1)
        raise DeliveryError(f"{argv[0]} did not finish within {timeout:g} s") from None
    if proc.returncode != 0:
        said = (stderr.decode("utf-8", "replace").strip().splitlines() or [""])[-1][:200]
        raise DeliveryError(f"{argv[0]} exited {proc.returncode}" + (f": {said}" if said else ""))


# Anything that would end a header line or hide in one: CR, LF, other controls, separators.
_NOT_IN_HEADER = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u0085]")


def header_value(value: object) -> str:
    """Return `value` as one header line's text: every control character made a space.

    A newline in a host or job name read from the database would otherwise add headers
    (Bcc:, a second Subject:) to the mail.
    """
    return _NOT_IN_HEADER.sub(" ", str(value))


def _mail(address: str, doc: Mapping[str, Any], host: str) -> bytes:
    subject = {"failure": "failed", "recovery": "recovered", "missed": "missed a slot"}
    event = str(doc["event"])
    lines = [
        f"To: {header_value(address)}",
        header_value(
            f"Subject: schedctl: {doc['job']} {subject.get(event, event)}"
            + (f" on {doc['host']}" if doc.get("host") else "")
        ),
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "Auto-Submitted: auto-generated",
        f"X-Schedctl-Job: {header_value(doc['job'])}",
        f"X-Schedctl-Event: {header_value(event)}",
        f"X-Schedctl-Host: {header_value(host)}",
        "",
        doc["text"],
        "",
    ]
    if doc.get("output_tail") and doc["event"] != "missed":
        lines += ["Output (last 4 KiB):", "", doc["output_tail"], ""]
    return "\n".join(lines).encode("utf-8", "replace")


def sendmail_path() -> str | None:
    """Return the sendmail to use: the first on $PATH, else where Debian puts it."""
    import shutil

    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/usr/lib"
    return shutil.which("sendmail", path=path)


def send(
    target: str, doc: Mapping[str, Any], timeout: float, host: str, total: float | None = None
) -> None:
    """Make one attempt to deliver `doc` to `target`; raise DeliveryError on failure.

    `timeout` bounds each wait for the receiver; `total` (default twice that) the attempt.
    """
    total = 2 * timeout if total is None else total
    timeout = min(timeout, total)
    import json

    kind, _, rest = target.partition(":")
    body = json.dumps(doc, ensure_ascii=False).encode("utf-8", "replace")
    if kind == "webhook":
        _post_within(rest, body, timeout, total, int(doc["notification_id"]))
    elif kind == "mailto":
        sendmail = sendmail_path()
        if sendmail is None:
            raise DeliveryError("no sendmail on this host: install an MTA (e.g. dma, postfix)")
        # As cron's MAILTO: the recipient on the command line, the message on stdin.
        _command([sendmail, "-i", "--", rest], _mail(rest, doc, host), total)
    elif kind == "exec":
        _command([rest], body, total)
    else:
        raise DeliveryError("unknown kind of target")


# -- the delivery step --------------------------------------------------------------------


def deliver(
    store: Repository,
    settings: NotifySettings,
    emit: Callable[..., None],
    owner: str,
    host: str,
    run_ids: list[int] | None = None,
    budget: float | None = None,
    monotonic: Callable[[], float] | None = None,
) -> Outcome:
    """Claim and send due notifications (of `run_ids` only, if given) until none is left.

    With a `budget` (seconds), claim nothing once it is spent and cut each attempt short to
    what remains: the caller never waits much longer than that.
    """
    import time

    clock = monotonic or time.monotonic
    end = None if budget is None else clock() + budget
    sent = retrying = gave_up = 0
    seen: set[int] = set()
    while True:
        left = None if end is None else end - clock()
        if left is not None and left <= 0.05:
            break
        limit = 1 if end is not None else CLAIM_BATCH
        rows = store.claim_notifications(owner, settings.lease, limit, run_ids)
        if not rows:
            break
        for row in rows:
            nid = int(row["id"])
            if nid in seen:  # due again at once (no backoff): left to the next step
                for other in rows:
                    store.notification_release(int(other["id"]), owner)
                return Outcome(sent, retrying, gave_up)
            seen.add(nid)
            total = 2 * settings.timeout
            if end is not None:
                total = max(0.1, min(total, end - clock()))
            target = str(row["target"])
            fields = {"job": row["job_name"], "on": row["event"], "run_id": row["run_id"],
                      "target": mask_target(target), "attempt": row["attempts"]}  # fmt: skip
            try:
                job = _vet(store, row, settings.allowed_signers)
            except Dropped as e:
                # Settled at once: trying again would deliver it no more than now.
                store.notification_gave_up(nid, owner, str(e))
                gave_up += 1
                emit("notify.dropped", level="error", **fields, error=str(e))
                continue
            fields["job"] = job.name
            try:
                # The job's name as it is now: the row's copy is only what its writer said.
                send(target, document({**row, "job_name": job.name}), settings.timeout, host,
                     total)  # fmt: skip
            except DeliveryError as e:
                error = str(e)
                if int(row["attempts"]) >= settings.attempts:
                    store.notification_gave_up(nid, owner, error)
                    gave_up += 1
                    emit("notify.gave_up", level="error", **fields, error=error)
                else:
                    delay = settings.delay(int(row["attempts"]))
                    store.notification_retry(nid, owner, delay, error)
                    retrying += 1
                    emit("notify.retry", level="warning", **fields, error=error,
                         retry_in_seconds=round(delay, 1))  # fmt: skip
                continue
            if store.notification_sent(nid, owner):
                sent += 1
                emit("notify.sent", **fields)
            else:  # held past the lease: another deliverer may send it again
                emit("notify.lease_expired", level="warning", **fields)
    return Outcome(sent, retrying, gave_up)


def find_missed(store: Repository, clock: Clock, jobs: list[Job] | None = None) -> int:
    """Add a notification for each missed slot of each job that wants them; return how many.

    Every host may look: the outbox's unique index lets only the first add a given slot.
    """
    from schedctl.operate import missed_since

    now = clock.now()
    wanting = [
        j for j in (store.list_jobs() if jobs is None else jobs)
        if j.spec.notify and "missed" in j.spec.notify_on
    ]  # fmt: skip
    if not wanting:
        return 0
    # Not before the job's last edit: adding a target does not report the days before it.
    starts = {j.id: max(now - MISSED_WINDOW, j.updated_at) for j in wanting}
    added = 0
    for job, slots in missed_since(store, wanting, starts, now):
        for slot in slots:
            for target in job.spec.notify:
                added += store.insert_missed(job, slot, target, now)
    return added


class StepReport(NamedTuple):
    """What one `schedctl notify` did."""

    missed: int
    outcome: Outcome


def step(
    store: Repository,
    clock: Clock,
    settings: NotifySettings,
    emit: Callable[..., None],
    host: str,
    budget: float | None = None,
) -> StepReport:
    """Run the minutely delivery step: find missed slots, deliver what is due, tidy up.

    With a `budget`, deliver for about that many seconds and leave the rest to the next step.
    """
    missed = find_missed(store, clock)
    if missed:
        emit("notify.missed", count=missed)
    owner = f"{host}:{os.getpid()}"
    outcome = deliver(store, settings, emit, owner, host, budget=budget)
    store.delete_old_notifications(clock.now() - KEEP_DONE)
    return StepReport(missed, outcome)


__all__ = ["NOTIFY_EVENTS", "NotifySettings", "deliver", "document", "step"]
