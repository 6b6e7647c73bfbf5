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


# What positional() steps over whole (quoted literals and identifiers, comments, casts), and
# the parameters it numbers. One regex: `run` converts the statements it sends at every start.
_TOKENS = re.compile(r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|::|:([A-Za-z_]\w*)""")


def positional(sql: str) -> tuple[str, tuple[str, ...]]:
    """Turn `:name` parameters into $1, $2, ...; return the text and the names in order.

    Quoted literals and identifiers, comments and `::` casts are left as they are.
    """
    names: list[str] = []

    def number(m: re.Match[str]) -> str:
        name = m.group(1)
        if name is None:
            return m.group(0)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _TOKENS.sub(number, sql), tuple(names)


@functools.cache
def _entries() -> tuple[dict[tuple[str, str | None], str], dict[str, str]]:
    with open(PATH, encoding="utf-8") as f:
        entries = parse(f.read())
    fragments = {k[0][1:-1]: v for k, v in entries.items() if k[0].startswith("{")}
    return entries, fragments


@functools.cache
def get(name: str, dialect: str) -> Query:
    """Return the statement `name` for `dialect` (KeyError: there is none).

    Each statement is expanded and numbered on first use only: `run` sends a handful.
    """
    entries, fragments = _entries()
    if name.startswith("{"):
        raise KeyError(name)  # a fragment is not a statement
    text = entries.get((name, dialect), entries.get((name, None)))
    if text is None:
        raise KeyError(name)
    sql = _expand(text, fragments, name)
    if dialect == "postgresql":
        sql, params = positional(sql)
        return Query(name, sql, params)
    return Query(name, sql, ())


@functools.cache
def reads_only(name: str) -> bool:
    """Return whether statement `name` only reads, in every dialect (locks do not count)."""
    entries, _ = _entries()
    texts = [text for (n, _), text in entries.items() if n == name]
    return bool(texts) and all(
        t.upper().startswith("SELECT") and "advisory" not in t.lower() for t in texts
    )


def names(dialect: str) -> set[str]:
    """Return the names of every statement `dialect` has."""
    entries, _ = _entries()
    return {n for n, d in entries if not n.startswith("{") and d in (None, dialect)}
