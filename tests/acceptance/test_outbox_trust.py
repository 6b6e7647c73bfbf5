"""The notifications outbox is not what decides where hosts deliver, nor what a mail says.

Whoever may write the outbox (a host's runner role, anyone with the SQLite file) could queue
an `exec:` target of their own, a mail address with a header after it, or a run whose host
name carries one; and a runner could delete alerts before they are sent. On a real
PostgreSQL, as the runner role, with the installed binary and a fake sendmail on PATH.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from cli_helpers import make_cli, ok
from test_roles import Roles, roles  # noqa: F401 (the fixture)

# What `exec:/bin/sh` would run from the document's job name, were the row delivered.
_FORGED = (
    "INSERT INTO notifications (job_id, job_name, event, target, state, attempts, created_at,"
    " next_attempt_at, slot) VALUES (%s, %s, 'missed', %s, 'pending', 0, now(), now(), now())"
)


def fake_sendmail(tmp_path: Path) -> Path:
    """A sendmail that keeps each message it is given, one file per message."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sendmail = bin_dir / "sendmail"
    sendmail.write_text(f'#!/bin/sh\ncat > "$(mktemp {tmp_path}/mail.XXXXXX)"\n')
    sendmail.chmod(0o755)
    return bin_dir


def mails(tmp_path: Path) -> list[list[str]]:
    """The header lines of every message the fake sendmail got."""
    found = []
    for message in sorted(tmp_path.glob("mail.*")):
        head = message.read_text().split("\n\n", 1)[0]
        found.append(head.split("\n"))
    return found


def forge(url: str, rows: list[tuple[object, ...]]) -> list[str | None]:
    """Insert each forged row as the URL's role; return each one's error (None: inserted)."""
    refused: list[str | None] = []
    with psycopg.connect(url, autocommit=True) as conn:
        for row in rows:
            try:
                conn.execute(_FORGED, row)
                refused.append(None)
            except psycopg.errors.InsufficientPrivilege as e:
                refused.append(str(e).splitlines()[0])
    return refused


def test_a_forged_outbox_row_is_never_delivered_and_mail_headers_stay_whole(
    roles: Roles,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    admin = roles.cli("admin")
    ok(admin("add", "watched", "-s", "0 0 1 1 *", "--notify", "mailto:ops@example.com",
             "--notify-on", "failure,missed", "--shell", "--", "exit 3"))  # fmt: skip
    evil = tmp_path / "evil.sh"
    evil.write_text(f"#!/bin/sh\ntouch {tmp_path}/evil.ran\n")
    evil.chmod(0o755)
    with psycopg.connect(roles.owner_url) as conn:
        found = conn.execute("SELECT id FROM jobs WHERE name = 'watched'").fetchone()
    assert found is not None
    job_id = found[0]
    shell_name = "x$(touch $MARK)"  # $MARK: set for the host below
    bcc = "mailto:ops@example.com\nBcc: victim@evil.example"
    rows: list[tuple[object, ...]] = [
        (None, shell_name, "exec:/bin/sh"),
        (job_id, shell_name, "exec:/bin/sh"),
        (job_id, "watched", f"exec:{evil}"),
        (job_id, "watched\nBcc: victim@evil.example", bcc),
        (job_id, "watched", "mailto:victim@evil.example"),
    ]

    # As the runner role (checked below); what it may not add, the owner adds: the owner
    # bypasses row security (and a SQLite file has none), so hosts check at delivery too.
    refused = forge(roles.urls["runner"], rows)
    assert forge(roles.owner_url, [r for r, e in zip(rows, refused, strict=True) if e]) == [
        None for e in refused if e
    ]

    # A run the runner records in SQL with a host name that would add a header to the mail.
    with psycopg.connect(roles.urls["runner"], autocommit=True) as conn:
        run = conn.execute(
            "INSERT INTO runs (job_id, job_name, trigger, attempt, status, host, claimed_at,"
            " output_bytes, output_truncated, schedctl_version) VALUES (%s, 'watched',"
            " 'manual', 1, 'running', %s, now(), 0, false, 'x') RETURNING id",
            (job_id, "h1\nBcc: victim@evil.example\nSubject: forged"),
        ).fetchone()
        assert run is not None
        conn.execute(
            "UPDATE runs SET status = 'failed', exit_code = 3, finished_at = now() WHERE id = %s",
            (run[0],),
        )

    host = roles.cli(
        "runner",
        SCHEDCTL_HOST="outbox-host",
        PATH=f"{fake_sendmail(tmp_path)}:/usr/bin:/bin",
        SCHEDCTL_NOTIFY_ATTEMPTS="1",
        MARK=str(tmp_path / "sh.ran"),
    )
    delivered = ok(host("notify"))
    assert not (tmp_path / "sh.ran").exists(), delivered.err
    assert not (tmp_path / "evil.ran").exists(), delivered.err

    # Only the real failure was mailed, to the job's own address, with its headers whole.
    got = mails(tmp_path)
    assert len(got) == 1, got
    head = got[0]
    assert head[0] == "To: ops@example.com", head
    assert not any(line.lower().startswith("bcc") for line in head), head
    assert [line for line in head if line.startswith("Subject:")] == [
        "Subject: schedctl: watched failed on h1 Bcc: victim@evil.example Subject: forged"
    ], head
    assert "X-Schedctl-Job: watched" in head, head

    with psycopg.connect(roles.owner_url) as conn:
        settled = conn.execute(
            "SELECT target, state, last_error FROM notifications WHERE run_id IS NULL ORDER BY id"
        ).fetchall()
    assert [(t, s) for t, s, _ in settled] == [(r[2], "failed") for r in rows], settled
    reasons = [e for _, _, e in settled]
    assert reasons[0] == "dropped: the job is gone, so its targets cannot be checked", reasons
    assert all(r == "dropped: job watched lists no such target (not delivered)"
               for r in reasons[1:]), reasons  # fmt: skip
    assert delivered.err.count("notify.dropped") == len(rows), delivered.err
    # Row security refused every one of them to the runner in the first place.
    assert all(e and "row-level security" in e for e in refused), refused


def test_a_forged_row_in_a_sqlite_outbox_is_not_delivered(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url, SCHEDCTL_NOTIFY_ATTEMPTS="1")
    ok(cli("add", "quiet", "-s", "0 0 1 1 *", "--", "/bin/true"))
    import sqlite3

    with sqlite3.connect(tmp_path / "shared.db") as conn:
        conn.execute(
            "INSERT INTO notifications (job_id, job_name, event, target, state, attempts,"
            " created_at, next_attempt_at) SELECT id, 'quiet', 'failure', 'exec:/bin/sh',"
            " 'pending', 0, strftime('%Y-%m-%d %H:%M:%f000', 'now'),"
            " strftime('%Y-%m-%d %H:%M:%f000', 'now') FROM jobs"
        )
    delivered = ok(cli("notify"))
    assert "lists no such target" in delivered.err
    with sqlite3.connect(tmp_path / "shared.db") as conn:
        assert conn.execute("SELECT state FROM notifications").fetchall() == [("failed",)]


def test_a_runner_deletes_settled_notifications_but_no_pending_one(
    roles: Roles,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    ok(roles.cli("admin")("add", "loud", "-s", "0 0 1 1 *", "--notify-on", "failure",
                          "--notify", "exec:/bin/false", "--shell", "--", "exit 1"))  # fmt: skip
    runner = roles.cli("runner", SCHEDCTL_HOST="tidy-host", SCHEDCTL_NOTIFY_ATTEMPTS="1",
                       SCHEDCTL_NOTIFY_BUDGET="0")  # fmt: skip
    assert runner("run", "loud", "--now").rc == 1
    assert runner("run", "loud", "--now").rc == 1
    with psycopg.connect(roles.owner_url, autocommit=True) as conn:
        ids = [i for (i,) in conn.execute("SELECT id FROM notifications ORDER BY id")]
        assert len(ids) == 2
        # One was tried and given up long ago; the other still waits.
        conn.execute(
            "UPDATE notifications SET state = 'failed', done_at = now(),"
            " created_at = now() - interval '40 days' WHERE id = %s",
            (ids[0],),
        )
    with psycopg.connect(roles.urls["runner"], autocommit=True) as conn:
        gone = conn.execute("DELETE FROM notifications WHERE state = 'pending' RETURNING id")
        assert gone.fetchall() == []
        conn.execute("UPDATE notifications SET next_attempt_at = now() + interval '1 hour'")
    ok(runner("notify"))  # the delivery step's tidying: the settled row only
    with psycopg.connect(roles.owner_url) as conn:
        left = conn.execute("SELECT id, state FROM notifications ORDER BY id").fetchall()
    assert left == [(ids[1], "pending")]


@pytest.mark.parametrize("kind", ["admin", "reader"])
def test_db_grant_refuses_to_change_a_roles_kind_unless_told(
    roles: Roles,  # noqa: F811 (the fixture imported above)
    kind: str,
) -> None:
    from cli_helpers import one_line_error
    from test_roles import grants_state

    owner = roles.owner()
    host_role = roles.names["runner"]
    before = grants_state(roles.owner_url)
    one_line_error(
        owner("db", "grant", f"--{kind}", host_role),
        2,
        f"the role '{host_role}' is granted as runner, and a role is taken for one kind only: "
        f"give --{kind} another role, or add --rekind",
    )
    assert grants_state(roles.owner_url) == before
    changed = ok(owner("db", "grant", f"--{kind}", host_role, "--rekind"))
    assert f"role {host_role} changed kind: runner before, {kind} now" in changed.out
    with psycopg.connect(roles.owner_url) as conn:
        row = conn.execute(
            "SELECT has_table_privilege(%s, 'runs', 'INSERT'),"
            " has_table_privilege(%s, 'jobs', 'INSERT')",
            (host_role, host_role),
        ).fetchone()
    assert row == (kind == "admin", kind == "admin")
    # Granting it the kind it has now is no change of kind.
    assert "changed kind" not in ok(owner("db", "grant", f"--{kind}", host_role)).out
