"""CronJob names: valid DNS-1123 labels of at most 52 characters, one per job."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from schedctl.errors import ConfigError
from schedctl.models import Job, JobSpec
from schedctl.render.kubernetes import k8s_name, render_kubernetes
from schedctl.validate import NAME_RE

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
job_names = st.from_regex(NAME_RE, fullmatch=True)


def test_names_that_differ_only_in_punctuation_get_different_cronjobs() -> None:
    names = {n: k8s_name(n) for n in ("a-b", "a.b", "a_b", "a--b", "a-b-", "a-b-.")}
    assert names["a-b"] == "schedctl-a-b"  # already a label: kept
    assert len(set(names.values())) == len(names), names
    assert all(LABEL.fullmatch(v) and len(v) <= 52 for v in names.values()), names


@settings(max_examples=3000, deadline=None)
@given(a=job_names, b=job_names)
def test_distinct_jobs_get_distinct_valid_names(a: str, b: str) -> None:
    for name in (a, b):
        cronjob = k8s_name(name)
        assert LABEL.fullmatch(cronjob) and len(cronjob) <= 52, (name, cronjob)
        assert k8s_name(name) == cronjob  # deterministic
    assert (k8s_name(a) == k8s_name(b)) == (a == b), (a, b)


@settings(max_examples=200, deadline=None)
@given(names=st.sets(job_names, min_size=2, max_size=40))
def test_a_rendered_set_has_one_cronjob_per_job(names: set[str]) -> None:
    jobs = [Job(i, JobSpec(name=n, schedule="@daily", timezone="UTC", command=("x",)), 1, T0, T0)
            for i, n in enumerate(sorted(names), 1)]  # fmt: skip
    docs = list(yaml.safe_load_all(render_kubernetes(jobs, "img", "sec")))
    assert len({d["metadata"]["name"] for d in docs}) == len(names)
    assert {d["metadata"]["annotations"]["schedctl/job"] for d in docs} == names


def test_a_collision_is_refused_not_rendered(monkeypatch: pytest.MonkeyPatch) -> None:
    import schedctl.render.kubernetes as k8s

    monkeypatch.setattr(k8s, "k8s_name", lambda name: "schedctl-same")
    jobs = [Job(i, JobSpec(name=n, schedule="@daily", timezone="UTC", command=("x",)), 1, T0, T0)
            for i, n in enumerate(["a", "b"], 1)]  # fmt: skip
    with pytest.raises(ConfigError, match="jobs a and b map to the same CronJob name"):
        render_kubernetes(jobs, "img", "sec")
