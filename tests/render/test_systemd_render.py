"""Rendered systemd units: OnCalendar= elapses equal schedctl's slots; units verify clean."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cli_helpers import BIN
from cron_oracle import (
    BASES,
    COUNTS,
    ZONES,
    cron_exprs,
    debian_next,
    oracle_settings,
    schedule_or_reject,
)
from hypothesis import given
from hypothesis import strategies as st
from systemd_tools import calendar, verify

from schedctl.models import ConcurrencyPolicy, Job, JobSpec
from schedctl.render import Target
from schedctl.render.systemd import on_calendar, render_systemd
from schedctl.schedule import Schedule, pick_slot

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def job(name: str = "backup", **kw: Any) -> Job:
    base = JobSpec(
        name=name, schedule="0 3 * * *", timezone="Europe/Berlin", command=("/bin/true",)
    )
    return Job(1, replace(base, **kw), 1, T0, T0)


@oracle_settings(250)
@given(
    expr=cron_exprs,
    zone=st.sampled_from(ZONES),
    base=st.sampled_from(BASES),
    shift=st.integers(-180, 180),
)
def test_on_calendar_elapses_are_the_slots(
    expr: str, zone: str, base: datetime, shift: int
) -> None:
    schedule = schedule_or_reject(expr, zone)
    start = base + timedelta(minutes=shift)
    lines = on_calendar(schedule, zone, start)
    ours = [x.astimezone(UTC) for x in schedule.next_after(start, 12)]
    assert calendar(lines, start, 12) == ours, lines
    # The independent evaluator looks 400 days ahead at most; compare what it found.
    theirs = [x.astimezone(UTC) for x in debian_next(schedule, zone, start, 12)]
    assert theirs == ours[: len(theirs)]
    COUNTS["systemd expressions"] += 1
    COUNTS["systemd instants"] += len(ours)


def test_dom_or_dow_needs_two_lines() -> None:
    s = Schedule.of("0 12 13 * 5", "UTC")
    assert on_calendar(s, "UTC", T0) == ["Fri *-*-* 12:00:00 UTC", "*-*-13 12:00:00 UTC"]


def test_fixed_slot_in_spring_gap_gets_a_dated_line() -> None:
    s = Schedule.of("30 2 * * *", "Europe/Berlin")
    lines = on_calendar(s, "Europe/Berlin", T0)
    # 2027-03-28 02:30 does not exist in Berlin; Debian cron runs it at 03:00 CEST = 01:00 UTC.
    assert "2027-03-28 01:00:00 UTC" in lines
    assert lines[0] == "*-*-* 02:30:00 Europe/Berlin"


def test_a_timer_started_in_a_repeated_hour_fires_once_off_slot_and_run_skips_it() -> None:
    """systemd does not only drop instants near a DST change: it can add one.

    Started (boot, daemon-reload after a sync) during Berlin's second 02:xx of 2026-10-25,
    the timer of `30 2 * * *` elapses at that pass's 02:30 (01:30 UTC), which is no slot:
    Debian cron ran the job once, in the first pass (00:30 UTC). `run` picks the slot that
    firing is for, the first pass's, whose row makes it a duplicate.
    """
    s = Schedule.of("30 2 * * *", "Europe/Berlin")
    started = datetime(2026, 10, 25, 1, 17, tzinfo=UTC)
    stray = datetime(2026, 10, 25, 1, 30, tzinfo=UTC)
    assert calendar(on_calendar(s, "Europe/Berlin", started), started, 1) == [stray]
    assert not s.fires_at(stray)
    pick = pick_slot(s, stray, stray)
    assert pick.slot is not None and pick.slot.astimezone(UTC) == stray - timedelta(hours=1)


def test_units_carry_the_job_settings(tmp_path: Path) -> None:
    units = render_systemd(
        job(jitter_seconds=90, timeout_seconds=600, run_as_user="nobody", workdir="/srv/a b"),
        Target(str(BIN)), T0,
    )  # fmt: skip
    timer, service = units["schedctl-backup.timer"], units["schedctl-backup.service"]
    for needle in ("Persistent=true", "AccuracySec=1s", "RandomizedDelaySec=90s",
                   "Unit=schedctl-backup.service", "WantedBy=timers.target"):  # fmt: skip
        assert needle in timer.splitlines()
    lines = service.splitlines()
    assert "Type=oneshot" in lines
    assert f'ExecStart="{BIN}" "run" "--trigger" "timer" "backup"' in lines
    # schedctl reads the URL from the file itself and runs as root; the job runs as nobody.
    assert 'Environment="SCHEDCTL_CONFIG=/etc/schedctl/schedctl.env"' in lines
    assert not any(ln.startswith("EnvironmentFile=") for ln in lines)
    assert "User=root" in lines and "User=nobody" not in lines
    assert not any(ln.startswith(("StateDirectory=", "DynamicUser=")) for ln in lines)
    assert "WorkingDirectory=/srv/a b" in lines
    # Stop timeout above the job's own timeout plus schedctl's kill grace.
    assert "TimeoutStopSec=640s" in lines
    assert "postgresql://" not in service


def test_rendered_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    jobs = [
        job("plain"),
        job("odd.chars_1", schedule="*/7 1-5,22 1-20/3 jan-mar mon-wed", timezone="Asia/Kolkata",
            description="50% of \"quotes\" $HOME `x` \\ and\nnewline", jitter_seconds=30,
            command=("/bin/sh", "-c", "echo 100% $HOME"), timeout_seconds=5,
            concurrency=ConcurrencyPolicy.QUEUE, run_as_user="daemon"),
        job("lordhowe", schedule="*/15 * * * *", timezone="Australia/Lord_Howe"),
        job("or-rule", schedule="0 12 13 * 5", timezone="America/New_York", workdir="/"),
        # Workdirs validation lets through, odd ones included (read back exactly in
        # tests/integration/test_sandbox_systemd.py).
        job("wd-odd", workdir="/srv/a\tb  c\\d%e$f'g\"h;i #j \u00e9\u00a0", run_as_user="a-b_c"),
    ]  # fmt: skip
    for j in jobs:
        for name, text in render_systemd(j, Target(str(BIN), env_file="/etc/hostname"), T0).items():
            (tmp_path / name).write_text(text)
    assert len(list(tmp_path.iterdir())) == 10
    assert verify(tmp_path) == ""
    COUNTS["units verified"] += 10


def test_verify_does_report_a_broken_unit(tmp_path: Path) -> None:
    # The check above can fail: a unit with a bad calendar and a missing binary is reported.
    units = render_systemd(job(), Target("/nonexistent/schedctl", env_file=None), T0)
    units["schedctl-backup.timer"] = units["schedctl-backup.timer"].replace(
        "OnCalendar=", "OnCalendar=Moonday ", 1
    )
    for name, text in units.items():
        (tmp_path / name).write_text(text)
    report = verify(tmp_path)
    assert "nonexistent" in report or "Moonday" in report


def test_shipped_units_pass_verify(tmp_path: Path) -> None:
    shipped = Path(__file__).resolve().parents[2] / "units"
    names = sorted(p.name for p in shipped.iterdir())
    assert names == ["schedctl-notify.service", "schedctl-notify.timer", "schedctl-prune.service",
                     "schedctl-prune.timer", "schedctl-sync.service", "schedctl-sync.timer"]  # fmt: skip
    for p in shipped.iterdir():
        # As installed, but pointing at this checkout's binary and an existing env file.
        text = p.read_text().replace("/usr/local/bin/schedctl", str(BIN))
        (tmp_path / p.name).write_text(text.replace("/etc/schedctl/schedctl.env", "/etc/hostname"))
    assert verify(tmp_path) == ""
