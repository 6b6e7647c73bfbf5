"""The embedded database's schema made on first use: whole or not at all, once for many users."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from cli_helpers import BIN, cli_env, make_cli, ok, one_line_error

from schedctl.db.version import HEAD


def sqlite_objects(db: Path) -> list[tuple[str, str]]:
    lite = sqlite3.connect(db)
    try:
        return sorted(lite.execute("SELECT type, name FROM sqlite_master").fetchall())
    finally:
        lite.close()


def revision(db: Path) -> str:
    lite = sqlite3.connect(db)
    try:
        return str(lite.execute("SELECT version_num FROM alembic_version").fetchone()[0])
    finally:
        lite.close()


def test_concurrent_first_users_of_a_fresh_data_directory_all_succeed(tmp_path: Path) -> None:
    failures = []
    for trial in range(4):
        env = cli_env(tmp_path, SCHEDCTL_DATABASE_URL="")
        env["SCHEDCTL_DATA_DIR"] = str(tmp_path / f"fresh{trial}")
        procs = [
            subprocess.Popen([str(BIN), "list"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
            for _ in range(10)
        ]  # fmt: skip
        for p in procs:
            _, err = p.communicate(timeout=120)
            if p.returncode != 0:
                failures.append((trial, p.returncode, err))
        assert revision(tmp_path / f"fresh{trial}" / "schedctl.db") == HEAD
    assert failures == []


def test_a_full_disk_on_first_use_leaves_nothing_half_made(tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill: {mounted.stderr.strip()}")
    try:
        full = make_cli(tmp_path, SCHEDCTL_DATABASE_URL="", SCHEDCTL_DATA_DIR=str(small / "d"))
        disk_full = full("list")
        one_line_error(disk_full, 75, "database or disk is full")
        assert "free space on its file system" in disk_full.err
        assert sqlite_objects(small / "d" / "schedctl.db") == []  # rolled back whole
        roomy = tmp_path / "roomy"
        roomy.mkdir(mode=0o700)
        shutil.copytree(small / "d", roomy / "d", symlinks=True)
    finally:
        subprocess.run(["umount", str(small)], check=True)
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL="", SCHEDCTL_DATA_DIR=str(roomy / "d"))
    assert "no jobs" in ok(cli("list")).out
    ok(cli("add", "x", "-s", "@daily", "--", "true"))
    assert "already at revision" in ok(cli("db", "upgrade")).out
    assert revision(roomy / "d" / "schedctl.db") == HEAD


# What an earlier schedctl left when the disk filled during its first use: a revision table
# without a revision, and the first table.
HALF_MADE = (
    "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
    "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num));"
    "CREATE TABLE jobs (id INTEGER NOT NULL, name VARCHAR(63) NOT NULL, PRIMARY KEY (id));"
)


def half_made(db: Path, extra: str = "") -> None:
    db.parent.mkdir(mode=0o700, parents=True)
    lite = sqlite3.connect(db, isolation_level=None)
    lite.executescript(HALF_MADE + extra)
    lite.close()
    db.chmod(0o600)


@pytest.mark.parametrize("first", ["list", "db upgrade", "add"])
def test_a_half_made_schema_left_by_an_earlier_version_is_made_whole(
    tmp_path: Path, first: str
) -> None:
    db = tmp_path / "data" / "schedctl.db"
    half_made(db)
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL="")
    status = cli("db", "status")
    assert status.rc == 5 and "run `schedctl db upgrade`" in status.err, status.err
    args = first.split() + (["x", "-s", "@daily", "--", "true"] if first == "add" else [])
    ok(cli(*args))
    ok(cli("add", "y", "-s", "@daily", "--", "true"))
    assert ok(cli("db", "status")).rc == 0
    assert revision(db) == HEAD


def test_a_revisionless_database_with_rows_is_left_alone_with_what_to_do(tmp_path: Path) -> None:
    db = tmp_path / "data" / "schedctl.db"
    half_made(db, "INSERT INTO jobs VALUES (1, 'kept');")
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL="")
    for args in (("list",), ("db", "upgrade")):
        result = cli(*args)
        one_line_error(result, 5, "tables (jobs) with rows but no schedctl schema revision")
        assert f"mv {db} {db}.old" in result.err
    lite = sqlite3.connect(db)
    assert lite.execute("SELECT name FROM jobs").fetchall() == [("kept",)]  # untouched
    lite.close()


def test_concurrent_upgrades_of_a_fresh_postgresql_database_all_succeed(
    pg_url: str, tmp_path: Path
) -> None:
    env = cli_env(tmp_path, SCHEDCTL_DATABASE_URL=pg_url)
    procs = [
        subprocess.Popen([str(BIN), "db", "upgrade"], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(10)
    ]  # fmt: skip
    failures = []
    for p in procs:
        _, err = p.communicate(timeout=120)
        if p.returncode != 0:
            failures.append((p.returncode, err))
    assert failures == []
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url)
    assert ok(cli("db", "status")).rc == 0


def test_a_schema_left_part_way_into_an_upgrade_says_what_to_do(tmp_path: Path) -> None:
    # An earlier schedctl ran each statement of an upgrade on its own: interrupted after the
    # newest migration's first statement, the file is stamped with the revision before it.
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL="")
    ok(cli("add", "kept", "-s", "@daily", "--", "true"))
    db = tmp_path / "data" / "schedctl.db"
    lite = sqlite3.connect(db, isolation_level=None)
    lite.executescript("DROP TABLE hosts; UPDATE alembic_version SET version_num = '0005';")
    lite.close()
    for args in (("list",), ("db", "upgrade")):
        result = cli(*args)
        one_line_error(result, 5, "is at schema revision 0005 but already holds part of")
        assert "duplicate column name: placement" in result.err
    assert revision(db) == "0005"  # left as it was
