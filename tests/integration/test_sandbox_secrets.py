"""A real systemd runs a timer-fired job with its secrets, read by reference on the host.

The sandbox's systemd sets up a credentials directory for a unit with `LoadCredential=` but
leaves it empty (even for `SetCredential=`: its nested mount namespaces keep the files from
the service), so here a credential proves only that the unit asks for it and that `run` looks
for it where systemd says; tests/acceptance/test_secrets.py reads one from a directory laid
out as systemd lays it out.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
from cli_helpers import BIN, make_cli, ok, run_rows
from pgserver import PgServer
from sandbox import Sandbox, binds, sandbox_files

pytestmark = pytest.mark.postgres

FILE_SECRET = "file-secret=välue\nsecond line"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_a_timer_fired_run_receives_its_file_secret_and_looks_for_its_credential(
    pg: PgServer, pg_url: str, tmp_path: Path
) -> None:
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url, TZ="UTC")
    ok(cli("db", "upgrade"))
    ok(
        cli(
            "add",
            "files",
            "-s",
            "* * * * *",
            "--tz",
            "UTC",
            "--secret",
            "TOKEN=file:token",
            "--",
            "/bin/sh",
            "-c",
            'printf %s "$TOKEN" | sha256sum; echo "token $TOKEN"',
        )
    )
    ok(cli("add", "creds", "-s", "* * * * *", "--tz", "UTC",
           "--secret", "API_KEY=credential:api.key", "--", "/bin/true"))  # fmt: skip
    files = sandbox_files(pg, pg_url)
    files["etc/credstore/api.key"] = ("credential-value", 0o600)
    files["etc/schedctl/secrets/token"] = (FILE_SECRET + "\n", 0o600)
    box = Sandbox("sdsecrets", "systemd", pg.sockdir, files, binds())
    try:
        box.wait_running()
        box.exec(str(BIN), "sync", "systemd", "--schedctl", str(BIN))
        unit = box.path("/etc/systemd/system/schedctl-creds.service").read_text()
        assert "\nLoadCredential=api.key\n" in unit, unit
        verify = box.exec("systemd-analyze", "verify", "/etc/systemd/system/schedctl-creds.service",
                          check=False)  # fmt: skip
        assert "LoadCredential" not in verify.stderr, verify.stderr
        # Let the timer fire on its own (every 10 s rather than each minute).
        path = box.path("/etc/systemd/system/schedctl-files.timer")
        lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("OnCalendar=")]
        at = lines.index("[Timer]") + 1
        path.write_text("\n".join([*lines[:at], "OnCalendar=*-*-* *:*:00/10", *lines[at:]]) + "\n")
        box.exec("systemctl", "daemon-reload")
        box.exec("systemctl", "restart", "schedctl-files.timer")
        box.exec("systemctl", "start", "schedctl-creds.service", check=False, timeout=60)
        deadline = time.monotonic() + 60
        rows: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            rows = [r for r in run_rows(pg_url, "files") if r["status"] != "running"]
            if rows:
                break
            time.sleep(1)
        journal = box.exec("journalctl", "-u", "schedctl-files.service", "--no-pager").stdout
    finally:
        box.close()
    assert rows, journal
    row = rows[0]
    assert (row["trigger"], row["status"]) == ("timer", "succeeded"), (row["output_tail"], journal)
    tail = str(row["output_tail"])
    assert sha(FILE_SECRET) in tail and "token ***\n" in tail, tail
    assert not any(v in tail for v in (FILE_SECRET, *FILE_SECRET.splitlines()))
    # systemd gave `run` the unit's credentials directory, and `run` looked there.
    creds = run_rows(pg_url, "creds")
    assert creds, "the credential job never ran"
    for cred in creds:
        assert (cred["trigger"], cred["status"], cred["exit_code"]) == ("timer", "failed", 79)
        assert "/run/credentials/schedctl-creds.service/api.key" in str(cred["output_tail"])
