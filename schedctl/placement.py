"""Host labels and label selectors: which hosts a job is placed on (Kubernetes syntax)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NamedTuple

from schedctl.errors import ValidationError

# The label every host has, set from its own name: `--on host=web1` pins a job to one host.
HOST_KEY = "host"
MAX_SELECTOR = 1024
MAX_LABELS = 64
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?"
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_PREFIX = rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*"
KEY_RE = re.compile(rf"(?:{_PREFIX}/)?{_NAME}")
VALUE_RE = re.compile(rf"(?:{_NAME})?")
_KEY_HINT = (
    "a key is 1-63 of A-Z a-z 0-9 - _ . starting and ending with a letter or digit, "
    "optionally after a DNS prefix and a slash (example.com/role)"
)
_VALUE_HINT = (
    "a value is empty or 1-63 of A-Z a-z 0-9 - _ . starting and ending with a letter or digit"
)


class Requirement(NamedTuple):
    """One condition on a host's labels."""

    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Return whether `labels` satisfy this condition (Kubernetes semantics)."""
        have = labels.get(self.key)
        if self.op == "exists":
            return have is not None
        if self.op == "!":
            return have is None
        if self.op in ("=", "in"):
            return have is not None and have in self.values
        return have is None or have not in self.values  # "!=" and "notin"

    def __str__(self) -> str:
        if self.op == "exists":
            return self.key
        if self.op == "!":
            return f"!{self.key}"
        if self.op in ("=", "!="):
            return f"{self.key}{self.op}{self.values[0]}"
        return f"{self.key} {self.op} ({','.join(self.values)})"


class Selector(NamedTuple):
    """Requirements that must all hold; none means every host."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Return whether a host with `labels` carries a job with this selector."""
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


EVERY_HOST = Selector()

_TOKEN = re.compile(r"\s*(\(|\)|,|!=|==|=|!|[^\s(),!=]+)")


def _tokens(text: str) -> list[str]:
    out = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None:  # pragma: no cover - the pattern takes any non-space character
            raise ValidationError(f"cannot read selector {text!r} at position {pos}")
        out.append(m.group(1))
        pos = m.end()
    return out


def _key(word: str, selector: str) -> str:
    if not KEY_RE.fullmatch(word) or len(word) > 253 + 1 + 63:
        raise ValidationError(f"bad label key {word!r} in selector {selector!r}: {_KEY_HINT}")
    return word


def _value(word: str, selector: str) -> str:
    if not VALUE_RE.fullmatch(word):
        raise ValidationError(f"bad label value {word!r} in selector {selector!r}: {_VALUE_HINT}")
    return word


class _Parser:
    """A recursive-descent reader of one selector's tokens."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.i = 0

    def fail(self, why: str) -> ValidationError:
        example = "e.g. --on 'role=db,zone in (eu,us),!canary'"
        return ValidationError(f"bad selector {self.text!r}: {why}; {example}")

    def peek(self, ahead: int = 0) -> str:
        at = self.i + ahead
        return self.tokens[at] if at < len(self.tokens) else ","

    def requirements(self) -> tuple[Requirement, ...]:
        reqs = []
        while self.i < len(self.tokens):
            reqs.append(self.requirement())
            if self.i < len(self.tokens):
                if self.tokens[self.i] != ",":
                    raise self.fail(f"expected ',' before {self.tokens[self.i]!r}")
                self.i += 1
                if self.i >= len(self.tokens):
                    raise self.fail("it ends with ','")
        return tuple(reqs)

    def requirement(self) -> Requirement:
        tok = self.peek()
        if tok == "!":
            if self.i + 1 >= len(self.tokens):
                raise self.fail("'!' needs a label key after it")
            self.i += 2
            return Requirement(_key(self.tokens[self.i - 1], self.text), "!")
        if tok in _PUNCTUATION:
            raise self.fail(f"unexpected {tok!r}")
        key = _key(tok, self.text)
        op = self.peek(1)
        if op == ",":
            self.i += 1
            return Requirement(key, "exists")
        if op in ("=", "==", "!="):
            value = self.peek(2)
            if value in _PUNCTUATION and value != ",":
                raise self.fail(f"{key}{op} needs a value")
            # A comma or the end right after the operator: the empty value, as Kubernetes has.
            self.i += 2 if value == "," else 3
            value = "" if value == "," else value
            return Requirement(key, "!=" if op == "!=" else "=", (_value(value, self.text),))
        if op in ("in", "notin"):
            self.i += 2
            return Requirement(key, op, self.value_set(key, op))
        raise self.fail(f"expected =, ==, !=, in, notin or ',' after {key!r}")

    def value_set(self, key: str, op: str) -> tuple[str, ...]:
        if self.i >= len(self.tokens) or self.tokens[self.i] != "(":
            raise self.fail(f"{key} {op} needs a list in parentheses, like {key} {op} (a,b)")
        self.i += 1
        values: list[str] = []
        while True:
            if self.i >= len(self.tokens):
                raise self.fail("a list is not closed with ')'")
            word = self.tokens[self.i]
            if word in _PUNCTUATION:
                raise self.fail(f"unexpected {word!r} in the list of {key}")
            if self.i + 1 >= len(self.tokens):
                raise self.fail("a list is not closed with ')'")
            values.append(_value(word, self.text))
            after = self.tokens[self.i + 1]
            self.i += 2
            if after == ")":
                return tuple(sorted(set(values)))
            if after != ",":
                raise self.fail(f"expected ',' or ')' after {word!r}")


_PUNCTUATION = frozenset({"(", ")", ",", "=", "==", "!=", "!"})


def parse_selector(text: str) -> Selector:
    """Parse a selector such as `role=db,zone in (eu,us),!canary`; '' selects every host."""
    if len(text) > MAX_SELECTOR:
        raise ValidationError(f"the selector is longer than {MAX_SELECTOR} characters: shorten it")
    if not text.isprintable():
        raise ValidationError("the selector contains a control character: remove it")
    return Selector(_Parser(text).requirements())


def selector_of(text: str | None) -> Selector:
    """Return the selector a job stores ('' or None: every host)."""
    return parse_selector(text) if text else EVERY_HOST


def normalise(text: str) -> str:
    """Return the stored form of a selector given by a user ('' for every host)."""
    return str(parse_selector(text)) if text.strip() else ""


def parse_labels(text: str, where: str) -> dict[str, str]:
    """Parse `k=v,k2=v2` host labels; `where` names their source in messages."""
    labels: dict[str, str] = {}
    for part in text.split(","):
        item = part.strip()
        if not item:
            continue
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not eq:
            raise ValidationError(
                f"label {item!r} in {where} has no '=': write key=value, e.g. role=db"
            )
        if not KEY_RE.fullmatch(key) or len(key) > 253 + 1 + 63:
            raise ValidationError(f"bad label key {key!r} in {where}: {_KEY_HINT}")
        if not VALUE_RE.fullmatch(value):
            raise ValidationError(f"bad label value {value!r} for {key} in {where}: {_VALUE_HINT}")
        if key == HOST_KEY:
            raise ValidationError(
                f"label {HOST_KEY!r} in {where} is set by schedctl from the host name: remove it "
                f"(set SCHEDCTL_HOST to change the name)"
            )
        if key in labels and labels[key] != value:
            raise ValidationError(f"label {key!r} is given twice in {where}: keep one")
        labels[key] = value
    if len(labels) > MAX_LABELS:
        raise ValidationError(f"{where} has more than {MAX_LABELS} labels: keep fewer")
    return labels


def with_host(labels: Mapping[str, str], host: str) -> dict[str, str]:
    """Return `labels` plus the implicit `host=NAME`."""
    return {**labels, HOST_KEY: host}


def format_labels(labels: Mapping[str, str]) -> str:
    """Return labels as `k=v,...`, sorted."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
