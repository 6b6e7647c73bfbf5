"""A small PostgreSQL session on libpq through ctypes, for the commands that start most often.

`schedctl run` starts at every timer firing on every host, and `check` every minute. Importing
psycopg costs ~14 times a bare Python start (type registries, asyncio, importlib.metadata); the
library it wraps takes a few milliseconds to load. This module speaks to libpq directly with
text parameters and text results, for the handful of plain statements those commands send.
Everything else (the ORM store, migrations, pools) stays on psycopg.

Statements use psycopg's `%s` placeholders (`%%` for a `%` outside literals) or number their
own ($1, $2, ...); parameters must be a list or tuple. `bytes` travel as bytea and bytea reads back as bytes. PostgreSQL's
`infinity` and `-infinity` dates and timestamps read as the ends of Python's range (date.max,
datetime.max, in UTC for timestamptz); other values Python cannot hold (BC, after 9999) raise
PgError with SQLSTATE 22008.

libpq is the copy psycopg[binary] ships, else the system's libpq.so.5.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

# Result statuses (libpq-fe.h).
_COMMAND_OK, _TUPLES_OK = 1, 2
_CONNECTION_OK = 0
_PG_DIAG_SQLSTATE, _PG_DIAG_MESSAGE_PRIMARY = ord("C"), ord("M")
# SQLSTATE classes psycopg also reports as OperationalError: the session or server, not the SQL.
_OPERATIONAL = ("08", "53", "54", "55", "57", "58")
# Except a protocol violation on a session that is still up: the client sent something wrong
# (a statement's parameters and placeholders disagree), which no reconnect would cure.
_PROTOCOL_VIOLATION = "08P01"
UNDEFINED_TABLE = "42P01"
_DATETIME_OVERFLOW = "22008"
_BYTEA = 17


class PgError(Exception):
    """A statement the server refused; `sqlstate` says why (None when no reply arrived)."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class PgOperationalError(PgError):
    """The session cannot go on: not connected, connection lost, server shutting down."""


class LibpqMissingError(Exception):
    """Neither psycopg's libpq nor the system's could be loaded."""

    def advice(self) -> str:
        """Return the one-line error for the user: what is missing and how to get it."""
        return (
            f"cannot load libpq, PostgreSQL's client library ({self}); reinstall schedctl "
            "(install.sh) or install the libpq5 package"
        )


def _bundled() -> list[str]:
    """Return psycopg[binary]'s own libpq, if installed next to schedctl's dependencies."""
    for entry in sys.path:
        libs = os.path.join(entry or ".", "psycopg_binary.libs")
        try:
            names = os.listdir(libs)
        except OSError:
            continue
        return [os.path.join(libs, n) for n in sorted(names) if n.startswith("libpq")]
    return []


def load(candidates: Sequence[str]) -> ctypes.CDLL:
    """Load the first libpq of `candidates` that loads; raise LibpqMissingError if none does."""
    errors = []
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            errors.append(str(e))
            continue
        _declare(lib)
        return lib
    raise LibpqMissingError("; ".join(errors) or "libpq.so.5 not found")


# void (*)(void *arg, const char *message): libpq hands its notices and warnings to this.
_NOTICE_PROCESSOR = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p)
# Notices kept per session: enough for the one that explains a broken session.
_KEPT_NOTICES = 4


def _declare(lib: ctypes.CDLL) -> None:
    p, i, s = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
    signatures: dict[str, tuple[Any, list[Any]]] = {
        "PQconnectdbParams": (p, [ctypes.POINTER(s), ctypes.POINTER(s), i]),
        "PQstatus": (i, [p]),
        "PQerrorMessage": (s, [p]),
        "PQbackendPID": (i, [p]),
        "PQfinish": (None, [p]),
        "PQexecParams": (p, [p, s, i, p, ctypes.POINTER(s), p, p, i]),
        "PQresultStatus": (i, [p]),
        "PQresultErrorField": (s, [p, i]),
        "PQntuples": (i, [p]),
        "PQnfields": (i, [p]),
        "PQftype": (ctypes.c_uint, [p, i]),
        "PQfname": (s, [p, i]),
        "PQgetisnull": (i, [p, i, i]),
        "PQgetvalue": (s, [p, i, i]),
        "PQcmdTuples": (s, [p]),
        "PQclear": (None, [p]),
        # Asynchronous sending, for statements that must answer within a deadline.
        "PQsendQueryParams": (i, [p, s, i, p, ctypes.POINTER(s), p, p, i]),
        "PQsocket": (i, [p]),
        "PQconsumeInput": (i, [p]),
        "PQisBusy": (i, [p]),
        "PQgetResult": (p, [p]),
        "PQconninfoParse": (p, [s, ctypes.POINTER(p)]),
        "PQconninfoFree": (None, [p]),
        "PQfreemem": (None, [p]),
        "PQsetNoticeProcessor": (p, [p, _NOTICE_PROCESSOR, p]),
    }
    for name, (restype, argtypes) in signatures.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes


@functools.cache
def lib() -> ctypes.CDLL:
    """Return libpq (psycopg's, else the system's), loaded on first use."""
    return load([*_bundled(), "libpq.so.5"])


class _ConninfoOption(ctypes.Structure):
    _fields_ = [
        ("keyword", ctypes.c_char_p),
        ("envvar", ctypes.c_char_p),
        ("compiled", ctypes.c_char_p),
        ("val", ctypes.c_char_p),
        ("label", ctypes.c_char_p),
        ("dispchar", ctypes.c_char_p),
        ("dispsize", ctypes.c_int),
    ]


def conninfo_parse(conninfo: str) -> dict[str, str]:
    """Return the keywords libpq reads from a URI or `key=value` string (PQconninfoParse).

    Only what the string itself sets: no environment variables, service files or defaults.
    Raise PgError with libpq's own message when it does not parse; that message may quote
    the string, password and all.
    """
    pq = lib()
    error = ctypes.c_void_p()
    options = pq.PQconninfoParse(conninfo.encode(), ctypes.byref(error))
    if not options:
        raw = ctypes.cast(error, ctypes.c_char_p).value if error.value else None
        message = raw.decode("utf-8", "replace") if raw else ""
        if error.value:
            pq.PQfreemem(error)
        raise PgError(message.strip() or "out of memory parsing a connection string")
    try:
        found: dict[str, str] = {}
        array = ctypes.cast(options, ctypes.POINTER(_ConninfoOption))
        i = 0
        while array[i].keyword is not None:
            if array[i].val is not None:
                found[array[i].keyword.decode()] = array[i].val.decode("utf-8", "replace")
            i += 1
        return found
    finally:
        pq.PQconninfoFree(options)


def _decimal(text: str) -> Any:
    from decimal import Decimal  # rare here (sums of integers): not worth loading every start

    return Decimal(text)


def _bool(text: str) -> bool:
    return text == "t"


def _bytea(text: str) -> bytes:
    if text.startswith("\\x"):
        return bytes.fromhex(text[2:])
    # bytea_output = 'escape': printable bytes as themselves, \\ and \ooo for the rest.
    out, i = bytearray(), 0
    raw = text.encode("latin-1")
    while i < len(raw):
        if raw[i] == 0x5C and raw[i + 1 : i + 2] == b"\\":
            out.append(0x5C)
            i += 2
        elif raw[i] == 0x5C:
            out.append(int(raw[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return bytes(out)


def _out_of_range(kind: str, text: str) -> PgError:
    return PgError(
        f"{kind} {text!r} is outside what Python can hold (years 1 to 9999)", _DATETIME_OVERFLOW
    )


def _date(text: str) -> date:
    # PostgreSQL's infinities become the ends of Python's range, which sort the same way
    # (psycopg documents this adaptation; by default it refuses them).
    if text == "infinity":
        return date.max
    if text == "-infinity":
        return date.min
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise _out_of_range("date", text) from None


def _timestamp(text: str) -> datetime:
    # `timestamp` has no zone, and Python's naive datetimes are its counterpart.
    if text == "infinity":
        return datetime.max  # noqa: DTZ901 - a `timestamp` is naive
    if text == "-infinity":
        return datetime.min  # noqa: DTZ901 - a `timestamp` is naive
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise _out_of_range("timestamp", text) from None


def _timestamptz(text: str) -> datetime:
    if text == "infinity":
        return datetime.max.replace(tzinfo=UTC)
    if text == "-infinity":
        return datetime.min.replace(tzinfo=UTC)
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise _out_of_range("timestamp", text) from None


# Text output of the types these commands read, by type OID (pg_type.dat). Sessions run with
# TimeZone=UTC and DateStyle ISO (libpq's default), so timestamps parse with fromisoformat.
_DECODERS: dict[int, Callable[[str], Any]] = {
    16: _bool,
    _BYTEA: _bytea,
    18: str, 19: str, 25: str, 1042: str, 1043: str,  # char, name, text, bpchar, varchar
    20: int, 21: int, 23: int, 26: int,  # int8, int2, int4, oid
    700: float, 701: float,  # float4, float8
    1700: _decimal,
    114: json.loads, 3802: json.loads,  # json, jsonb: decoded, as psycopg does
    1082: _date,
    1114: _timestamp, 1184: _timestamptz,  # timestamp, timestamptz
}  # fmt: skip


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        # bytea's hex input form; the parameter is sent typed bytea (execute).
        return "\\x" + bytes(value).hex()
    if isinstance(value, (list, tuple)):
        return "{" + ",".join("NULL" if v is None else _array_item(v) for v in value) + "}"
    text = str(value)
    if "\x00" in text:
        # libpq takes C strings: a NUL would silently cut the value short.
        raise PgError("PostgreSQL text cannot contain NUL (0x00) characters", "22021")
    return text


def _array_item(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError("bytes inside an array parameter are not supported; send bytea[] as text")
    text = _text(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_IDENT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_$")


def _numbered(sql: str) -> tuple[str, int | None]:
    """Turn psycopg's `%s` placeholders into libpq's $1, $2, ... and `%%` into `%`.

    Return the statement and its number of `%s` placeholders, or None when it numbers its
    own ($1, $2, ...: the server then checks the count). Only what stands outside string
    literals ('...', E'...', $tag$...$tag$), quoted identifiers and comments counts: those are
    sent as written. Any other `%` outside them is refused, as psycopg does. Sessions keep
    PostgreSQL's default standard_conforming_strings=on: a backslash in '...' is a character.
    """
    out: list[str] = []
    count = 0
    own_numbers = False
    i, n, start = 0, len(sql), 0
    while i < n:
        c = sql[i]
        if c == "%":
            out.append(sql[start:i])
            nxt = sql[i + 1 : i + 2]
            if nxt == "s":
                count += 1
                out.append(f"${count}")
            elif nxt == "%":
                out.append("%")
            else:
                raise ValueError(
                    f"unsupported placeholder %{nxt} at offset {i}: use %s, or %% for a literal %"
                )
            i += 2
            start = i
            continue
        if c == "'":
            escapes = i > 0 and sql[i - 1] in "eE" and (i < 2 or sql[i - 2] not in _IDENT)
            i = _quoted_end(sql, i, "'", escapes)
        elif c == '"':
            i = _quoted_end(sql, i, '"', False)
        elif c == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif c == "/" and sql.startswith("/*", i):
            i = _comment_end(sql, i)
        elif c == "$" and (i == 0 or sql[i - 1] not in _IDENT):
            own_numbers = own_numbers or sql[i + 1 : i + 2].isdigit()
            i = _dollar_end(sql, i)
        else:
            i += 1
    out.append(sql[start:])
    if own_numbers:
        if count:
            raise ValueError("a statement numbers its parameters ($1) or uses %s, not both")
        return "".join(out), None
    return "".join(out), count


def _unterminated(what: str, at: int) -> ValueError:
    return ValueError(f"unterminated {what} starting at offset {at} of the statement")


def _quoted_end(sql: str, at: int, quote: str, escapes: bool) -> int:
    """Return the index after the literal or identifier opened by `quote` at `at`."""
    i = at + 1
    while i < len(sql):
        c = sql[i]
        if escapes and c == "\\":
            i += 2
        elif c == quote:
            if sql[i + 1 : i + 2] != quote:  # a doubled quote stands for itself
                return i + 1
            i += 2
        else:
            i += 1
    raise _unterminated("quoted literal or identifier", at)


def _comment_end(sql: str, at: int) -> int:
    """Return the index after the (nestable) /* */ comment opened at `at`."""
    depth, i = 0, at
    while i < len(sql):
        if sql.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif sql.startswith("*/", i):
            depth, i = depth - 1, i + 2
            if depth == 0:
                return i
        else:
            i += 1
    raise _unterminated("/* comment", at)


def _dollar_end(sql: str, at: int) -> int:
    """Return the index after the $tag$...$tag$ literal at `at`, or after a lone `$`/`$1`."""
    j = at + 1
    if j < len(sql) and (sql[j].isdigit()):
        return j  # $1: a positional parameter, not a quote
    while j < len(sql) and sql[j] in _IDENT and sql[j] != "$":
        j += 1
    if j >= len(sql) or sql[j] != "$":
        return at + 1
    tag = sql[at : j + 1]
    end = sql.find(tag, j + 1)
    if end < 0:
        raise _unterminated(f"dollar-quoted literal {tag}", at)
    return end + len(tag)


class Result:
    """The rows and row count of one statement, decoded from text."""

    def __init__(
        self, rows: list[tuple[Any, ...]], rowcount: int, columns: tuple[str, ...] = ()
    ) -> None:
        self.rows = rows
        self.rowcount = rowcount
        self.columns = columns

    def fetchone(self) -> tuple[Any, ...] | None:
        """Return the first row, or None."""
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        """Return every row."""
        return self.rows


class Connection:
    """One autocommit session: each execute() is its own transaction, as with psycopg autocommit."""

    def __init__(self, params: Mapping[str, object], expand_dbname: bool = True) -> None:
        """Connect with libpq keywords (values as text); a URL in `dbname` is expanded if asked."""
        pq = lib()
        # expand_dbname=1: a URL in `dbname` is parsed; keywords after it override it.
        n = len(params) + 1
        keys = (ctypes.c_char_p * n)(*[k.encode() for k in params], None)
        values = (ctypes.c_char_p * n)(*[str(v).encode() for v in params.values()], None)
        self._pq = pq
        self._conn: int | None = pq.PQconnectdbParams(keys, values, int(expand_dbname))
        if self._conn is None:
            raise PgOperationalError("out of memory allocating a PostgreSQL connection")
        if pq.PQstatus(self._conn) != _CONNECTION_OK:
            message = self._error()
            self.close()
            raise PgOperationalError(message)
        self.backend_pid = int(pq.PQbackendPID(self._conn))
        # libpq's default writes notices to stderr, where they would break the one-line error
        # rule: above all the server's FATAL goodbye when it ends the session while no reply
        # is awaited, after which libpq only says "server closed the connection unexpectedly".
        # Kept instead, to name the cause when the session turns out broken.
        self._notices: list[str] = []
        self._notice_processor = _NOTICE_PROCESSOR(self._keep_notice)
        pq.PQsetNoticeProcessor(self._conn, self._notice_processor, None)

    def _keep_notice(self, _arg: int | None, message: bytes | None) -> None:
        # Called from C: it must not raise.
        text = (message or b"").decode("utf-8", "replace").strip()
        if text:
            self._notices = [*self._notices[1 - _KEPT_NOTICES :], text]

    def _broken(self, message: str) -> str:
        """Return `message` led by the server's last word, when it sent one as a notice."""
        last = next((n for n in reversed(self._notices) if n.startswith("FATAL:")), None)
        if last is None or last in message:
            return message
        return f"{last.removeprefix('FATAL:').strip()}\n{message}"

    def _error(self) -> str:
        raw = self._pq.PQerrorMessage(self._conn) or b""
        return bytes(raw).decode("utf-8", "replace").strip() or "unknown libpq error"

    @property
    def closed(self) -> bool:
        """Return whether the session is closed (by us) or broken."""
        return self._conn is None or self._pq.PQstatus(self._conn) != _CONNECTION_OK

    def execute(self, sql: str, params: Sequence[Any] = (), timeout: float | None = None) -> Result:
        """Run one statement with `%s` (or $1) placeholders; raise PgError or its operational kind.

        Raise TypeError when `params` is not a list or tuple (a str would be split into
        characters) or does not match the placeholders: a programming error, not an outage.

        With `timeout`, a statement not answered within that many seconds closes the session
        and raises PgOperationalError: on a dead network a reply may otherwise never come.
        """
        pq = self._pq
        if isinstance(params, (str, bytes, bytearray, memoryview)) or not isinstance(
            params, Sequence
        ):
            # A string is a sequence of characters: each would become a parameter.
            raise TypeError(
                f"parameters must be a list or tuple, not {type(params).__name__}; "
                "write (value,) for one"
            )
        numbered, placeholders = _numbered(sql)
        n = len(params)
        if placeholders is not None and placeholders != n:
            raise TypeError(f"the statement has {placeholders} placeholders but {n} parameters")
        if self._conn is None:
            raise PgOperationalError("the connection is closed")
        values = (ctypes.c_char_p * max(n, 1))(
            *[None if v is None else _text(v).encode() for v in params]
        )
        # Parameter types left to the server (OID 0): it infers them from the statement, as
        # for a literal, so '2026-01-01T00:00:00+00:00' becomes a timestamptz next to one.
        # Bytes alone are typed bytea, so that they never arrive as text that looks like hex.
        types = None
        if any(isinstance(v, (bytes, bytearray, memoryview)) for v in params):
            oids = [_BYTEA if isinstance(v, (bytes, bytearray, memoryview)) else 0 for v in params]
            types = ctypes.cast((ctypes.c_uint * n)(*oids), ctypes.c_void_p)
        query = numbered.encode()
        if timeout is None:
            res = pq.PQexecParams(self._conn, query, n, types, values, None, None, 0)
        else:
            res = self._exec_within(query, n, values, timeout, types)
        if res is None:
            raise PgOperationalError(self._broken(self._error()))
        return self._result(res)

    def _exec_within(
        self, query: bytes, n: int, values: Any, timeout: float, types: Any = None
    ) -> int | None:
        """Send, then wait for the reply until `timeout`; return the first result."""
        import select
        import time

        pq, conn = self._pq, self._conn
        deadline = time.monotonic() + timeout
        # A statement this small fits the socket's send buffer: sending does not block.
        if not pq.PQsendQueryParams(conn, query, n, types, values, None, None, 0):
            return None
        sock = pq.PQsocket(conn)
        while True:
            if not pq.PQconsumeInput(conn):
                return None
            if not pq.PQisBusy(conn):
                break
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()
                raise PgOperationalError(f"no reply from the server within {timeout:g}s")
            select.select([sock], [], [], left)
        res = pq.PQgetResult(conn)
        # Drain to the end of the statement, as PQexecParams does, so the session can go on.
        while (extra := pq.PQgetResult(conn)) is not None:
            pq.PQclear(extra)
        return res  # type: ignore[no-any-return]

    def _result(self, res: int) -> Result:
        """Decode one result (and free it); raise for an error result."""
        pq = self._pq
        try:
            status = pq.PQresultStatus(res)
            if status == _TUPLES_OK:
                rows = self._rows(res)
                names = tuple(bytes(pq.PQfname(res, c)).decode() for c in range(pq.PQnfields(res)))
                return Result(rows, len(rows), names)
            if status == _COMMAND_OK:
                count = pq.PQcmdTuples(res) or b""
                return Result([], int(count) if count else -1)
            # The primary message alone, as psycopg's errors read ("relation ... does not exist").
            raw = pq.PQresultErrorField(res, _PG_DIAG_MESSAGE_PRIMARY) or b""
            message = bytes(raw).decode("utf-8", "replace").strip() or self._error()
            code = pq.PQresultErrorField(res, _PG_DIAG_SQLSTATE)
            sqlstate = bytes(code).decode() if code else None
        finally:
            pq.PQclear(res)
        broken = pq.PQstatus(self._conn) != _CONNECTION_OK
        if (
            broken
            or sqlstate is None
            or (sqlstate[:2] in _OPERATIONAL and sqlstate != _PROTOCOL_VIOLATION)
        ):
            raise PgOperationalError(self._broken(message) if broken else message, sqlstate)
        raise PgError(message, sqlstate)

    def _rows(self, res: int) -> list[tuple[Any, ...]]:
        pq = self._pq
        nrows, nfields = pq.PQntuples(res), pq.PQnfields(res)
        decoders = [_decoder(pq.PQftype(res, c)) for c in range(nfields)]
        isnull, getvalue = pq.PQgetisnull, pq.PQgetvalue
        rows = []
        for r in range(nrows):
            rows.append(
                tuple(
                    None if isnull(res, r, c) else decoders[c](getvalue(res, r, c).decode())
                    for c in range(nfields)
                )
            )
        return rows

    def close(self) -> None:
        """End the session (the server then drops its advisory locks)."""
        if self._conn is not None:
            self._pq.PQfinish(self._conn)
            self._conn = None

    def abandon(self) -> None:
        """Close this process's copy of the socket without ending the session.

        For a forked child: the session is its parent's, and PQfinish would end it (and
        drop the parent's advisory locks); an open copy would keep it alive after the parent.
        """
        if self._conn is not None:
            fd = int(self._pq.PQsocket(self._conn))
            self._conn = None
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _decoder(oid: int) -> Callable[[str], Any]:
    found = _DECODERS.get(oid)
    if found is not None:
        return found

    def fail(text: str) -> Any:
        # A programming error, not data: every query here is schedctl's own.
        raise PgError(f"no decoder for PostgreSQL type OID {oid}; cast the column in the query")

    return fail
