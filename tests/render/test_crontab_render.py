"""Rendered crontab lines: Debian cron in the daemon's zone fires at every slot of the job."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cron_oracle import BASES, COUNTS, ZONES, cron_exprs, oracle_settings, schedule_or_reject
from hypothesis import given
from hypothesis import strategies as st

from schedctl.errors import ConfigError
from schedctl.models import Job, JobSpec
from schedctl.render import Target
from schedctl.render.crontab import DEFAULT_PATH, cron_lines, crontab_block, replace_block
from schedctl.schedule import Schedule

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
DAEMON_ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]


def job(name: str, schedule: str, zone: str, user: str | None = None, command: str = "x") -> Job:
    spec = JobSpec(name=name, schedule=schedule, timezone=zone, command=(command,),
                   run_as_user=user)  # fmt: skip
    return Job(1, spec, 1, T0, T0)


@oracle_settings(200)
@given(
    expr=cron_exprs,
    zone=st.sampled_from(ZONES),
    daemon_zone=st.sampled_from(DAEMON_ZONES),
    base=st.sampled_from(BASES),
    shift=st.integers(-180, 180),
)
def test_cron_lines_fire_at_every_slot(
    expr: str, zone: str, daemon_zone: str, base: datetime, shift: int
) -> None:
    schedule = schedule_or_reject(expr, zone)
    start = base + timedelta(minutes=shift)
    lines, superset = cron_lines(schedule, zone, daemon_zone, start)
    slots = schedule.next_after(start, 12)
    # Debian cron's reading of each line in the daemon's zone (schedctl's evaluator, itself
    # checked against independent evaluators in test_schedule.py).
    daemon = [Schedule.of(line, daemon_zone) for line in lines]

    for slot in slots:
        assert any(d.fires_at(slot) for d in daemon), (slot, lines)
    if not superset:
        # As UTC: in one zone, both passes of a repeated hour compare (and hash) equal.
        fires = sorted({x.astimezone(UTC) for d in daemon for x in d.next_after(start, 12)})
        assert fires[:12] == [x.astimezone(UTC) for x in slots]
    COUNTS["crontab expressions"] += 1
    COUNTS["crontab slots"] += len(slots)


def test_same_zone_is_written_as_it_is() -> None:
    s = Schedule.of("*/5 9-17 * * mon-fri", "Europe/Berlin")
    assert cron_lines(s, "Europe/Berlin", "Europe/Berlin", T0) == (["*/5 9-17 * * mon-fri"], False)


def test_other_zone_is_a_shifted_superset() -> None:
    s = Schedule.of("0 9 * * 1-5", "Asia/Kolkata")
    # 09:00 IST is 03:30 UTC, on the same weekdays.
    assert cron_lines(s, "Asia/Kolkata", "UTC", T0) == (["30 3 * * 1-5"], True)
    berlin = Schedule.of("30 2 * * *", "Europe/Berlin")
    lines, superset = cron_lines(berlin, "Europe/Berlin", "UTC", T0)
    # CET and CEST, and the 2027-03-28 slot moved out of the gap to 01:00 UTC.
    assert superset and lines[0] == "30 0,1 * * *" and "0 1 28 3 *" in lines


def test_block_escapes_percent_and_starts_schedctl_as_root() -> None:
    block, notes = crontab_block(
        [job("a", "0 1 * * *", "UTC", "backup"), job("b", "0 2 * * *", "UTC")],
        Target("/usr/local/bin/schedctl"), "UTC", T0, user=None,
    )  # fmt: skip
    lines = block.splitlines()
    assert lines[0].startswith("# BEGIN schedctl") and lines[-1] == "# END schedctl"
    # schedctl itself always runs as root and starts job a as backup: as backup, it would
    # hold the database password where the job could read it.
    assert "0 1 * * * root PATH=" in block and "0 2 * * * root PATH=" in block
    assert " backup PATH=" not in block and "schedctl starts it as backup" in block
    assert "/usr/local/bin/schedctl run --trigger cron a" in block
    assert notes == [] and block.endswith("\n")
    pct, _ = crontab_block([job("c", "0 1 * * *", "UTC")], Target("/opt/100%/schedctl"), "UTC",
                           T0, user=None)  # fmt: skip
    assert "/opt/100\\%/schedctl" in pct and "100%/" not in pct


def test_user_crontab_leaves_out_jobs_with_a_user() -> None:
    jobs = [
        job("mine", "0 1 * * *", "UTC"),
        job("theirs", "0 1 * * *", "UTC", "backup"),
        job("as-alice", "0 1 * * *", "UTC", "alice"),
    ]
    block, notes = crontab_block(jobs, Target("/s"), "UTC", T0, user="alice")
    assert "run --trigger cron mine" in block and "0 1 * * * PATH=" in block
    assert "theirs" not in block and "as-alice" not in block
    assert notes[0].startswith("job as-alice runs as alice: left out of alice's crontab, where")
    assert "sudo schedctl sync crontab" in notes[0]
    assert notes[1] == "job theirs runs as backup: not in alice's crontab"
    # Root's own crontab holds every job: schedctl starts each as its user.
    block, notes = crontab_block(jobs, Target("/s"), "UTC", T0, user="root")
    assert notes == [] and block.count("0 1 * * * PATH=/") == 3


def test_replace_block_keeps_every_other_byte() -> None:
    user = "MAILTO=ops\r\n# mine\n*/5 * * * * /bin/true   # trailing  \n"
    first = replace_block(user, "# BEGIN schedctl\nA\n# END schedctl\n")
    assert first.startswith(user)
    second = replace_block(first + "0 0 * * * after\n", "# BEGIN schedctl\nB\n# END schedctl\n")
    assert second == user + "# BEGIN schedctl\nB\n# END schedctl\n0 0 * * * after\n"
    assert replace_block("no newline", "X\n") == "no newline\nX\n"
    with pytest.raises(ValueError, match="END"):
        replace_block("# BEGIN schedctl\nA\n", "X\n")


def test_a_line_debian_cron_would_reject_stops_the_block_naming_the_job() -> None:
    # Debian cron ignores the whole file for one bad line, so nothing is rendered instead.
    # A schedctl path that leaves job a's command at cron's limit of 998 bytes.
    room = 998 - len(f"PATH={DEFAULT_PATH} ") - len(" run --trigger cron a")
    path = "/" + "x" * (room - len("//schedctl")) + "/schedctl"
    block, _ = crontab_block([job("a", "0 1 * * *", "UTC")], Target(path), "UTC", T0, user=None)
    [entry] = [line for line in block.splitlines() if not line.startswith("#")]
    assert len(entry.split(" ", 6)[6]) == 998
    with pytest.raises(ConfigError, match=r"job bb: Debian cron would reject .*command too long"):
        crontab_block([job("a", "0 1 * * *", "UTC"), job("bb", "0 2 * * *", "UTC")],
                      Target(path), "UTC", T0, user=None)  # fmt: skip


def test_cron_d_block_leaves_out_jobs_whose_user_this_host_lacks() -> None:
    # Its runs would fail on this host (the line itself names root, whom cron knows).
    block, notes = crontab_block(
        [job("a", "0 1 * * *", "UTC", "ghost"), job("b", "0 2 * * *", "UTC")],
        Target("/s"), "UTC", T0, user=None, user_exists=lambda name: name != "ghost",
    )  # fmt: skip
    assert "0 2 * * * root" in block and "ghost" not in block
    assert notes == [
        "job a runs as ghost, who does not exist on this host: left out (its runs would fail)"
    ]
