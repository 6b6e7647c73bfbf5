"""Label selectors and host labels: the grammar, Kubernetes' matching rules, hostile input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schedctl.errors import ValidationError
from schedctl.placement import (
    Requirement,
    normalise,
    parse_labels,
    parse_selector,
    selector_of,
    with_host,
)

DB_EU = {"role": "db", "zone": "eu", "host": "db1"}
WEB_US_CANARY = {"role": "web", "zone": "us", "canary": "", "host": "web1"}
BARE = {"host": "bare"}


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        ("role=db", {"db1"}),
        ("role==db", {"db1"}),
        ("role!=db", {"web1", "bare"}),  # no `role` at all also differs (Kubernetes)
        ("role in (db,backup)", {"db1"}),
        ("role notin (db,backup)", {"web1", "bare"}),
        ("zone", {"db1", "web1"}),
        ("!canary", {"db1", "bare"}),
        ("canary", {"web1"}),
        ("canary=", {"web1"}),  # the empty value
        ("role=web,zone=us", {"web1"}),
        ("role=web,zone=eu", set()),
        ("zone in (eu, us) , !canary", {"db1"}),
        ("host=db1", {"db1"}),
        ("host!=db1,!role", {"bare"}),
        ("", {"db1", "web1", "bare"}),
    ],
)
def test_selectors_match_as_kubernetes_does(text: str, matches: set[str]) -> None:
    hosts = [DB_EU, WEB_US_CANARY, BARE]
    sel = selector_of(text)
    assert {h["host"] for h in hosts if sel.matches(h)} == matches


def test_the_stored_form_is_canonical_and_reads_back_the_same() -> None:
    assert (
        normalise(" role == db ,zone in (us, eu,eu),  ! canary")
        == "role=db,zone in (eu,us),!canary"
    )
    assert normalise("   ") == ""
    for text in ("role=db", "a notin (x)", "example.com/tier=gold,!b", "k="):
        assert normalise(normalise(text)) == normalise(text)
    assert parse_selector("role in (db)").requirements == (Requirement("role", "in", ("db",)),)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("role in (db", "not closed with ')'"),
        ("role in db", "needs a list in parentheses"),
        ("role in ()", "unexpected ')'"),
        ("role=db,", "ends with ','"),
        (",role=db", "unexpected ','"),
        ("role=db zone=eu", "expected ','"),
        ("!", "needs a label key"),
        ("role=(db)", "needs a value"),
        ("role===db", "needs a value"),
        ("-role=db", "bad label key '-role'"),
        ("role=db-", "bad label value 'db-'"),
        ("role=" + "x" * 64, "bad label value"),
        ("ROLE/x=y", "bad label key"),
        ("role=db\n", "control character"),
        ("role=db\x00", "control character"),
        ("role=\u202edb", "control character"),
        ("role=dé", "bad label value"),
        ("r" * 2000, "longer than 1024"),
        ("role in (a b)", "expected ',' or ')'"),
        ("role ~ db", "expected =, ==, !=, in, notin or ','"),
        ("~role", "bad label key '~role'"),
    ],
)
def test_bad_selectors_are_refused_with_what_to_fix(text: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as e:
        parse_selector(text)
    message = str(e.value)
    assert fragment in message, message
    assert "\n" not in message


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="ab=!(), inotz\t\x00é/.-_", max_size=40))
def test_any_input_parses_or_is_refused_in_one_line(text: str) -> None:
    try:
        sel = parse_selector(text)
    except ValidationError as e:
        assert "\n" not in str(e)
        return
    # What parses reads back as the same selector from its stored form.
    assert parse_selector(str(sel)) == sel


_KEYS = st.sampled_from(["role", "zone", "example.com/tier", "a_b.c-d", "k8s"])
_VALUES = st.sampled_from(["db", "eu", "", "A1", "x.y_z-9"])
_SETS = st.lists(_VALUES.filter(bool), min_size=1, max_size=3)
_SETS = st.lists(_VALUES.filter(bool), min_size=1, max_size=3)
_REQS = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", _KEYS, _VALUES),
    st.builds(lambda k, v: f"{k}!={v}", _KEYS, _VALUES),
    st.builds(lambda k: k, _KEYS),
    st.builds(lambda k: f"!{k}", _KEYS),
    st.builds(lambda k, vs: f"{k} in ({','.join(vs)})", _KEYS, _SETS),
    st.builds(lambda k, vs: f"{k} notin ({','.join(vs)})", _KEYS, _SETS),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_REQS, min_size=1, max_size=4),
       st.dictionaries(_KEYS, _VALUES, max_size=4))  # fmt: skip
def test_a_selector_is_the_and_of_its_requirements(reqs: list[str], labels: dict[str, str]) -> None:
    whole = parse_selector(",".join(reqs)).matches(labels)
    assert whole == all(parse_selector(r).matches(labels) for r in reqs)
    assert parse_selector(normalise(",".join(reqs))).matches(labels) == whole


def test_host_labels_parse_and_refuse_what_they_cannot_hold() -> None:
    assert parse_labels(" role=db, zone=eu ,,", "x") == {"role": "db", "zone": "eu"}
    assert with_host({"role": "db"}, "db1") == {"role": "db", "host": "db1"}
    for text, fragment in [
        ("role", "has no '='"),
        ("role=d b", "bad label value 'd b'"),
        ("=db", "bad label key ''"),
        ("host=other", "set by schedctl from the host name"),
        ("role=db,role=web", "given twice"),
    ]:
        with pytest.raises(ValidationError, match=fragment):
            parse_labels(text, "$SCHEDCTL_HOST_LABELS")
