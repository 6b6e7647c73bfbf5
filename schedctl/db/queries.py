"""The named statements of queries.sql, in each driver's placeholder style."""

from __future__ import annotations

import functools
import os
import re
from typing import NamedTuple

PATH = os.path.join(os.path.dirname(__file__), "queries.sql")
DIALECTS = ("postgresql", "sqlite")
_ENTRY = re.compile(r"^-- (name|fragment): ([a-z_0-9]+)(?: \[(postgresql|sqlite)\])?\s*$")
_FRAGMENT = re.compile(r"\{([a-z_0-9]+)\}")


class Query(NamedTuple):
    """One statement for one dialect: its text and, for positional drivers, its parameters."""

    name: str
    sql: str
    params: tuple[str, ...]  # the names behind $1, $2, ... (PostgreSQL); () for named (SQLite)


class QueryFileError(Exception):
    """queries.sql does not read as entries of statements."""


def parse(text: str) -> dict[tuple[str, str | None], str]:
    """Return every entry of a queries file by (name, dialect or None), fragments included.

    Fragments are keyed ("{name}", None) so that no statement can be run by a fragment's name.
    """
    entries: dict[tuple[str, str | None], list[str]] = {}
    current: tuple[str, str | None] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        found = _ENTRY.match(line)
        if found:
            kind, name, dialect = found.groups()
            key = ("{" + name + "}" if kind == "fragment" else name, dialect)
            if key in entries:
                raise QueryFileError(f"{PATH}:{number}: {name} is defined twice")
            current = key
            entries[current] = []
        elif line.startswith("--") or current is None:
            continue  # a comment (statements carry none: the server would log them)
        else:
            entries[current].append(line)
    return {key: "\n".join(lines).strip() for key, lines in entries.items()}


def _expand(sql: str, fragments: dict[str, str], name: str) -> str:
    def one(m: re.Match[str]) -> str:
        try:
            return _expand(fragments[m.group(1)], fragments, name)
        except KeyError:
            raise QueryFileError(f"{name}: no fragment {m.group(1)!r}") from None

    return _FRAGMENT.sub(one, sql)


def positional(sql: str) -> tuple[str, tuple[str, ...]]:
    """Turn `:name` parameters into $1, $2, ...; return the text and the names in order.

    Quoted literals and identifiers, comments and `::` casts are left as they are.
    """
    out: list[str] = []
    names: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"":
            end = i + 1
            while end < n:
                if sql[end] == c:
                    if end + 1 < n and sql[end + 1] == c:  # a doubled quote stays inside
                        end += 2
                        continue
                    break
                end += 1
            out.append(sql[i : end + 1])
            i = end + 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
            out.append(sql[i:end])
            i = end
        elif sql.startswith("::", i):
            out.append("::")
            i += 2
        elif c == ":" and i + 1 < n and (sql[i + 1].isalpha() or sql[i + 1] == "_"):
            end = i + 1
            while end < n and (sql[end].isalnum() or sql[end] == "_"):
                end += 1
            name = sql[i + 1 : end]
            if name not in names:
                names.append(name)
            out.append(f"${names.index(name) + 1}")
            i = end
        else:
            out.append(c)
            i += 1
    return "".join(out), tuple(names)


@functools.cache
def _all(dialect: str) -> dict[str, Query]:
    with open(PATH, encoding="utf-8") as f:
        entries = parse(f.read())
    fragments = {k[0][1:-1]: v for k, v in entries.items() if k[0].startswith("{")}
    out: dict[str, Query] = {}
    for (name, which), text in entries.items():
        if name.startswith("{") or which not in (None, dialect):
            continue
        if which is None and name in out:
            continue  # this dialect's own version came first
        sql = _expand(text, fragments, name)
        if dialect == "postgresql":
            sql, params = positional(sql)
            out[name] = Query(name, sql, params)
        else:
            out[name] = Query(name, sql, ())
    return out


def get(name: str, dialect: str) -> Query:
    """Return the statement `name` for `dialect` (KeyError: there is none)."""
    return _all(dialect)[name]


def names(dialect: str) -> set[str]:
    """Return the names of every statement `dialect` has."""
    return set(_all(dialect))
