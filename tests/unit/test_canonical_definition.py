"""The canonical form a job's signature covers: deterministic, and every signed field in it."""

from __future__ import annotations

import json
from dataclasses import fields, replace
from typing import Any

from schedctl.models import CatchUpPolicy, ConcurrencyPolicy, JobSpec
from schedctl.signing import CANONICAL_VERSION, canonical

BASE = JobSpec(name="nightly", schedule="0 3 * * *", timezone="Europe/Berlin",
               command=("/opt/jobs/backup", "--all"), env=(("A", "1"), ("B", "2")))  # fmt: skip
# What a host's run does not depend on: the rest is signed.
UNSIGNED = {"description", "tags", "retention_seconds", "secret_env"}
CHANGED: dict[str, Any] = {
    "name": "other", "schedule": "0 4 * * *", "timezone": "UTC", "command": ("/bin/sh",),
    "shell": True, "timeout_seconds": 60, "concurrency": ConcurrencyPolicy.ALLOW,
    "catch_up": CatchUpPolicy.SKIP, "jitter_seconds": 5, "retries": 2,
    "retry_delay_seconds": 7, "env": (("A", "1"),), "workdir": "/srv", "run_as_user": "root",
    "description": "x", "tags": ("t",), "enabled": False, "output_limit_bytes": 1,
    "retention_seconds": 9, "notify": ("exec:/bin/true",), "notify_on": ("failure",),
    "placement": "role=db", "secrets": (("TOKEN", "file:token"),), "secret_env": ("A",),
}  # fmt: skip


def test_every_field_that_changes_what_a_host_runs_changes_the_signed_bytes() -> None:
    assert set(CHANGED) == {f.name for f in fields(JobSpec)}, "a new field: signed or not?"
    base = canonical(BASE, 3)
    for name, value in CHANGED.items():
        changed = canonical(replace(BASE, **{name: value}), 3)
        assert (changed != base) is (name not in UNSIGNED), name
    assert canonical(BASE, 4) != base  # the revision is signed too


def test_the_canonical_form_is_sorted_compact_json_with_a_version() -> None:
    text = canonical(replace(BASE, env=(("B", "2"), ("A", "1")), description="é"), 1)
    assert text == canonical(BASE, 1)
    doc = json.loads(text)
    assert doc["schedctl-job"] == CANONICAL_VERSION and doc["revision"] == 1
    assert text == json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    assert text.startswith(b'{"catch_up":"latest","command":["/opt/jobs/backup","--all"],')
