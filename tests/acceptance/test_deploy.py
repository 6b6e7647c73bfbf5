"""`render` and `sync` through the installed binary: files, diffs, idempotence, errors."""

from __future__ import annotations

import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from cli_helpers import BIN, Cli, make_cli, ok, one_line_error, store_as_older_versions_did


def setup(tmp_path: Path) -> Cli:
    cli = make_cli(tmp_path, TZ="UTC")
    ok(cli("add", "backup", "-s", "0 3 * * *", "--tz", "Europe/Berlin", "--timeout", "10m",
           "--", "/usr/bin/backup", "--keep", "7"))  # fmt: skip
    ok(cli("add", "report", "-s", "30 8 * * mon-fri", "--tz", "UTC", "--user", "daemon",
           "--shell", "--", "echo 100% > /tmp/report"))  # fmt: skip
    return cli


def test_render_prints_units_crontab_and_kubernetes(tmp_path: Path) -> None:
    cli = setup(tmp_path)
    units = ok(cli("render", "systemd", "backup")).out
    assert (
        "# ==> schedctl-backup.timer <==" in units
        and "OnCalendar=*-*-* 03:00:00 Europe/Berlin" in units
    )
    assert f'ExecStart="{BIN}" "run" "--trigger" "timer" "backup"' in units
    out = tmp_path / "units"
    assert "wrote 4 unit files" in ok(cli("render", "systemd", "--out", str(out))).out
    assert sorted(p.name for p in out.iterdir()) == [
        "schedctl-backup.service", "schedctl-backup.timer",
        "schedctl-report.service", "schedctl-report.timer",
    ]  # fmt: skip
    cron = ok(cli("render", "crontab", "--cron-zone", "UTC")).out
    # schedctl runs as root and starts the job as daemon.
    assert "30 8 * * mon-fri root PATH=" in cron and "schedctl starts it as daemon" in cron
    assert "0 1,2 * * * root PATH=" in cron and "--at-slot backup" in cron
    docs = list(
        yaml.safe_load_all(ok(cli("render", "kubernetes", "--image", "reg/schedctl:1")).out)
    )
    assert [d["metadata"]["name"] for d in docs] == ["schedctl-backup", "schedctl-report"]
    spec = docs[0]["spec"]
    assert spec["concurrencyPolicy"] == "Forbid" and spec["timeZone"] == "Europe/Berlin"
    container = spec["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["run", "--trigger", "cron", "backup"]
    assert container["env"][0]["valueFrom"]["secretKeyRef"] == {
        "name": "schedctl-database",
        "key": "url",
    }
    one_line_error(cli("render", "systemd", "nosuch"), 3, "no job named 'nosuch'")


def test_sync_systemd_converges_and_a_second_sync_writes_nothing(tmp_path: Path) -> None:
    cli = setup(tmp_path)
    units = tmp_path / "etc-systemd"
    units.mkdir()
    (units / "schedctl-sync.timer").write_text("[Timer]\nOnCalendar=minutely\n")  # not ours
    (units / "other.service").write_text("[Service]\nExecStart=/bin/true\n")
    dry = ok(cli("sync", "systemd", "--unit-dir", str(units), "--dry-run")).out
    assert "+OnCalendar=*-*-* 03:00:00 Europe/Berlin" in dry
    assert "would run: systemctl enable --now schedctl-backup.timer schedctl-report.timer" in dry
    assert sorted(p.name for p in units.iterdir()) == ["other.service", "schedctl-sync.timer"]
    assert (
        "synced: 4 written, 0 removed, 0 unchanged"
        in ok(cli("sync", "systemd", "--unit-dir", str(units), "--no-reload")).out
    )
    mtimes = {p.name: p.stat().st_mtime_ns for p in units.iterdir()}
    assert oct((units / "schedctl-backup.timer").stat().st_mode & 0o777) == "0o644"
    time.sleep(0.01)
    assert (
        "synced: 0 written, 0 removed, 4 unchanged"
        in ok(cli("sync", "systemd", "--unit-dir", str(units), "--no-reload")).out
    )
    assert {p.name: p.stat().st_mtime_ns for p in units.iterdir()} == mtimes
    ok(cli("disable", "report"))
    ok(cli("edit", "backup", "-s", "0 4 * * *"))
    dry = ok(cli("sync", "systemd", "--unit-dir", str(units), "--dry-run")).out
    assert (
        "-OnCalendar=*-*-* 03:00:00 Europe/Berlin" in dry
        and "+OnCalendar=*-*-* 04:00:00 Europe/Berlin" in dry
    )
    assert "would run: systemctl disable --now schedctl-report.timer" in dry
    assert "would run: systemctl restart schedctl-backup.timer" in dry
    assert (
        "2 written, 2 removed, 0 unchanged"
        in ok(cli("sync", "systemd", "--unit-dir", str(units), "--no-reload")).out
    )
    assert sorted(p.name for p in units.iterdir()) == [
        "other.service", "schedctl-backup.service", "schedctl-backup.timer", "schedctl-sync.timer",
    ]  # fmt: skip


def test_sync_crontab_replaces_only_its_block(tmp_path: Path) -> None:
    cli = setup(tmp_path)
    cron_d = tmp_path / "cron.d"
    cron_d.mkdir()
    target = cron_d / "schedctl"
    mine = "MAILTO=ops@example.com\r\n# keep me  \n*/5 * * * * root /bin/true % not ours\n"
    target.write_text(mine)
    ok(cli("sync", "crontab", "--file", str(target), "--cron-zone", "UTC"))
    first = target.read_bytes().decode()
    assert first.startswith(mine) and first.endswith("# END schedctl\n")
    assert target.stat().st_mode & 0o777 == 0o644
    assert (
        "synced: 0 written, 0 removed, 1 unchanged"
        in ok(cli("sync", "crontab", "--file", str(target), "--cron-zone", "UTC")).out
    )
    with target.open("a") as f:
        f.write("0 0 * * * root /bin/after\n")
    ok(cli("remove", "report", "--yes"))
    dry = ok(cli("sync", "crontab", "--file", str(target), "--cron-zone", "UTC", "--dry-run")).out
    assert "-30 8 * * mon-fri root" in dry and "nothing written" in dry
    ok(cli("sync", "crontab", "--file", str(target), "--cron-zone", "UTC"))
    final = target.read_bytes().decode()
    assert final.startswith(mine) and final.endswith("# END schedctl\n0 0 * * * root /bin/after\n")
    assert "report" not in final


def test_sync_errors_are_one_line_and_change_nothing(tmp_path: Path) -> None:
    cli = setup(tmp_path)
    cron_d = tmp_path / "cron.d"
    cron_d.mkdir()
    one_line_error(cli("sync", "crontab", "--file", str(cron_d / "sched.ctl")), 2, "contain a dot")
    broken = cron_d / "schedctl"
    broken.write_text("# BEGIN schedctl\n0 1 * * * root x\n")
    one_line_error(cli("sync", "crontab", "--file", str(broken)), 78, "without '# END schedctl'")
    assert broken.read_text() == "# BEGIN schedctl\n0 1 * * * root x\n"
    one_line_error(cli("sync", "crontab", "--file", str(broken), "--user", "x"), 2, "exclude")
    one_line_error(cli("render", "systemd", "--schedctl", "relative/schedctl"), 2, "absolute")
    one_line_error(cli("render", "crontab", "--cron-zone", "Mars/Base"), 2, "unknown time zone")
    if os.geteuid() == 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        (ro / "sub").write_text("")
        one_line_error(
            cli("sync", "systemd", "--unit-dir", str(ro / "sub"), "--no-reload"), 78, "cannot"
        )


def test_run_at_slot_does_nothing_off_slot(tmp_path: Path) -> None:
    cli = make_cli(tmp_path, TZ="UTC")
    hour = (datetime.now(UTC).hour + 12) % 24
    ok(cli("add", "far", "-s", f"0 {hour} * * *", "--tz", "UTC", "--", "/bin/true"))
    ok(cli("add", "every", "-s", "* * * * *", "--tz", "UTC", "--", "/bin/true"))
    off = ok(cli("run", "--at-slot", "far"))
    assert off.err == "" and off.out == ""
    assert "no runs recorded" in ok(cli("history", "far")).out
    ok(cli("run", "--at-slot", "every"))
    assert "succeeded" in ok(cli("history", "every")).out
    one_line_error(cli("run", "--at-slot", "--now", "every"), 2, "contradict")


def test_a_job_cron_would_reject_stops_sync_and_render_naming_it(tmp_path: Path) -> None:
    # Debian cron ignores the whole managed file for one line it cannot parse, so a stored
    # schedule it rejects (an older schedctl accepted fullwidth digits) must not be written.
    cli = setup(tmp_path)
    url = f"sqlite:///{tmp_path / 'data' / 'schedctl.db'}"
    cron_d = tmp_path / "cron.d"
    cron_d.mkdir()
    target = cron_d / "schedctl"
    ok(cli("sync", "crontab", "--file", str(target), "--cron-zone", "UTC"))
    before = target.read_bytes()
    ok(cli("add", "bad", "-s", "@hourly", "--", "true"))
    store_as_older_versions_did(url, "bad", schedule="\uff13 \uff14 * * *")
    for args in (["sync", "crontab", "--file", str(target), "--cron-zone", "UTC"],
                 ["render", "crontab", "--cron-zone", "UTC"], ["render", "systemd"],
                 ["render", "kubernetes"],
                 ["sync", "systemd", "--unit-dir", str(tmp_path / "u"), "--no-reload"]):  # fmt: skip
        failed = cli(*args)
        one_line_error(failed, 78, "job bad cannot be rendered: bad cron expression")
        assert "schedules are ASCII" in failed.err and failed.out == ""
    assert target.read_bytes() == before  # the healthy jobs' block stays in force
    assert not (tmp_path / "u").exists()
    # A workdir an older schedctl let through would swallow the unit's next line.
    ok(cli("edit", "bad", "-s", "@hourly"))
    store_as_older_versions_did(url, "bad", workdir="/tmp/a\\")
    one_line_error(cli("render", "systemd", "bad"), 78, "job bad cannot be rendered: workdir")
    ok(cli("disable", "bad"))  # what the message suggests: the others sync again
    assert "synced" in ok(cli("sync", "crontab", "--file", str(target), "--cron-zone", "UTC")).out


def test_kubernetes_names_of_jobs_differing_in_punctuation_differ(tmp_path: Path) -> None:
    cli = make_cli(tmp_path, TZ="UTC")
    for name in ("a-b", "a.b", "a_b"):
        ok(cli("add", name, "-s", "@daily", "--", "true"))
    docs = list(yaml.safe_load_all(ok(cli("render", "kubernetes")).out))
    names = {d["metadata"]["annotations"]["schedctl/job"]: d["metadata"]["name"] for d in docs}
    assert names["a-b"] == "schedctl-a-b"
    assert len(set(names.values())) == 3, names
    assert all(re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", n) and len(n) <= 52
               for n in names.values()), names  # fmt: skip


@pytest.mark.parametrize(
    ("option", "value", "fragment"),
    [
        ("--image", "", "not an image reference"),
        ("--image", "reg/schedctl:1 --privileged", "not an image reference"),
        ("--secret", "Bad Name!", "not a Kubernetes Secret name"),
        ("--secret", "-db", "not a Kubernetes Secret name"),
    ],
)
def test_kubernetes_references_the_cluster_would_reject_are_refused(
    tmp_path: Path, option: str, value: str, fragment: str
) -> None:
    cli = make_cli(tmp_path, TZ="UTC")
    ok(cli("add", "k", "-s", "@daily", "--", "true"))
    one_line_error(cli("render", "kubernetes", option, value), 2, fragment)
