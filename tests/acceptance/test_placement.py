"""Placement through the installed binary: `--on`, host labels, `hosts`, sync, run, check."""

from __future__ import annotations

import json
import os
import re
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import BIN, Cli, cli_env, make_cli, ok, one_line_error, run_rows

from schedctl.errors import ExitCode


def jobs_json(cli: Cli) -> dict[str, Any]:
    return {j["name"]: j for j in json.loads(ok(cli("list", "--json")).out)}


def test_on_is_validated_stored_shown_and_cleared(backend: tuple[Cli, str, dict[str, str]]) -> None:
    cli, _, _ = backend
    ok(cli("add", "backup", "-s", "0 3 * * *", "--on", "role in (db, backup), !canary",
           "--", "/bin/true"))  # fmt: skip
    ok(cli("add", "everywhere", "-s", "0 4 * * *", "--", "/bin/true"))
    found = jobs_json(cli)
    # Stored in one canonical form; a job without --on goes to every host (null).
    assert found["backup"]["on"] == "role in (backup,db),!canary"
    assert found["everywhere"]["on"] is None
    assert (
        json.loads(ok(cli("show", "backup", "--json")).out)["on"] == "role in (backup,db),!canary"
    )
    assert re.search(r"on\s+role in \(backup,db\),!canary", ok(cli("show", "backup")).out)
    listed = ok(cli("list")).out
    assert "ON" in listed and "role in (backup,db),!canary" in listed

    # Bad selectors: one line, exit 2, nothing stored.
    for bad, fragment in [
        ("role in (db", "a list is not closed with ')'"),
        ("role=db,", "it ends with ','"),
        ("role=d\x1bb", "control character"),
        ("-x=1", "bad label key '-x'"),
    ]:
        one_line_error(cli("add", "other", "-s", "@daily", "--on", bad, "--", "/bin/true"),
                       ExitCode.USAGE, fragment)  # fmt: skip
        one_line_error(cli("edit", "backup", "--on", bad), ExitCode.USAGE, fragment)
    after = jobs_json(cli)
    assert "other" not in after
    assert after["backup"]["revision"] == 1 and after["backup"]["on"] == found["backup"]["on"]

    ok(cli("edit", "backup", "--on", "role==db"))
    assert jobs_json(cli)["backup"]["on"] == "role=db"
    ok(cli("edit", "backup", "--on", ""))
    assert jobs_json(cli)["backup"]["on"] is None
    assert "every host" in ok(cli("show", "backup")).out


def test_bad_host_labels_are_a_configuration_error(tmp_path: Path) -> None:
    cli = make_cli(tmp_path, SCHEDCTL_HOST_LABELS="role=web,zone=e u")
    one_line_error(cli("run", "anything"), ExitCode.CONFIG, "bad label value 'e u' for zone in "
                   "$SCHEDCTL_HOST_LABELS")  # fmt: skip
    one_line_error(cli("sync", "crontab", "--file", str(tmp_path / "cron"), "--schedctl",
                       str(BIN)), ExitCode.CONFIG, "bad label value")  # fmt: skip
    config = tmp_path / "schedctl.env"
    config.write_text("SCHEDCTL_HOST_LABELS=host=other\n")
    cli = make_cli(tmp_path, SCHEDCTL_CONFIG=str(config))
    one_line_error(cli("run", "anything"), ExitCode.CONFIG,
                   f"label 'host' in SCHEDCTL_HOST_LABELS in {config} is set by schedctl")  # fmt: skip
    one_line_error(cli("render", "crontab", "--labels", "role"), ExitCode.USAGE,
                   "label 'role' in --labels has no '='")  # fmt: skip


def test_run_on_a_host_the_job_is_not_placed_on_claims_nothing(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    cli, url, env = backend
    ok(cli("add", "backup", "-s", "* * * * *", "--on", "role=db", "--", "/bin/echo", "ran"))
    extra = {k: v for k, v in env.items() if k == "SCHEDCTL_DATABASE_URL"}
    web = make_cli(tmp_path, SCHEDCTL_HOST="web1", SCHEDCTL_HOST_LABELS="role=web", **extra)
    db = make_cli(tmp_path, SCHEDCTL_HOST="db1", SCHEDCTL_HOST_LABELS="role=db", **extra)

    skipped = ok(web("run", "backup", "--trigger", "cron"))
    assert 'event=run.skipped.not_placed job=backup host=web1 on="role=db"' in skipped.err
    assert "ran" not in skipped.out
    assert run_rows(url, "backup") == []

    # By hand, an operator means it: the run happens, with a warning that says so.
    manual = ok(web("run", "backup", "--now"))
    assert "ran" in manual.out
    assert "level=warning event=run.not_placed job=backup host=web1" in manual.err
    assert [(r["host"], r["trigger"]) for r in run_rows(url, "backup")] == [("web1", "manual")]

    placed = ok(db("run", "backup", "--trigger", "cron"))
    assert "event=run.claimed" in placed.err and "ran" in placed.out
    assert [(r["host"], r["trigger"]) for r in run_rows(url, "backup")][-1] == ("db1", "cron")
    hosts = {h["name"]: h for h in json.loads(ok(cli("hosts", "--json")).out)}
    assert hosts["db1"]["labels"] == {"host": "db1", "role": "db"}
    assert hosts["db1"]["scheduler"] == "cron" and hosts["db1"]["jobs"] == ["backup"]
    # Its cron firing said how it schedules; the manual run after it kept that.
    assert hosts["web1"]["scheduler"] == "cron" and hosts["web1"]["jobs"] == []


@pytest.mark.postgres
def test_a_run_whose_role_cannot_write_hosts_still_runs(pg_url: str, tmp_path: Path) -> None:
    """Registration refused for a reason other than a database that is down: said, not fatal."""
    import sqlalchemy as sa

    from schedctl.config import parse_database_url
    from schedctl.db.schema import make_engine

    admin = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url)
    ok(admin("db", "upgrade"))
    ok(admin("add", "job", "-s", "* * * * *", "--", "/bin/echo", "ran"))
    role, password = f"runner_{secrets.token_hex(4)}", secrets.token_hex(8)
    engine = make_engine(parse_database_url(pg_url))
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'"))
        conn.execute(
            sa.text(f"GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO {role}")
        )
        conn.execute(sa.text(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}"))
        conn.execute(sa.text(f"REVOKE ALL ON hosts FROM {role}"))
    engine.dispose()
    url = re.sub(r"//[^@]*@", f"//{role}:{password}@", pg_url)
    runner = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url, SCHEDCTL_HOST="h1")
    done = runner("run", "job", "--trigger", "cron")
    assert done.rc == 0, done.err
    assert "ran" in done.out
    warning = [ln for ln in done.err.splitlines() if "event=host.register_failed" in ln]
    assert len(warning) == 1 and "level=warning" in warning[0] and "hosts" in warning[0]
    assert [r["status"] for r in run_rows(pg_url, "job")] == ["succeeded"]


def _age_host(url: str, name: str, seconds: float) -> None:
    """Move a host's last sighting `seconds` into the past (stands for the host going quiet)."""
    import sqlalchemy as sa

    from schedctl.config import parse_database_url
    from schedctl.db.schema import make_engine
    from schedctl.db.tables import hosts

    engine = make_engine(parse_database_url(url))
    try:
        with engine.begin() as conn:
            row = conn.execute(sa.select(hosts.c.last_seen, hosts.c.last_sync)
                               .where(hosts.c.name == name)).one()  # fmt: skip
            back = timedelta(seconds=seconds)
            done = conn.execute(
                sa.update(hosts).where(hosts.c.name == name).values(
                    last_seen=row[0] - back, last_sync=None if row[1] is None else row[1] - back
                )
            )  # fmt: skip
            assert done.rowcount == 1
    finally:
        engine.dispose()


class Fleet:
    """Hosts sharing one database, each with its own name, labels, unit dir and cron file."""

    def __init__(self, tmp_path: Path, url: str) -> None:
        self.tmp, self.url = tmp_path, url
        self.admin = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url)

    def host(self, name: str, labels: str, in_file: bool = False) -> Cli:
        home = self.tmp / name
        home.mkdir(exist_ok=True)
        config = home / "schedctl.env"
        # One host keeps its labels in its configuration file, as units and cron read it.
        config.write_text(f"SCHEDCTL_HOST_LABELS={labels}\n" if in_file else "")
        extra = {} if in_file else {"SCHEDCTL_HOST_LABELS": labels}
        return make_cli(home, SCHEDCTL_DATABASE_URL=self.url, SCHEDCTL_HOST=name,
                        SCHEDCTL_CONFIG=str(config), **extra)  # fmt: skip

    def sync(self, name: str, cli: Cli) -> None:
        home = self.tmp / name
        ok(cli("sync", "systemd", "--unit-dir", str(home / "units"), "--no-reload",
               "--schedctl", str(BIN)))  # fmt: skip
        ok(cli("sync", "crontab", "--file", str(home / "cron"), "--schedctl", str(BIN)))

    def installed(self, name: str) -> tuple[set[str], set[str]]:
        """Return the jobs with a timer, and the jobs with a crontab line, on host `name`."""
        home = self.tmp / name
        timers = {
            p.name[len("schedctl-") : -len(".timer")] for p in (home / "units").glob("*.timer")
        }
        cron = (home / "cron").read_text() if (home / "cron").exists() else ""
        lines = {ln.rsplit(" ", 1)[1] for ln in cron.splitlines() if ln and not ln.startswith("#")}
        return timers, lines


@pytest.mark.postgres
def test_three_hosts_carry_exactly_the_jobs_placed_on_them(pg_url: str, tmp_path: Path) -> None:
    fleet = Fleet(tmp_path, pg_url)
    admin = fleet.admin
    ok(admin("db", "upgrade"))
    ok(admin("add", "nightly-backup", "-s", "30 2 * * *", "--tz", "UTC", "--on", "role=db",
             "--", "/bin/true"))  # fmt: skip
    ok(admin("add", "web-cache", "-s", "*/5 * * * *", "--tz", "UTC",
             "--on", "role in (web),zone=eu", "--", "/bin/true"))  # fmt: skip
    ok(admin("add", "not-canary", "-s", "@hourly", "--tz", "UTC", "--on", "!canary",
             "--", "/bin/true"))  # fmt: skip
    ok(admin("add", "logrotate", "-s", "@daily", "--tz", "UTC", "--", "/bin/true"))
    ok(admin("add", "pinned", "-s", "@daily", "--tz", "UTC", "--on", "host=web2",
             "--", "/bin/true"))  # fmt: skip
    hosts = {
        "db1": fleet.host("db1", "role=db,zone=eu", in_file=True),
        "web1": fleet.host("web1", "role=web,zone=eu"),
        "web2": fleet.host("web2", "role=web,zone=us,canary=yes"),
    }
    expected = {
        "db1": {"nightly-backup", "not-canary", "logrotate"},
        "web1": {"web-cache", "not-canary", "logrotate"},
        "web2": {"logrotate", "pinned"},
    }
    for name, cli in hosts.items():
        fleet.sync(name, cli)
    for name in hosts:
        assert fleet.installed(name) == (expected[name], expected[name]), name
    # `render --as-host` previews another host exactly as its sync installs it.
    preview = ok(admin("render", "crontab", "--as-host", "web2", "--labels",
                       "role=web,zone=us,canary=yes", "--schedctl", str(BIN))).out  # fmt: skip
    assert preview == (tmp_path / "web2" / "cron").read_text()

    listed = ok(admin("hosts")).out
    print(listed)  # pytest -s shows the fleet as `schedctl hosts` lists it
    if os.environ.get("SCHEDCTL_TEST_HOSTS_OUT"):
        Path(os.environ["SCHEDCTL_TEST_HOSTS_OUT"]).write_text(listed)
    rows = {ln.split()[0]: ln for ln in listed.splitlines()[1:]}
    assert set(rows) == {"db1", "web1", "web2"}
    assert "host=db1,role=db,zone=eu" in rows["db1"] and "nightly-backup" in rows["db1"]
    data = {h["name"]: h for h in json.loads(ok(admin("hosts", "--json")).out)}
    for name in hosts:
        assert set(data[name]["jobs"]) == expected[name]
        assert data[name]["live"] and data[name]["scheduler"] == "cron"  # the last sync
    assert ok(admin("check")).rc == 0

    # Relabelling web1 as a database host moves the jobs at its next sync.
    hosts["web1"] = fleet.host("web1", "role=db,zone=eu")
    fleet.sync("web1", hosts["web1"])
    moved = {"nightly-backup", "not-canary", "logrotate"}
    assert fleet.installed("web1") == (moved, moved)
    assert set(jobs_for(admin, "web1")) == moved
    # Nobody carries web-cache any more: check says so, and so does report.
    checked = admin("check")
    assert checked.rc == 2
    assert "CRITICAL web-cache: no live host carries web-cache (--on role in (web),zone=eu)" in (
        checked.out
    )
    report = {r["job"]: r for r in json.loads(ok(admin("report", "--json")).out)["jobs"]}
    assert report["web-cache"]["state"] == "no host" and report["web-cache"]["live_hosts"] == []
    assert sorted(report["nightly-backup"]["live_hosts"]) == ["db1", "web1"]
    assert report["logrotate"]["live_hosts"] is None
    assert "none live" in ok(admin("report")).out


def jobs_for(cli: Cli, host: str) -> list[str]:
    return next(h["jobs"] for h in json.loads(ok(cli("hosts", "--json")).out) if h["name"] == host)


@pytest.mark.postgres
def test_check_flags_a_host_that_stopped_and_the_jobs_it_alone_carried(
    pg_url: str, tmp_path: Path
) -> None:
    fleet = Fleet(tmp_path, pg_url)
    admin = fleet.admin
    ok(admin("db", "upgrade"))
    ok(admin("add", "nightly-backup", "-s", "30 2 * * *", "--on", "role=db", "--", "/bin/true"))
    ok(admin("add", "anywhere", "-s", "30 2 * * *", "--", "/bin/true"))
    db1, db2 = fleet.host("db1", "role=db"), fleet.host("db2", "role=db")
    fleet.sync("db1", db1)
    fleet.sync("db2", db2)
    assert ok(admin("check")).out.startswith("SCHEDCTL OK - 2 jobs OK")

    _age_host(pg_url, "db2", 6 * 60)
    checked = admin("check")
    assert checked.rc == 2, checked.out
    assert "CRITICAL host db2: not seen for 6m (over 5m; labels host=db2,role=db)" in checked.out
    assert "nightly-backup" not in checked.out  # db1 still carries it
    data = json.loads(admin("check", "--json").out)
    assert data["hosts"] == [{"host": "db2", "state": "CRITICAL", "reasons": [
        "not seen for 6m (over 5m; labels host=db2,role=db): check its sync timer, or remove it "
        "with `schedctl hosts --forget db2`"], "warnings": []}]  # fmt: skip
    assert "not live" in ok(admin("hosts")).out

    _age_host(pg_url, "db1", 3600)
    checked = admin("check")
    assert (
        "CRITICAL nightly-backup: no live host carries nightly-backup (--on role=db): hosts "
        "that match are not live (db1 seen 60m ago, db2 seen 6m ago)" in checked.out
    ), checked.out
    assert "anywhere" not in checked.out.split("\n", 1)[1]  # a job on every host: not judged

    # Retired hosts are forgotten; a host that comes back registers again.
    ok(admin("hosts", "--forget", "db2"))
    one_line_error(admin("hosts", "--forget", "db2"), ExitCode.NOT_FOUND, "no host named 'db2'")
    fleet.sync("db1", db1)
    assert ok(admin("check")).rc == 0


def test_hosts_that_went_quiet_do_not_page_without_placed_jobs(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    """A fleet (or one SQLite host) that uses no `--on` is judged as before."""
    cli, url, _ = backend
    ok(cli("add", "daily", "-s", "30 2 * * *", "--", "/bin/true"))
    assert ok(cli("check")).rc == 0  # no host ever registered
    ok(cli("sync", "crontab", "--file", str(tmp_path / "cron"), "--schedctl", str(BIN)))
    _age_host(url, os.uname().nodename, 86400)
    assert ok(cli("check")).out.startswith("SCHEDCTL OK - 1 jobs OK")
    assert ok(cli("report", "--json")).rc == 0


@pytest.mark.postgres
def test_the_daemon_registers_and_schedules_only_its_placed_jobs(
    pg_url: str, tmp_path: Path
) -> None:
    import signal
    import subprocess
    import time

    admin = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url)
    ok(admin("db", "upgrade"))
    ok(admin("add", "db-job", "-s", "0 3 * * *", "--on", "role=db", "--", "/bin/true"))
    ok(admin("add", "web-job", "-s", "0 3 * * *", "--on", "role=web", "--", "/bin/true"))
    env = {**cli_env(tmp_path), "SCHEDCTL_DATABASE_URL": pg_url, "SCHEDCTL_HOST": "box1",
           "SCHEDCTL_HOST_LABELS": "role=web"}  # fmt: skip
    log = tmp_path / "daemon.log"
    with log.open("wb") as f:
        proc = subprocess.Popen([str(BIN), "daemon", "--refresh", "1s"], env=env, stdout=f,
                                stderr=f)  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while "event=job.registered" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        found = {h["name"]: h for h in json.loads(ok(admin("hosts", "--json")).out)}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    text = log.read_text()
    assert "event=job.registered job=web-job " in text, text
    assert "job=db-job" not in text
    assert found["box1"]["scheduler"] == "daemon" and found["box1"]["jobs"] == ["web-job"]
    assert found["box1"]["last_sync"] is not None
