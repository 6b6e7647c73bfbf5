"""The run path's libpq session against a real PostgreSQL server, with psycopg as the oracle."""

from __future__ import annotations

import ctypes.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pgserver import free_port

from schedctl.clock import SystemClock
from schedctl.config import parse_database_url
from schedctl.db import libpq
from schedctl.db.connector import PG_CONNECT_ARGS, PG_SESSION_OPTIONS
from schedctl.db.repository import open_repository
from schedctl.errors import ConfigError, ExitCode
from schedctl.models import MIN_HEARTBEAT_REPLY_SECONDS


def session(url: str, **extra: str) -> libpq.Connection:
    return libpq.Connection(
        {"dbname": url, **PG_CONNECT_ARGS, "options": PG_SESSION_OPTIONS,
         "client_encoding": "UTF8", **extra}
    )  # fmt: skip


def oracle(url: str) -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(url, autocommit=True, **PG_CONNECT_ARGS, options=PG_SESSION_OPTIONS)


# Every type the decoder knows, NULLs among them, read by both clients.
TYPED = (
    "SELECT true, false, 'x'::char, 'pg_class'::name, 'text ünï \"q\" \\ b'::text,"
    " 'pad'::char(5), 'v'::varchar, 9223372036854775807::int8, (-32768)::int2, 7::int4,"
    " 'pg_class'::regclass::oid, 1.5::float4, 1e-300::float8, 'NaN'::float8,"
    ' 12345678901234567890.123456789::numeric, \'{"a": [1, null, "x"]}\'::json,'
    " '{\"b\": {\"c\": 2.5}}'::jsonb, '2024-02-29'::date, '2026-03-29 01:59:59.999999'::timestamp,"
    " '2026-10-25 00:30:00.5+00'::timestamptz, '0099-01-01 00:00:00+00'::timestamptz,"
    " NULL::int4, NULL::text, NULL::timestamptz, NULL::bool"
)


def test_decodes_every_type_as_psycopg_does(pg_url: str) -> None:
    with session(pg_url) as mine, oracle(pg_url) as theirs:
        got = mine.execute(TYPED).fetchone()
        want = theirs.execute(TYPED).fetchone()
    assert got is not None and want is not None
    nan_at = 13
    assert got[nan_at] != got[nan_at] and want[nan_at] != want[nan_at]  # NaN, both
    assert got[:nan_at] + got[nan_at + 1 :] == want[:nan_at] + want[nan_at + 1 :]
    assert [type(v) for v in got] == [type(v) for v in want]
    assert got[19].tzinfo is UTC  # timestamptz arrives in UTC (sessions run in UTC)


PARAMS: list[tuple[str, Any]] = [
    ("bool", True),
    ("bool", False),
    ("int8", -(2**63)),
    ("int4", 2**31 - 1),
    ("float8", 0.1),
    ("float8", -1.5e300),
    ("text", "quote ' double \" backslash \\ brace { } comma , ünï 🙂"),
    ("text", ""),
    ("text", "NULL"),
    ("timestamptz", datetime(2026, 3, 29, 0, 59, 59, 999999, tzinfo=UTC)),
    (
        "timestamptz",
        datetime(2026, 11, 22, 12, 0, tzinfo=timezone(timedelta(hours=-3, minutes=-30))),
    ),
    ("int4[]", [1, 2, 3]),
    ("int4[]", []),
    ("float8[]", [1e9, 0.5, -2.25]),
    ("text[]", ['a"b', "c\\d", None, "e,f", "{g}", "NULL", ""]),
    ("int4", None),
]


@pytest.mark.parametrize(
    ("cast", "value"), PARAMS, ids=[f"{c}-{i}" for i, (c, _) in enumerate(PARAMS)]
)
def test_parameters_reach_the_server_as_psycopg_sends_them(
    pg_url: str, cast: str, value: Any
) -> None:
    # The server's text of what arrived, for every value; the decoded value too for scalars
    # (arrays are only ever sent, never read back, by schedctl).
    scalar = not isinstance(value, list)
    sql = f"SELECT (%s::{cast})::text" + (f", %s::{cast}" if scalar else "")
    params = (value, value) if scalar else (value,)
    with session(pg_url) as mine, oracle(pg_url) as theirs:
        got = mine.execute(sql, params).fetchone()
        want = theirs.execute(sql, params).fetchone()
    assert got == want
    if scalar:
        assert got is not None and got[1] == value


def test_untyped_parameters_take_their_type_from_the_statement(pg_url: str) -> None:
    at = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    with session(pg_url) as db:
        db.execute("CREATE TEMP TABLE t (id int, at timestamptz, ok bool, note text)")
        inserted = db.execute("INSERT INTO t VALUES (%s, %s, %s, %s), (%s, %s, %s, %s)",
                              (1, at, True, "a", 2, None, False, None))  # fmt: skip
        assert inserted.rowcount == 2
        assert db.execute("SELECT id FROM t WHERE at = %s", (at,)).fetchall() == [(1,)]
        assert db.execute("SELECT id FROM t WHERE id = ANY(%s)", ([2, 5],)).fetchall() == [(2,)]
        assert db.execute("UPDATE t SET ok = NOT ok WHERE id > %s", (0,)).rowcount == 2
        assert db.execute("SELECT pg_try_advisory_lock(%s, %s)", (3, 4)).fetchone() == (True,)


def test_nul_is_refused_before_anything_is_sent(pg_url: str) -> None:
    with session(pg_url) as db:
        with pytest.raises(libpq.PgError, match="NUL") as info:
            db.execute("SELECT %s::text", ("a\x00b",))
        assert info.value.sqlstate == "22021"
        assert db.execute("SELECT 1").fetchone() == (1,)  # the session is still good


def test_statement_errors_carry_their_sqlstate_and_leave_the_session_usable(pg_url: str) -> None:
    with session(pg_url) as db:
        with pytest.raises(libpq.PgError) as info:
            db.execute("SELECT * FROM no_such_table")
        assert not isinstance(info.value, libpq.PgOperationalError)
        assert info.value.sqlstate == libpq.UNDEFINED_TABLE
        assert str(info.value) == 'relation "no_such_table" does not exist'
        with pytest.raises(libpq.PgError, match="division by zero"):
            db.execute("SELECT 1 / %s::int", (0,))
        assert db.execute("SELECT 2").fetchone() == (2,)
        with pytest.raises(libpq.PgError, match="no decoder for PostgreSQL type OID 1186"):
            db.execute("SELECT interval '1 day'")


def test_a_terminated_session_is_an_operational_error(pg_url: str) -> None:
    with session(pg_url) as db, oracle(pg_url) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (db.backend_pid,))
        time.sleep(0.2)
        with pytest.raises(libpq.PgOperationalError):
            db.execute("SELECT 1")
        assert db.closed
    closed = session(pg_url)
    closed.close()
    with pytest.raises(libpq.PgOperationalError, match="closed"):
        closed.execute("SELECT 1")


def test_connection_failures_say_what_libpq_said(pg_url: str) -> None:
    with pytest.raises(libpq.PgOperationalError, match="Connection refused"):
        session(f"postgresql://u:pw@127.0.0.1:{free_port()}/x")


def test_keywords_override_the_url_and_session_settings_apply(pg_url: str) -> None:
    with session(pg_url + "?application_name=from-url", application_name="kw") as db:
        row = db.execute(
            "SELECT current_setting('application_name'), current_setting('TimeZone'),"
            " current_setting('tcp_keepalives_idle'), pg_backend_pid()"
        ).fetchone()
        assert row == ("kw", "UTC", "20", db.backend_pid)


def test_psycopgs_own_libpq_is_used_and_the_system_one_is_the_fallback() -> None:
    assert "psycopg_binary.libs" in str(libpq.lib()._name)
    with pytest.raises(libpq.LibpqMissingError, match="nonexistent"):
        libpq.load(["/nonexistent/libpq.so.5"])
    if ctypes.util.find_library("pq") is None:
        pytest.skip("no system libpq on this machine")
    assert libpq.load(["/nonexistent/libpq.so.5", "libpq.so.5"])._name == "libpq.so.5"


def test_a_missing_libpq_is_a_config_error_with_the_fix(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing() -> None:
        raise libpq.LibpqMissingError("libpq.so.5: cannot open shared object file")

    monkeypatch.setattr(libpq, "lib", missing)
    with pytest.raises(ConfigError, match="install the libpq5 package") as info:
        open_repository(parse_database_url(pg_url), SystemClock(), "schedctl run")
    assert info.value.exit_code == ExitCode.CONFIG


# `%s` where it is text, not a placeholder: each statement's value, read by both clients; the
# oracle's statement is the same with its own placeholders written out as values.
LITERALS: list[tuple[str, tuple[Any, ...], str]] = [
    ("SELECT '%s', %s::text", ("x",), "SELECT '%%s', 'x'::text"),
    ("SELECT E'it\\'s %s', %s::int", (7,), "SELECT E'it\\'s %%s', 7::int"),
    ("SELECT 'a''%s', %s::int", (7,), "SELECT 'a''%%s', 7::int"),
    ('SELECT 1 AS "%s", %s::int', (7,), 'SELECT 1 AS "%%s", 7::int'),
    ("SELECT $$ %s $$, $q$ '%s $$ $q$, %s::int", (7,), "SELECT $$ %%s $$, $q$ '%%s $$ $q$, 7::int"),
    ("SELECT 1 -- %s\n + %s::int", (7,), "SELECT 1 -- %%s\n + 7::int"),
    ("SELECT /* %s /* %s */ */ %s::int", (7,), "SELECT /* %%s /* %%s */ */ 7::int"),
    # Outside literals `%%` is `%`, as for psycopg; inside them text is sent as written.
    ("SELECT 7 %% %s::int, 'a%'", (4,), "SELECT 7 %% 4::int, 'a%%'"),
]


@pytest.mark.parametrize(("sql", "params", "plain"), LITERALS, ids=range(len(LITERALS)))
def test_percent_s_inside_literals_identifiers_and_comments_is_text(
    pg_url: str, sql: str, params: tuple[Any, ...], plain: str
) -> None:
    with session(pg_url) as mine, oracle(pg_url) as theirs:
        got = mine.execute(sql, params)
        want = theirs.execute(plain, ())
        assert got.fetchall() == want.fetchall()


def test_malformed_placeholders_and_unterminated_quotes_are_refused_before_sending(
    pg_url: str,
) -> None:
    with session(pg_url) as db:
        with pytest.raises(ValueError, match="unsupported placeholder %d"):
            db.execute("SELECT %d", (1,))
        for sql in ("SELECT 'a %s", 'SELECT "a', "SELECT /* %s", "SELECT $x$ %s"):
            with pytest.raises(ValueError, match="unterminated"):
                db.execute(sql, ("v",))
        assert db.execute("SELECT 1").fetchone() == (1,)


BLOBS = [b"", b"\x00\x01\xff", b"b'..'", bytearray(b"\\x41"), memoryview(b"%s\x00")]


@pytest.mark.parametrize("value", BLOBS, ids=range(len(BLOBS)))
def test_bytes_go_as_bytea_and_bytea_comes_back_as_bytes(pg_url: str, value: Any) -> None:
    sql = "SELECT %s::bytea, length(%s::bytea), (%s::bytea)::text, %s"
    params = (value, value, value, value)
    with session(pg_url) as mine, oracle(pg_url) as theirs:
        got = mine.execute(sql, params).fetchone()
        want = theirs.execute(sql, params).fetchone()
        assert got == want
        assert got is not None and got[0] == bytes(value) and type(got[3]) is bytes
        mine.execute("SET bytea_output = escape")
        assert mine.execute("SELECT %s::bytea", (value,)).fetchone() == (bytes(value),)


def test_infinite_timestamps_and_dates_map_to_the_ends_of_pythons_range(pg_url: str) -> None:
    with session(pg_url) as db:
        row = db.execute(
            "SELECT 'infinity'::timestamptz, '-infinity'::timestamptz, 'infinity'::timestamp,"
            " '-infinity'::timestamp, 'infinity'::date, '-infinity'::date"
        ).fetchone()
        assert row == (
            datetime.max.replace(tzinfo=UTC), datetime.min.replace(tzinfo=UTC),
            datetime.max, datetime.min, date.max, date.min,  # noqa: DTZ901 - `timestamp` is naive
        )  # fmt: skip
        now = db.execute("SELECT now()").fetchone()
        assert now is not None and row[1] < now[0] < row[0]  # they sort as in PostgreSQL
        for sql in ("SELECT '0044-03-15 BC'::date", "SELECT '10000-01-01'::timestamptz"):
            with pytest.raises(libpq.PgError, match="outside what Python can hold") as info:
                db.execute(sql)
            assert info.value.sqlstate == "22008"
            assert not isinstance(info.value, libpq.PgOperationalError)


@pytest.mark.parametrize("params", ["ab", b"ab", 5, {"a": 1}], ids=["str", "bytes", "int", "dict"])
def test_a_parameter_list_that_is_not_a_sequence_is_a_type_error(pg_url: str, params: Any) -> None:
    with session(pg_url) as db:
        with pytest.raises(TypeError, match="list or tuple"):
            db.execute("SELECT %s::text, %s::text", params)
        with pytest.raises(TypeError, match="2 placeholders but 1 parameters"):
            db.execute("SELECT %s::text, %s::text", ("a",))
        assert db.execute("SELECT 1").fetchone() == (1,)


def test_a_protocol_violation_on_a_live_session_is_not_an_outage(pg_url: str) -> None:
    # A statement that numbers its own parameters is counted by the server: it wants two.
    with session(pg_url) as db:
        with pytest.raises(libpq.PgError) as info:
            db.execute("SELECT $1::text, $2::text", ("a",))
        assert info.value.sqlstate == "08P01"
        assert not isinstance(info.value, libpq.PgOperationalError)
        assert not db.closed and db.execute("SELECT $1::int", (1,)).fetchone() == (1,)
        with pytest.raises(ValueError, match="not both"):
            db.execute("SELECT %s::text, $2::text", ("a", "b"))


def test_tcp_user_timeout_applies_on_both_ends_of_the_session(pg_url: str) -> None:
    with session(pg_url) as db:
        # The server's end of this session's socket, in ms.
        row = db.execute("SELECT current_setting('tcp_user_timeout')").fetchone()
        sock = socket.socket(fileno=os.dup(db._pq.PQsocket(db._conn)))
        try:
            client_ms = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
        finally:
            sock.close()
    want = int(MIN_HEARTBEAT_REPLY_SECONDS * 1000)
    assert row == (str(want),)
    assert client_ms == want


def test_a_blocking_call_on_a_black_holed_session_fails_within_the_reply_bound() -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root, unshare and ip to take loopback down in a network namespace")
    done = subprocess.run(
        ["unshare", "--net", sys.executable, str(Path(__file__).with_name("blackhole_driver.py"))],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["outcome"].startswith("PgOperationalError"), result
    # The kernel gives up TCP_USER_TIMEOUT after the last acknowledgement, and retransmission
    # timers round it up by at most a backoff step.
    assert result["elapsed"] < MIN_HEARTBEAT_REPLY_SECONDS * 2, result
