"""A real systemd (booted in a throwaway root) installs and fires what `schedctl sync` wrote."""

from __future__ import annotations

import json
import pwd
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cli_helpers import BIN, Cli, binary_for_others, make_cli, ok, run_rows
from pgserver import PgServer
from sandbox import Sandbox, binds, sandbox_files, socket_url

PROBE = Path(__file__).resolve().parents[1] / "secret_probe.py"

pytestmark = pytest.mark.postgres


@pytest.fixture
def host(pg: PgServer, pg_url: str, tmp_path: Path) -> Iterator[tuple[Cli, str]]:
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url, TZ="UTC")
    ok(cli("db", "upgrade"))
    yield cli, pg_url


def next_elapse(box: Sandbox, timer: str) -> datetime:
    raw = box.exec("env", "TZ=UTC", "systemctl", "show", "-P", "NextElapseUSecRealtime", timer)
    return datetime.strptime(raw.stdout.strip(), "%a %Y-%m-%d %H:%M:%S UTC").replace(tzinfo=UTC)


def sync(box: Sandbox) -> str:
    return box.exec(str(BIN), "sync", "systemd", "--schedctl", str(BIN)).stdout


def next_fire(cli: Cli, job: str) -> datetime:
    return datetime.fromisoformat(json.loads(ok(cli("next", job, "--json")).out)["next"][0])


def every_ten_seconds(box: Sandbox, job: str) -> None:
    """Make a job's timer elapse every 10 s (cron has minutes; the test cannot wait for many)."""
    path = box.path(f"/etc/systemd/system/schedctl-{job}.timer")
    lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("OnCalendar=")]
    at = lines.index("[Timer]") + 1
    path.write_text("\n".join([*lines[:at], "OnCalendar=*-*-* *:*:00/10", *lines[at:]]) + "\n")
    box.exec("systemctl", "daemon-reload")
    box.exec("systemctl", "restart", f"schedctl-{job}.timer")


def test_sync_installs_fires_updates_and_removes_timers(
    host: tuple[Cli, str], pg: PgServer
) -> None:
    cli, url = host
    now = datetime.now(UTC)
    if now.second >= 55:
        time.sleep(6)
        now = datetime.now(UTC)
    ok(cli("add", "daily", "-s", f"{now.minute} {now.hour} * * *", "--tz", "UTC", "--",
           "/bin/sh", "-c", "echo 100% done"))  # fmt: skip
    ok(cli("add", "often", "-s", "* * * * *", "--tz", "Europe/Berlin", "--", "/bin/true"))
    box = Sandbox("sd1", "systemd", pg.sockdir, sandbox_files(pg, url), binds())
    try:
        box.wait_running()
        out = sync(box)
        assert "synced: 4 written, 0 removed, 0 unchanged" in out, out
        assert "enable --now schedctl-daily.timer schedctl-often.timer" in out
        listed = box.exec("systemctl", "list-timers", "--all", "--no-legend").stdout
        assert "schedctl-daily.timer" in listed and "schedctl-often.timer" in listed
        assert next_elapse(box, "schedctl-daily.timer") == next_fire(cli, "daily")
        # A second sync with nothing changed writes nothing and calls no systemctl.
        assert "synced: 0 written, 0 removed, 4 unchanged" in sync(box)

        # Starting the service runs `schedctl run` for the current slot; it is recorded.
        box.exec("systemctl", "start", "schedctl-daily.service", timeout=60)
        rows = run_rows(url, "daily")
        assert [(r["status"], r["trigger"], r["host"]) for r in rows] == [
            ("succeeded", "timer", "sd1")
        ]
        journal = box.exec("journalctl", "-u", "schedctl-daily.service", "--no-pager").stdout
        assert "100% done" in journal and "event=run.claimed" in journal

        # A timer firing on its own, twice: two activations, one run for the minute slot.
        every_ten_seconds(box, "often")
        deadline = time.monotonic() + 40
        starts = 0
        while time.monotonic() < deadline and starts < 2:
            time.sleep(1)
            log = box.exec("journalctl", "-u", "schedctl-often.service", "--no-pager").stdout
            starts = log.count("event=run.claimed") + log.count("event=run.skipped.duplicate")
        assert starts >= 2, log
        often = run_rows(url, "often")
        assert often and all(r["trigger"] == "timer" and r["status"] == "succeeded" for r in often)
        assert max(Counter(r["slot"] for r in often).values()) == 1

        # Editing the schedule changes the timer; disabling removes it.
        ok(cli("edit", "daily", "-s", "15 4 * * *"))
        out = sync(box)
        # The daily pair (its description names the schedule) and the hand-edited timer,
        # which sync puts back.
        assert "synced: 3 written, 0 removed, 1 unchanged" in out, out
        assert "00/10" not in box.path("/etc/systemd/system/schedctl-often.timer").read_text()
        assert next_elapse(box, "schedctl-daily.timer") == next_fire(cli, "daily")
        ok(cli("disable", "daily"))
        out = sync(box)
        assert "0 written, 2 removed" in out and "disable --now schedctl-daily.timer" in out
        listed = box.exec("systemctl", "list-timers", "--all", "--no-legend").stdout
        assert "schedctl-daily.timer" not in listed and "schedctl-often.timer" in listed
        assert not box.path("/etc/systemd/system/schedctl-daily.timer").exists()
    finally:
        box.close()


def test_sync_installs_only_the_timers_of_jobs_placed_on_the_host(
    host: tuple[Cli, str], pg: PgServer
) -> None:
    cli, url = host
    now = datetime.now(UTC)
    if now.second >= 50:
        time.sleep(11)
        now = datetime.now(UTC)
    # Due this minute, so that starting its service runs it.
    ok(cli("add", "db-only", "-s", f"{now.minute} {now.hour} * * *", "--tz", "UTC",
           "--on", "role=db", "--", "/bin/echo", "db job ran"))  # fmt: skip
    ok(cli("add", "web-only", "-s", "0 3 * * *", "--tz", "UTC", "--on", "role in (web)",
           "--", "/bin/true"))  # fmt: skip
    files = sandbox_files(pg, url)
    config = "etc/schedctl/schedctl.env"
    entry = files[config]
    assert isinstance(entry, tuple)
    text = entry[0]
    files[config] = (text + "SCHEDCTL_HOST_LABELS=role=db,zone=eu\n", 0o600)
    box = Sandbox("placed", "systemd", pg.sockdir, files, binds())
    try:
        box.wait_running()
        out = sync(box)
        assert "synced: 2 written, 0 removed, 0 unchanged" in out, out
        listed = box.exec("systemctl", "list-timers", "--all", "--no-legend").stdout
        assert "schedctl-db-only.timer" in listed and "schedctl-web-only.timer" not in listed
        assert not box.path("/etc/systemd/system/schedctl-web-only.timer").exists()
        # The unit's run reads the same labels from the configuration file: it runs the job.
        box.exec("systemctl", "start", "schedctl-db-only.service", timeout=60)
        rows = run_rows(url, "db-only")
        assert [(r["status"], r["host"]) for r in rows] == [("succeeded", "placed")]
        found = json.loads(ok(cli("hosts", "--json")).out)
        assert [(h["name"], h["labels"], h["scheduler"], h["jobs"]) for h in found] == [
            ("placed", {"host": "placed", "role": "db", "zone": "eu"}, "systemd", ["db-only"])
        ]

        # Relabelled, the host's next sync moves the jobs: one timer out, the other in.
        box.path(f"/{config}").write_text(text + "SCHEDCTL_HOST_LABELS=role=web\n")
        out = sync(box)
        assert "synced: 2 written, 2 removed, 0 unchanged" in out, out
        assert "disable --now schedctl-db-only.timer" in out
        listed = box.exec("systemctl", "list-timers", "--all", "--no-legend").stdout
        assert "schedctl-web-only.timer" in listed and "schedctl-db-only.timer" not in listed
    finally:
        box.close()


@pytest.mark.slow
def test_two_hosts_with_the_same_units_run_each_slot_once(
    host: tuple[Cli, str], pg: PgServer
) -> None:
    cli, url = host
    ok(cli("add", "shared", "-s", "* * * * *", "--tz", "UTC", "--", "/bin/sleep", "1"))
    boxes = [
        Sandbox(name, "systemd", pg.sockdir, sandbox_files(pg, url), binds())
        for name in ("hosta", "hostb")
    ]
    try:
        for box in boxes:
            box.wait_running()
            assert "2 written" in sync(box)
            every_ten_seconds(box, "shared")
        # Both hosts fire at the same instants, every 10 s, for at least one minute boundary.
        time.sleep(65)
        activations = {
            box.name: box.exec("journalctl", "-u", "schedctl-shared.service", "--no-pager")
            .stdout.count("event=run.") for box in boxes
        }  # fmt: skip
    finally:
        for box in boxes:
            box.close()
    rows = run_rows(url, "shared")
    slots = Counter(r["slot"] for r in rows)
    assert len(slots) >= 1 and max(slots.values()) == 1, slots
    assert all(v >= 5 for v in activations.values()), activations


def test_shipped_sync_prune_and_notify_timers_work_on_a_host(
    host: tuple[Cli, str], pg: PgServer
) -> None:
    """units/ as install.sh --system puts them: sync converges the host, prune applies retention,
    the notify timer delivers a failure's notification by itself."""
    from schedctl.config import parse_database_url
    from schedctl.db.schema import make_engine
    from schedctl.db.tables import runs

    cli, url = host
    ok(cli("add", "kept", "-s", "0 4 * * *", "--tz", "UTC", "--", "/bin/true"))
    job_id = json.loads(ok(cli("show", "kept", "--json")).out)["id"]
    old = datetime(2025, 1, 1, tzinfo=UTC)
    engine = make_engine(parse_database_url(url))
    with engine.begin() as conn:
        for i, status in enumerate(["succeeded", "failed", "succeeded"]):
            conn.execute(runs.insert().values(
                job_id=job_id, job_name="kept", slot=old.replace(day=i + 1), trigger="timer",
                attempt=1, status=status, host="old", claimed_at=old.replace(day=i + 1),
                output_bytes=0, output_truncated=False, schedctl_version="test",
            ))  # fmt: skip
    # A failure of a job with a command target: its notification waits in the outbox.
    hook = "/usr/local/bin/record-notification"
    ok(cli("add", "told", "-s", "0 5 * * *", "--tz", "UTC", "--notify", f"exec:{hook}",
           "--", "/bin/false"))  # fmt: skip
    told_id = json.loads(ok(cli("show", "told", "--json")).out)["id"]
    recent = datetime.now(UTC).replace(second=0, microsecond=0)  # within every retention
    with engine.begin() as conn:
        run_id = conn.execute(runs.insert().values(
            job_id=told_id, job_name="told", slot=recent,
            trigger="timer", attempt=1, status="running", host="elsewhere",
            claimed_at=recent, output_bytes=0,
            output_truncated=False, schedctl_version="test",
        ).returning(runs.c.id)).scalar_one()  # fmt: skip
        conn.execute(runs.update().where(runs.c.id == run_id).values(status="failed", exit_code=1))
    engine.dispose()
    box = Sandbox("units", "systemd", pg.sockdir, sandbox_files(pg, url), binds())
    try:
        box.wait_running()
        shipped = Path(__file__).resolve().parents[2] / "units"
        for unit in shipped.iterdir():
            text = unit.read_text().replace("/usr/local/bin/schedctl", str(BIN))
            box.path(f"/etc/systemd/system/{unit.name}").write_text(text)
        box.path(hook).write_text("#!/bin/sh\ncat > /var/tmp/notified.json\n")
        box.path(hook).chmod(0o755)
        box.exec("systemctl", "daemon-reload")
        timers = ("schedctl-sync.timer", "schedctl-prune.timer", "schedctl-notify.timer")
        box.exec("systemctl", "enable", "--now", *timers)
        listed = box.exec("systemctl", "list-timers", "--all", "--no-legend").stdout
        assert all(t in listed for t in timers), listed

        # The retention timer's service prunes (started by hand: it is due at night).
        box.exec("systemctl", "start", "schedctl-prune.service", timeout=120)
        result = box.exec("systemctl", "show", "-P", "Result", "schedctl-prune.service").stdout
        assert result.strip() == "success"
        log = box.exec("journalctl", "-u", "schedctl-prune.service", "--no-pager").stdout
        assert "deleted 3 runs" in log, log
        assert run_rows(url, "kept") == []

        # The sync timer (second :30 of each minute) installs the job's timer by itself.
        deadline = time.monotonic() + 80
        while time.monotonic() < deadline:
            if box.path("/etc/systemd/system/schedctl-kept.timer").exists():
                break
            time.sleep(1)
        assert box.path("/etc/systemd/system/schedctl-kept.timer").exists()
        time.sleep(2)
        listed = box.exec("systemctl", "list-timers", "--all", "--no-legend").stdout
        assert "schedctl-kept.timer" in listed

        # The notify timer (second :15 of each minute) delivers the failure by itself.
        notified = box.path("/var/tmp/notified.json")
        deadline = time.monotonic() + 80
        while not (notified.exists() and notified.read_text().rstrip().endswith("}")):
            assert time.monotonic() < deadline, box.exec(
                "journalctl", "-u", "schedctl-notify.service", "--no-pager"
            ).stdout
            time.sleep(1)
        document = json.loads(notified.read_text())
        assert (document["event"], document["job"], document["run_id"]) == (
            "failure",
            "told",
            run_id,
        )
        assert (document["status"], document["exit_code"]) == ("failed", 1)
    finally:
        box.close()


def test_a_job_under_a_systemd_service_runs_in_a_cgroup_of_its_own(
    host: tuple[Cli, str], pg: PgServer
) -> None:
    cli, url = host
    now = datetime.now(UTC)
    if now.second >= 50:
        time.sleep(11)
        now = datetime.now(UTC)
    # The job says where it runs and leaves a process in a session of its own behind.
    script = (
        "grep '^0::' /proc/self/cgroup > /tmp/where; "
        'setsid sh -c "echo \\$\\$ > /tmp/escaped; exec sleep 60" </dev/null >/dev/null 2>&1 & '
        "sleep 0.5"
    )
    ok(cli("add", "held", "-s", f"{now.minute} {now.hour} * * *", "--tz", "UTC", "--shell",
           "--", script))  # fmt: skip
    box = Sandbox("sd3", "systemd", pg.sockdir, sandbox_files(pg, url), binds())
    try:
        box.wait_running()
        sync(box)
        box.exec("systemctl", "start", "schedctl-held.service", timeout=60)
        where = box.path("/tmp/where").read_text().strip()
        assert where.startswith("0::/system.slice/schedctl-held.service/schedctl-run-"), where
        escaped = box.path("/tmp/escaped").read_text().strip()
        assert box.exec("test", "-e", f"/proc/{escaped}", check=False).returncode != 0
        leaf = where.removeprefix("0::")
        assert box.exec("test", "-e", f"/sys/fs/cgroup{leaf}", check=False).returncode != 0
    finally:
        box.close()
    assert [r["status"] for r in run_rows(url, "held")] == ["succeeded"]


def test_user_job_cannot_read_the_database_password(host: tuple[Cli, str], pg: PgServer) -> None:
    """The runner is root's; the job runs as nobody and finds the password nowhere."""
    cli, url = host
    secret = "Sb" + secrets.token_hex(12)
    # The sandbox reaches the server over its socket, which trusts: the password is never
    # used, but it is in the URL in the env file, where an old unit would hand it on.
    box_url = socket_url(pg, url).replace(f"{pg.user}@", f"{pg.user}:{secret}@", 1)
    files: dict[str, str | tuple[str, int]] = {
        "etc/schedctl/schedctl.env": (f"SCHEDCTL_DATABASE_URL={box_url}\n", 0o600),
        "usr/local/lib/secret_probe.py": (PROBE.read_text(), 0o644),
        # nobody gets a supplementary group, which the job must carry.
        "etc/group": Path("/etc/group").read_text() + "schedctl-probe:x:4711:nobody\n",
    }
    probe = ["--", "/usr/bin/python3", "/usr/local/lib/secret_probe.py"]
    ok(cli("add", "peek", "-s", "* * * * *", "--tz", "UTC", "--user", "nobody", *probe))
    # The same probe as root: it does find the password where it may look (the control).
    ok(cli("add", "peek-root", "-s", "* * * * *", "--tz", "UTC", *probe))
    box = Sandbox("sdsecret", "systemd", pg.sockdir, files, binds())
    try:
        box.wait_running()
        assert "4 written" in sync(box)
        for job in ("peek", "peek-root"):
            box.exec("systemctl", "start", f"schedctl-{job}.service", timeout=60)
        journal = box.exec("journalctl", "-u", "schedctl-peek.service", "--no-pager").stdout
        control = box.exec("journalctl", "-u", "schedctl-peek-root.service", "--no-pager").stdout
    finally:
        box.close()
    rows = run_rows(url, "peek")
    assert rows and all(r["status"] == "succeeded" for r in rows), rows
    outputs = [journal, *(r["output_tail"] for r in rows)]
    assert all("probe done" in text for text in outputs), journal
    assert not any(secret in text for text in outputs), journal
    nobody = pwd.getpwnam("nobody")
    assert f"uid={nobody.pw_uid} gid={nobody.pw_gid} groups=[4711, {nobody.pw_gid}]" in journal
    assert "parent environ: 'unreadable (Permission denied)'" in journal
    assert "parent memory: unreadable (Permission denied)" in journal
    assert "config file: 'unreadable (Permission denied)'" in journal
    (root_row, *_) = run_rows(url, "peek-root")
    assert secret in control and secret in root_row["output_tail"]
    assert "parent memory: read" in control


def test_journalctl_p_err_finds_the_failing_run_only(host: tuple[Cli, str], pg: PgServer) -> None:
    cli, url = host
    ok(cli("add", "fine", "-s", "* * * * *", "--tz", "UTC", "--", "/bin/echo", "all good"))
    ok(cli("add", "broken", "-s", "* * * * *", "--tz", "UTC", "--", "/bin/sh", "-c",
           "echo something broke; exit 3"))  # fmt: skip
    box = Sandbox("sdlog", "systemd", pg.sockdir, sandbox_files(pg, url), binds())
    try:
        box.wait_running()
        sync(box)
        box.exec("systemctl", "start", "schedctl-fine.service", timeout=60)
        failed = box.exec("systemctl", "start", "schedctl-broken.service", timeout=60, check=False)
        assert failed.returncode != 0

        def journal(*args: str) -> str:
            return box.exec("journalctl", "--no-pager", "-q", "-o", "cat", *args).stdout

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "run.finished" not in journal(
            "-u", "schedctl-broken"
        ):
            time.sleep(0.3)
        errors = journal("-p", "err", "-u", "schedctl-broken").splitlines()
        # What the service wrote itself, not systemd's own "Failed to start" line.
        written = journal("-p", "err", "-u", "schedctl-broken", "_TRANSPORT=stdout").splitlines()
        clean = journal("-p", "err", "-u", "schedctl-fine")
        everything = journal("-u", "schedctl-fine")
    finally:
        box.close()
    assert {r["status"] for r in run_rows(url, "fine")} == {"succeeded"}
    assert {r["status"] for r in run_rows(url, "broken")} == {"failed"}
    # The job's own output is info; schedctl's failure line is an error, and journald took
    # its priority from the prefix (the message itself does not show it).
    assert written and all(" level=error event=run.finished job=broken " in e for e in written)
    assert written[0].startswith("timestamp=") and set(written) <= set(errors), errors
    assert clean == ""
    assert "all good" in everything and "level=info event=run.finished job=fine" in everything
    assert "<6>" not in everything


USER_UID = 4712


def user_manager_active(box: Sandbox) -> bool:
    unit = f"user@{USER_UID}.service"
    return box.exec("systemctl", "is-active", unit, check=False).returncode == 0


@pytest.mark.usefixtures("machine_settings_turn")  # no system install's settings show through
def test_a_user_without_root_syncs_timers_of_their_own_that_fire(
    host: tuple[Cli, str], pg: PgServer
) -> None:
    """`sync systemd --user` as a lingering non-root user: the user's manager runs the job."""
    cli, url = host
    ok(cli("add", "mine", "-s", "* * * * *", "--tz", "UTC", "--", "id", "-u"))
    ok(cli("add", "theirs", "-s", "* * * * *", "--tz", "UTC", "--user", "nobody", "--", "true"))
    home = "/home/sched"
    files: dict[str, str | tuple[str, int]] = {
        "etc/passwd": Path("/etc/passwd").read_text()
        + f"sched:x:{USER_UID}:{USER_UID}:sched:{home}:/bin/sh\n",
        "etc/group": Path("/etc/group").read_text() + f"sched:x:{USER_UID}:\n",
        "etc/shadow": (Path("/etc/shadow").read_text() + "sched:*:19000:0:99999:7:::\n", 0o640),
        # The user's own configuration; there is no /etc/schedctl/schedctl.env in this root.
        f"{home[1:]}/.config/schedctl/schedctl.env": (
            f"SCHEDCTL_DATABASE_URL={socket_url(pg, url)}\n",
            0o600,
        ),
    }
    # The user cannot reach the suite's venv under root's 0700 home: a copy it can run.
    mine = binary_for_others()
    extra = [] if mine == BIN else [mine.parent.parent]
    box = Sandbox("sduser", "systemd", pg.sockdir, files, [*binds(), *extra], logind=True)
    as_user = ["runuser", "-u", "sched", "--", "env", "-i", f"HOME={home}", "PATH=/usr/bin:/bin",
               f"XDG_RUNTIME_DIR=/run/user/{USER_UID}"]  # fmt: skip
    try:
        box.wait_running()
        box.exec("chown", "-R", "sched:sched", home)
        assert not box.path("/etc/schedctl/schedctl.env").exists()
        # No session and no lingering: no user manager, and sync says what to do.
        early = box.exec(*as_user, str(mine), "sync", "systemd", "--user", check=False)
        assert early.returncode == 78, early.stderr
        assert "loginctl enable-linger" in early.stderr, early.stderr
        assert len(early.stderr.strip().splitlines()) == 1, early.stderr
        assert not box.path(f"{home}/.config/systemd").exists()  # nothing half-installed
        # Lingering starts the user's manager without a session, as at boot.
        box.exec("loginctl", "enable-linger", "sched")
        deadline = time.monotonic() + 20
        while not user_manager_active(box):
            assert time.monotonic() < deadline, "user manager did not start"
            time.sleep(0.2)
        synced = box.exec(*as_user, str(mine), "sync", "systemd", "--user", "--schedctl", str(mine))
        assert "ran: systemctl --user enable --now schedctl-mine.timer" in synced.stdout
        assert "job theirs runs as nobody: not in sched's user units" in synced.stderr
        units = box.path(f"{home}/.config/systemd/user")
        assert sorted(p.name for p in units.iterdir() if p.is_file()) == [
            "schedctl-mine.service",
            "schedctl-mine.timer",
        ]
        service = (units / "schedctl-mine.service").read_text()
        assert "User=" not in service and "/etc" not in service and "SCHEDCTL" not in service
        assert not box.path("/etc/systemd/system/schedctl-mine.timer").exists()
        armed = box.exec(*as_user, "systemctl", "--user", "is-active", "schedctl-mine.timer")
        assert armed.stdout.strip() == "active"
        # Make it elapse every 10 s and let it fire on its own.
        path = units / "schedctl-mine.timer"
        lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("OnCalendar=")]
        at = lines.index("[Timer]") + 1
        path.write_text("\n".join([*lines[:at], "OnCalendar=*-*-* *:*:00/10", *lines[at:]]) + "\n")
        box.exec(*as_user, "systemctl", "--user", "daemon-reload")
        box.exec(*as_user, "systemctl", "--user", "restart", "schedctl-mine.timer")
        deadline = time.monotonic() + 40
        while not run_rows(url, "mine"):
            assert time.monotonic() < deadline, box.exec("journalctl", "--no-pager").stdout[-3000:]
            time.sleep(0.5)
        time.sleep(1)
        journal = box.exec(
            "journalctl", f"_UID={USER_UID}", "--no-pager", "-o", "cat", check=False
        ).stdout
        # Without lingering the manager stops with the user's last session (here: none).
        box.exec("loginctl", "disable-linger", "sched")
        deadline = time.monotonic() + 20
        while user_manager_active(box):
            assert time.monotonic() < deadline, "user manager did not stop"
            time.sleep(0.2)
    finally:
        box.close()
    rows = run_rows(url, "mine")
    assert rows and all(r["status"] == "succeeded" for r in rows), rows
    assert rows[0]["trigger"] == "timer"
    assert rows[0]["output_tail"].strip() == str(USER_UID), (rows[0], journal)
    assert not run_rows(url, "theirs")
