"""Everyday mistakes get a message that leads somewhere; measured times read as measured."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from cli_helpers import BIN, binary_for_others, cli_env, make_cli, ok, one_line_error


def test_bare_schedctl_prints_help_and_no_empty_error(tmp_path: Path) -> None:
    result = make_cli(tmp_path)()
    assert result.rc == 2
    assert "Usage: schedctl" in result.out
    assert "error" not in result.err, result.err


def test_a_typo_suggests_the_command_once(tmp_path: Path) -> None:
    result = make_cli(tmp_path)("lst")
    one_line_error(result, 2, "Did you mean 'list'?")
    assert result.err.count("Did you mean") == 1


def test_job_options_before_dashdash_get_a_hint(tmp_path: Path) -> None:
    result = make_cli(tmp_path)("add", "y", "-s", "@daily", "ls", "-la")
    one_line_error(result, 2, "No such option '-l'")
    assert "put the command after `--`" in result.err
    assert "-- ls -la" in result.err


def test_a_pasted_cron_d_line_gets_the_user_field_hint(tmp_path: Path) -> None:
    result = make_cli(tmp_path)("add", "y", "-s", "0 3 * * * root", "--", "ls")
    one_line_error(result, 2, "has 6 fields, needs 5")
    assert "'root' is the user field" in result.err and "--user" in result.err


def test_an_unknown_user_is_stored_with_one_warning(tmp_path: Path) -> None:
    cli = make_cli(tmp_path)
    result = ok(cli("add", "y", "-s", "@daily", "--user", "no-such-user-x", "--", "true"))
    warnings = result.err.splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("schedctl: warning: "), result.err
    assert "no-such-user-x" in warnings[0]
    assert json.loads(ok(cli("show", "y", "--json")).out)["user"] == "no-such-user-x"
    # A user that exists: no warning.
    assert ok(cli("add", "z", "-s", "@daily", "--user", "root", "--", "true")).err == ""


def test_next_after_a_date_suggests_a_format_that_works(tmp_path: Path) -> None:
    cli = make_cli(tmp_path)
    ok(cli("add", "y", "-s", "@daily", "--tz", "UTC", "--", "true"))
    result = cli("next", "y", "--after", "2026-01-01")
    one_line_error(result, 2, "has no UTC offset")
    suggested = re.search(r"e\.g\. (\S+)", result.err)
    assert suggested, result.err
    first = ok(cli("next", "y", "--after", suggested.group(1), "-n", "1")).out.strip()
    assert first == "2026-01-02T00:00:00+00:00"


def test_dry_run_diff_headers_are_a_and_b_paths(tmp_path: Path) -> None:
    ok(make_cli(tmp_path)("add", "y", "-s", "@daily", "--", "true"))
    p = subprocess.run(
        [str(BIN), "sync", "systemd", "--dry-run", "--unit-dir", "units", "--no-reload"],
        env=cli_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    headers = [line for line in p.stdout.splitlines() if line.startswith("+++ ")]
    assert headers == ["+++ b/units/schedctl-y.service", "+++ b/units/schedctl-y.timer"]


def test_sub_second_durations_are_shown_as_measured(tmp_path: Path) -> None:
    cli = make_cli(tmp_path)
    ok(cli("add", "y", "-s", "@daily", "--", "true"))
    ok(cli("run", "y", "--now"))
    history = ok(cli("history", "y")).out.splitlines()
    last = history[1].split()
    assert re.fullmatch(r"[1-9]\d*ms", last[-1]), history
    report = ok(cli("report")).out
    assert not re.search(r"\b0\.00s\b|\b0s\b", report), report
    assert re.search(r"\b[1-9]\d*ms\b", report), report


def test_check_lists_a_retry_as_a_warning_beside_a_critical_failure(tmp_path: Path) -> None:
    cli = make_cli(tmp_path)
    ok(cli("add", "f", "-s", "@daily", "--retries", "1", "--retry-delay", "1s", "--", "false"))
    assert cli("run", "f", "--now").rc == 1
    result = cli("check", "f")
    assert result.rc == 2, result
    lines = result.out.splitlines()
    assert any(x.startswith("CRITICAL f: last run 2 failed") for x in lines), lines
    retry = [x for x in lines if "a retry happened" in x]
    assert retry and all(x.startswith("WARNING f: ") for x in retry), lines


def test_an_unreachable_database_points_past_db_status(tmp_path: Path) -> None:
    result = make_cli(tmp_path)("--db", "postgresql://x@127.0.0.1:1/none", "db", "status")
    one_line_error(result, 75, "cannot reach the database")
    assert "schedctl db status" not in result.err
    assert "pg_isready" in result.err and "SCHEDCTL_DATABASE_URL" in result.err


def test_a_root_job_started_by_another_user_says_root_once(tmp_path: Path) -> None:
    # nobody cannot enter pytest's tmp_path: a directory of its own, removed afterwards.
    shared = Path(tempfile.mkdtemp(prefix="schedctl-root-wording-"))
    try:
        # Root refuses a database in a directory others can write: opened up for the run only.
        shared.chmod(0o755)
        env = cli_env(shared, SCHEDCTL_DATABASE_URL=f"sqlite:///{shared / 'jobs.db'}")
        for name in ("add", "run"):
            argv = ["add", "r", "-s", "@daily", "--user", "root", "--", "true"]
            if name == "run":
                shared.chmod(0o777)
                for path in shared.rglob("*"):
                    path.chmod(0o777 if path.is_dir() else 0o666)
                argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                        str(binary_for_others()), "run", "r", "--now"]  # fmt: skip
            else:
                argv = [str(BIN), *argv]
            p = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        assert p.returncode != 0
        assert "as root or as root" not in p.stderr
        assert "start `schedctl run` as root" in p.stderr, p.stderr
    finally:
        shutil.rmtree(shared)


def test_json_on_the_changing_commands(tmp_path: Path) -> None:
    cli = make_cli(tmp_path)
    added = json.loads(ok(cli("add", "j", "-s", "@daily", "--json", "--", "true")).out)
    assert added["name"] == "j" and added["created"] is True and added["next_run"]
    edited = json.loads(ok(cli("edit", "j", "--retries", "2", "--json")).out)
    assert edited["retries"] == 2 and edited["changed"] is True and edited["revision"] == 2
    again = json.loads(ok(cli("edit", "j", "--retries", "2", "--json")).out)
    assert again["changed"] is False
    assert json.loads(ok(cli("disable", "j", "--json")).out) == {
        "job": "j", "enabled": False, "changed": True,
    }  # fmt: skip
    assert json.loads(ok(cli("enable", "j", "--json")).out) == {
        "job": "j", "enabled": True, "changed": True,
    }  # fmt: skip
    ok(cli("run", "j", "--now"))
    removed = json.loads(ok(cli("remove", "j", "--yes", "--json")).out)
    assert removed == {"job": "j", "removed": True, "runs_deleted": 0, "runs_kept": 1}


def test_sync_json_lists_the_changes(tmp_path: Path) -> None:
    cli = make_cli(tmp_path)
    ok(cli("add", "j", "-s", "@daily", "--", "true"))
    units = tmp_path / "units"
    out = ok(cli("sync", "systemd", "--unit-dir", str(units), "--dry-run", "--json")).out
    data = json.loads(out)
    assert data["dry_run"] is True and data["unchanged"] == 0
    assert [(c["path"], c["action"]) for c in data["changes"]] == [
        (str(units / "schedctl-j.service"), "create"),
        (str(units / "schedctl-j.timer"), "create"),
    ]
    assert f"+++ b{units}/schedctl-j.timer" in data["diff"]
    assert not units.exists()


def test_run_json_stays_parseable_when_the_job_writes_to_stdout(tmp_path: Path) -> None:
    cli = make_cli(tmp_path)
    ok(cli("add", "j", "-s", "@daily", "--shell", "--", "echo '{\"half\": '; echo to-err >&2"))
    result = cli("run", "j", "--now", "--json")
    assert result.rc == 0, result.err
    data = json.loads(result.out)  # the whole of stdout: one document
    assert data["job"] == "j" and data["status"] == "succeeded" and data["exit_code"] == 0
    assert data["attempt"] == 1 and data["slot"] is None and data["exit_status"] == 0
    assert isinstance(data["run_id"], int) and data["runs"] == [data["run_id"]]
    assert '{"half": ' in result.err and "to-err" in result.err  # the job's output passed through
    failing = cli("add", "f", "-s", "@daily", "--retries", "1", "--retry-delay", "1s", "--",
                  "sh", "-c", "exit 3")  # fmt: skip
    ok(failing)
    result = cli("run", "f", "--now", "--json")
    assert result.rc == 3
    data = json.loads(result.out)
    assert data["status"] == "failed" and data["exit_code"] == 3 and data["attempt"] == 2
    assert len(data["runs"]) == 2 and data["exit_status"] == 3
    logs = json.loads(ok(cli("logs", str(data["run_id"]), "--json")).out)
    assert logs["id"] == data["run_id"] and logs["status"] == "failed" and logs["output"] == ""
    shown = json.loads(ok(cli("logs", "j", "--json")).out)
    assert shown["job"] == "j" and shown["output"] == '{"half": \nto-err\n'
