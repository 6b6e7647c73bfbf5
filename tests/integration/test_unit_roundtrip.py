"""What validation accepts, a booted systemd reads back exactly from the rendered unit.

The service's settings come back from `systemctl show` byte for byte, and the line after each
one (`KillMode=mixed` after `WorkingDirectory=`) still takes effect: no value can swallow the
next line, be trimmed, or be rewritten.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from cli_helpers import BIN
from cron_oracle import COUNTS, oracle_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sandbox import Sandbox

from schedctl.errors import ValidationError
from schedctl.models import Job, JobSpec
from schedctl.render import Target
from schedctl.render.systemd import render_systemd
from schedctl.validate import validate_spec

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
BASE = JobSpec(name="x", schedule="0 3 * * *", timezone="Europe/Berlin", command=("/bin/true",))
# Characters that unit files treat specially, blanks, and what one_line() used to rewrite.
TRICKY = [*"ab \t\\%$'\";#=.-", "\u00e9", "\u00a0", "\u2028", "\x85", "\u3000"]
FIXED = [
    "/", "/srv/a b", "/srv/a  b", "/srv/a\tb", "/srv/a\\b", "/srv/a\\\\b", "/srv/100%",
    "/srv/%n", "/srv/$HOME", "/srv/${X}", "/srv/'q'", '/srv/"q"', "/srv/a;b #c", "/srv/=x",
    "/srv/\u00e9\U0001f600", "/srv/nbsp\u00a0", "/srv/ideographic\u3000", "/" + "a" * 255,
    # Refused by validation (systemd joins, trims or rewrites them): never rendered.
    "/tmp/a\\", "/tmp/a ", "/tmp/a\t", "/tmp//a", "/tmp/./a", "/tmp/a/", "/tmp/a\u2028b",
]  # fmt: skip
USERS = ["root", "daemon", "a-b_c", "_x9"]
DESCRIPTIONS = ["", "ends in a backslash \\", '100% "quoted" $HOME', "[Service]", "a\tb"]

# One worker runs them all, so the module's sandbox boots once.
pytestmark = pytest.mark.xdist_group("unit-roundtrip")


@pytest.fixture(scope="module")
def box() -> Iterator[Sandbox]:
    sandbox = Sandbox("roundtrip", "systemd", None)
    try:
        sandbox.wait_running()
        yield sandbox
    finally:
        sandbox.close()


def accepted(spec: JobSpec) -> JobSpec | None:
    try:
        return validate_spec(spec)
    except ValidationError:
        return None


def show(box: Sandbox, units: list[str]) -> list[dict[str, str]]:
    props = "Id,LoadState,WorkingDirectory,User,KillMode,Description,Environment"
    out = box.exec("systemctl", "show", "-p", props, *units).stdout
    blocks = [b for b in out.split("\n\n") if b.strip()]
    assert len(blocks) == len(units), out
    return [dict(line.split("=", 1) for line in b.strip("\n").split("\n")) for b in blocks]


def load(box: Sandbox, jobs: list[Job]) -> list[dict[str, str]]:
    unit_dir = box.path("/etc/systemd/system")
    for old in unit_dir.glob("schedctl-*"):
        old.unlink()
    for j in jobs:
        for name, text in render_systemd(j, Target(str(BIN), env_file=None), T0).items():
            (unit_dir / name).write_text(text)
    box.exec("systemctl", "daemon-reload")
    return show(box, [f"schedctl-{j.name}.service" for j in jobs])


def check_round_trip(box: Sandbox, specs: list[JobSpec]) -> int:
    jobs = [Job(i, replace(s, name=f"w{i}"), 1, T0, T0) for i, s in enumerate(specs, 1)]
    for j, got in zip(jobs, load(box, jobs), strict=True):
        spec = j.spec
        assert got["LoadState"] == "loaded", (spec, got)
        assert got["WorkingDirectory"] == (spec.workdir or "/"), (spec.workdir, got)
        assert got["KillMode"] == "mixed", (spec, got)  # the next line was not swallowed
        # schedctl runs as root whatever the job's user, and starts the job as that user itself.
        assert (got["User"], got["Environment"]) == ("root", ""), got
        assert got["Description"] == f"schedctl job {j.name}: {spec.schedule} ({spec.timezone})"
    return len(jobs)


def test_fixed_odd_workdirs_users_and_descriptions_round_trip(box: Sandbox) -> None:
    specs = [
        replace(BASE, workdir=w, run_as_user=USERS[i % 4], description=DESCRIPTIONS[i % 5])
        for i, w in enumerate(FIXED)
    ]
    kept = [s for s in map(accepted, specs) if s is not None]
    assert len(kept) == len(FIXED) - 7  # the seven refused ones above
    COUNTS["units read back by systemd"] += check_round_trip(box, kept)


_PART = st.text(st.sampled_from(TRICKY), min_size=1, max_size=10)
_WORKDIR = st.lists(_PART, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))


@settings(oracle_settings(10), suppress_health_check=list(HealthCheck))
@given(
    workdirs=st.lists(_WORKDIR, min_size=40, max_size=40),
    users=st.lists(st.sampled_from(USERS), min_size=40, max_size=40),
)
def test_every_accepted_workdir_round_trips(
    box: Sandbox, workdirs: list[str], users: list[str]
) -> None:
    specs = [replace(BASE, workdir=w, run_as_user=u) for w, u in zip(workdirs, users, strict=True)]
    kept = [s for s in map(accepted, specs) if s is not None]
    COUNTS["random workdirs refused"] += len(specs) - len(kept)
    COUNTS["random workdirs read back by systemd"] += check_round_trip(box, kept) if kept else 0
