"""A real Debian cron (in a throwaway root, its clock set by libfaketime) fires the synced file."""

from __future__ import annotations

import os
import pwd
import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cli_helpers import BIN, Cli, make_cli, ok, run_rows, store_as_older_versions_did
from pgserver import PgServer
from sandbox import FAKETIME_LIB, Sandbox, binds, sandbox_files, socket_url

from schedctl.config import default_timezone, parse_database_url
from schedctl.db.schema import make_engine

pytestmark = pytest.mark.postgres
PROBE = Path(__file__).resolve().parents[1] / "secret_probe.py"


def test_synced_cron_d_file_fires_at_the_expected_minute_only(
    pg: PgServer, pg_url: str, tmp_path: Path
) -> None:
    if not FAKETIME_LIB.exists():
        pytest.skip("libfaketime is not installed (apt-get install libfaketime)")
    zone = default_timezone({})  # the zone cron runs in, inside the sandbox as here
    cli: Cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url, TZ=zone)
    ok(cli("db", "upgrade"))
    ok(cli("add", "weekday9", "-s", "0 9 * * 1-5", "--tz", zone, "--", "/bin/echo", "50% fired"))
    # Negative controls: the wrong weekday, and the next minute (not reached while we watch).
    ok(cli("add", "saturday9", "-s", "0 9 * * 6", "--tz", zone, "--", "/bin/true"))
    ok(cli("add", "weekday901", "-s", "1 9 * * 1-5", "--tz", zone, "--", "/bin/true"))
    # Runs see the real clock, so weekday9's run serves its latest real 09:00 slot as a late
    # (catch-up) run: let the jobs have been defined a month ago.
    engine = make_engine(parse_database_url(pg_url))
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE jobs SET created_at = created_at - interval '30 days'"))
    engine.dispose()

    # 2026-11-23 is a Monday; cron's clock starts 8 s before 09:00.
    box = Sandbox(
        "cron1", "cron", pg.sockdir, sandbox_files(pg, pg_url), binds(),
        faketime_at="2026-11-23 08:59:52",
    )  # fmt: skip
    try:
        time.sleep(1.2)  # cron ignores a file written in the second it loaded its tables
        out = box.exec(str(BIN), "sync", "crontab", "--schedctl", str(BIN)).stdout
        assert "synced: 1 written" in out, out
        cron_d = box.path("/etc/cron.d/schedctl")
        assert cron_d.stat().st_mode & 0o777 == 0o644
        text = cron_d.read_text()
        assert text.endswith("# END schedctl\n") and "0 9 * * 1-5 root PATH=" in text
        assert "50\\% fired" not in text  # the command lives in the database, not the line
        log = box.path("/var/log/cron-sandbox.log")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if log.exists() and "weekday9" in log.read_text(errors="replace"):
                break
            time.sleep(0.5)
        time.sleep(3)  # let the run finish and any wrong line have its chance too
        cron_log = log.read_text(errors="replace")
    finally:
        box.close()
    commands = [ln for ln in cron_log.splitlines() if "CMD (" in ln]
    fired = [c for c in commands if "--trigger cron weekday9" in c]
    assert len(fired) == 1, cron_log

    # Syslog stamps are real time: cron started at fake 08:59:52, so 09:00:01 is 9 s later.
    def stamp(line: str) -> datetime:
        return datetime.strptime(line.split(">", 1)[1][:15], "%b %d %H:%M:%S").replace(tzinfo=UTC)

    started = stamp(cron_log.splitlines()[0])
    assert 7 <= (stamp(fired[0]) - started).total_seconds() <= 12, cron_log
    assert not any("saturday9" in c or "weekday901" in c for c in commands), commands
    rows = run_rows(pg_url, "weekday9")
    assert [(r["trigger"], r["status"], r["host"]) for r in rows] == [
        ("cron", "succeeded", "cron1")
    ]
    slot = rows[0]["slot"].astimezone(UTC)
    assert slot < datetime.now(UTC) and slot > datetime.now(UTC) - timedelta(days=4)
    assert run_rows(pg_url, "saturday9") == [] and run_rows(pg_url, "weekday901") == []


def test_a_job_cron_would_reject_never_silences_the_others(
    pg: PgServer, pg_url: str, tmp_path: Path
) -> None:
    # Debian cron ignores a whole /etc/cron.d file for one line it cannot parse (fullwidth
    # digits, which an older schedctl accepted) or whose user does not exist. Sync refuses the
    # first, naming the job, and leaves the second out; the healthy job fires all along.
    if not FAKETIME_LIB.exists():
        pytest.skip("libfaketime is not installed (apt-get install libfaketime)")
    with pytest.raises(KeyError):
        pwd.getpwnam("ghostuser")
    zone = default_timezone({})
    cli: Cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url, TZ=zone)
    ok(cli("db", "upgrade"))
    ok(cli("add", "healthy", "-s", "0 9 * * 1-5", "--tz", zone, "--", "/bin/true"))
    ok(cli("add", "ghost", "-s", "0 9 * * 1-5", "--tz", zone, "--user", "ghostuser", "--", "true"))
    ok(cli("add", "bad", "-s", "@hourly", "--tz", zone, "--", "/bin/true"))
    store_as_older_versions_did(pg_url, "bad", schedule="\uff13 \uff14 * * *")
    engine = make_engine(parse_database_url(pg_url))
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE jobs SET created_at = created_at - interval '30 days'"))
    engine.dispose()

    box = Sandbox(
        "cron2", "cron", pg.sockdir, sandbox_files(pg, pg_url), binds(),
        faketime_at="2026-11-23 08:59:47",
    )  # fmt: skip
    try:
        time.sleep(1.2)
        refused = box.exec(str(BIN), "sync", "crontab", "--schedctl", str(BIN), check=False)
        assert refused.returncode == 78, refused
        assert refused.stderr.startswith("schedctl: error: job bad cannot be rendered: bad cron")
        assert len(refused.stderr.splitlines()) == 1, refused.stderr
        assert not box.path("/etc/cron.d/schedctl").exists()  # nothing written
        ok(cli("disable", "bad"))
        synced = box.exec(str(BIN), "sync", "crontab", "--schedctl", str(BIN))
        assert "synced: 1 written" in synced.stdout, synced
        assert "note: job ghost runs as ghostuser, who does not exist" in synced.stderr
        text = box.path("/etc/cron.d/schedctl").read_text()
        assert "--trigger cron healthy" in text and "ghostuser" not in text
        log = box.path("/var/log/cron-sandbox.log")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if log.exists() and "--trigger cron healthy" in log.read_text(errors="replace"):
                break
            time.sleep(0.5)
        time.sleep(2)
        cron_log = log.read_text(errors="replace")
    finally:
        box.close()
    assert "ignored" not in cron_log and "bad username" not in cron_log, cron_log
    fired = [ln for ln in cron_log.splitlines() if "CMD (" in ln and "cron healthy" in ln]
    assert len(fired) == 1, cron_log
    assert [r["status"] for r in run_rows(pg_url, "healthy")] == ["succeeded"]


def test_cron_user_job_cannot_read_the_database_password(
    pg: PgServer, pg_url: str, tmp_path: Path
) -> None:
    """The synced line starts schedctl as root; the job runs as nobody and finds no password."""
    if not FAKETIME_LIB.exists():
        pytest.skip("libfaketime is not installed (apt-get install libfaketime)")
    zone = default_timezone({})
    cli: Cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url, TZ=zone)
    ok(cli("db", "upgrade"))
    ok(cli("add", "peek", "-s", "* * * * *", "--tz", zone, "--user", "nobody", "--",
           "/usr/bin/python3", "/usr/local/lib/secret_probe.py"))  # fmt: skip
    secret = "Sc" + secrets.token_hex(12)
    # The socket trusts, so the password is never used; it is in the 0600 env file only.
    box_url = socket_url(pg, pg_url).replace(f"{pg.user}@", f"{pg.user}:{secret}@", 1)
    files: dict[str, str | tuple[str, int]] = {
        "etc/schedctl/schedctl.env": (f"SCHEDCTL_DATABASE_URL={box_url}\n", 0o600),
        "usr/local/lib/secret_probe.py": (PROBE.read_text(), 0o644),
    }
    # Cron's clock starts 8 s before a minute: the line fires once while we watch.
    box = Sandbox(
        "cronsecret", "cron", pg.sockdir, files, binds(), faketime_at="2026-11-23 08:59:52"
    )
    try:
        time.sleep(1.2)  # cron ignores a file written in the second it loaded its tables
        ok_sync = box.exec(str(BIN), "sync", "crontab", "--schedctl", str(BIN)).stdout
        assert "synced: 1 written" in ok_sync, ok_sync
        text = box.path("/etc/cron.d/schedctl").read_text()
        assert "* * * * * root PATH=" in text and " nobody PATH=" not in text
        deadline = time.monotonic() + 40
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not any(r["finished_at"] for r in rows):
            time.sleep(0.5)
            rows = run_rows(pg_url, "peek")
        cron_log = box.path("/var/log/cron-sandbox.log").read_text(errors="replace")
    finally:
        box.close()
    assert rows and rows[0]["status"] == "succeeded", (rows, cron_log)
    output = rows[0]["output_tail"]
    assert "probe done" in output and secret not in output and secret not in cron_log
    nobody = pwd.getpwnam("nobody")
    assert f"uid={nobody.pw_uid} gid={nobody.pw_gid} groups=[{nobody.pw_gid}]" in output
    assert "parent environ: 'unreadable (Permission denied)'" in output
    assert "parent memory: unreadable (Permission denied)" in output
    assert "config file: 'unreadable (Permission denied)'" in output


SENDMAIL_STUB = (
    '#!/bin/sh\n# What cron would mail: one file per message.\ncat > "/var/log/mail.$$"\n'
)


def test_cron_mails_a_failing_run_and_not_a_succeeding_one(
    pg: PgServer, pg_url: str, tmp_path: Path
) -> None:
    """A run that went well prints nothing, so cron sends no mail; a failure sends one."""
    if not FAKETIME_LIB.exists():
        pytest.skip("libfaketime is not installed (apt-get install libfaketime)")
    zone = default_timezone({})
    cli: Cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url, TZ=zone)
    ok(cli("db", "upgrade"))
    # Every minute: the run serves the real clock's latest minute, on time (runs see the real
    # clock), so nothing about it is late.
    ok(cli("add", "fine", "-s", "* * * * *", "--tz", zone, "--", "/bin/true"))
    ok(cli("add", "broken", "-s", "* * * * *", "--tz", zone, "--", "/bin/sh", "-c", "exit 3"))
    files = {**sandbox_files(pg, pg_url), "usr/sbin/sendmail": (SENDMAIL_STUB, 0o755)}
    box = Sandbox("cronmail", "cron", pg.sockdir, files, binds(), faketime_at="2026-11-23 08:59:50")
    try:
        time.sleep(1.2)  # cron ignores a file written in the second it loaded its tables
        out = box.exec(str(BIN), "sync", "crontab", "--schedctl", str(BIN)).stdout
        assert "synced: 1 written" in out, out
        text = box.path("/etc/cron.d/schedctl").read_text()
        assert "--trigger cron fine" in text and "--trigger cron broken" in text
        # The same runs with their stderr kept, as a person would look at it.
        ok(cli("add", "fine-kept", "-s", "* * * * *", "--tz", zone, "--", "/bin/true"))
        ok(cli("add", "broken-kept", "-s", "* * * * *", "--tz", zone, "--", "/bin/sh", "-c",
               "exit 3"))  # fmt: skip
        box.path("/etc/cron.d/kept").write_text("".join(
            f"* * * * * root {BIN} run --trigger cron {job} 2>/var/log/{job}.stderr\n"
            for job in ("fine-kept", "broken-kept")
        ))  # fmt: skip
        box.path("/etc/cron.d/kept").chmod(0o644)
        deadline = time.monotonic() + 40
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            rows = [r for r in run_rows(pg_url) if r["finished_at"] is not None]
            if len(rows) == 4 and any(box.path("/var/log").glob("mail.*")):
                break
            time.sleep(0.5)
        time.sleep(2)  # any other mail has its chance too
        mails = [m.read_text(errors="replace") for m in box.path("/var/log").glob("mail.*")]
        kept = {job: box.path(f"/var/log/{job}.stderr").read_text()
                for job in ("fine-kept", "broken-kept")}  # fmt: skip
        cron_log = box.path("/var/log/cron-sandbox.log").read_text(errors="replace")
    finally:
        box.close()
    statuses = {r["job_name"]: (r["trigger"], r["status"]) for r in run_rows(pg_url)}
    assert statuses == {
        "fine": ("cron", "succeeded"), "broken": ("cron", "failed"),
        "fine-kept": ("cron", "succeeded"), "broken-kept": ("cron", "failed"),
    }, cron_log  # fmt: skip
    assert len(mails) == 1, (mails, cron_log)
    (body,) = [ln for ln in mails[0].split("\n\n", 1)[1].splitlines() if ln]
    assert " level=error event=run.finished job=broken " in body and "exit_code=3" in body
    assert kept["fine-kept"] == ""
    (line,) = kept["broken-kept"].splitlines()
    assert " level=error event=run.finished job=broken-kept " in line
    save = os.environ.get("SCHEDCTL_SAVE_CRON_STDERR")
    if save:  # the evidence for a change's notes
        Path(save).write_text(
            f"stderr of a cron-run `schedctl run --trigger cron fine-kept` (succeeded):\n"
            f"{kept['fine-kept']!r}\n\nstderr of `schedctl run --trigger cron broken-kept` "
            f"(failed, exit 3):\n{kept['broken-kept']}\nthe one mail cron sent:\n{mails[0]}"
        )
