"""`run` racing `remove`: a job removed between loading it and claiming its slot is not found."""

from __future__ import annotations

import random
import sqlite3
import subprocess
import time

import psycopg
from cli_helpers import BIN, Cli, ok, one_line_error, run_rows

# Removes the job as `run` records its host: after `run` loaded the job, before it claims
# the slot, as when `remove` commits in between.
REMOVE_ON_CLAIM_SQLITE = tuple(
    f"CREATE TRIGGER remove_on_{event} AFTER {event} ON hosts "
    "BEGIN DELETE FROM jobs WHERE name = 'rr'; END"
    for event in ("INSERT", "UPDATE")
)
REMOVE_ON_CLAIM_PG = (
    "CREATE FUNCTION remove_on_claim() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN DELETE FROM jobs WHERE name = 'rr'; RETURN NULL; END $$",
    "CREATE TRIGGER remove_on_claim AFTER INSERT OR UPDATE ON hosts FOR EACH ROW "
    "EXECUTE FUNCTION remove_on_claim()",
)


def remove_on_claim(url: str) -> None:
    if url.startswith("sqlite"):
        lite = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        for statement in REMOVE_ON_CLAIM_SQLITE:
            lite.execute(statement)
        lite.close()
        return
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in REMOVE_ON_CLAIM_PG:
            conn.execute(statement)


def test_a_job_removed_just_before_its_claim_is_not_found(
    backend: tuple[Cli, str, dict[str, str]],
) -> None:
    cli, url, _ = backend
    remove_on_claim(url)
    for args in (("run", "rr", "--now"), ("run", "rr")):
        ok(cli("add", "rr", "-s", "* * * * *", "--tz", "UTC", "--", "/bin/echo", "RR"))
        result = cli(*args)
        one_line_error(result, 3, "no job named 'rr': it was removed meanwhile")
        assert result.out == ""  # the command never ran
    assert run_rows(url) == []
    assert "no jobs" in ok(cli("list")).out


def test_runs_racing_remove_end_ran_or_not_found(
    backend: tuple[Cli, str, dict[str, str]],
) -> None:
    cli, url, env = backend
    codes: dict[int, int] = {}
    for _ in range(3):
        ok(cli("add", "rr", "-s", "* * * * *", "--tz", "UTC", "--", "/bin/echo", "RR"))
        runs = [
            subprocess.Popen([str(BIN), "run", "rr", "--now"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
            for _ in range(8)
        ]  # fmt: skip
        time.sleep(random.random() * 0.4)
        ok(cli("remove", "rr", "--yes"))
        for p in runs:
            out, err = p.communicate(timeout=60)
            codes[p.returncode] = codes.get(p.returncode, 0) + 1
            if p.returncode == 0:
                assert out in ("RR\n", ""), err  # ran, or skipped: another run held the lock
            else:
                assert p.returncode == 3, err
                assert err.splitlines()[-1].startswith("schedctl: error: no job named 'rr'"), err
                assert "Traceback" not in err and out == ""
    assert set(codes) <= {0, 3}
    assert {r["status"] for r in run_rows(url)} <= {"succeeded", "skipped_overlap"}
