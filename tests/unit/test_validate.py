"""Job validation: nothing that could break a unit file, crontab line or log is stored."""

from __future__ import annotations

from dataclasses import replace

import pytest

from schedctl.errors import ValidationError
from schedctl.models import JobSpec
from schedctl.validate import parse_env_pair, validate_spec

GOOD = JobSpec(
    name="backup", schedule="0  3 * * *", timezone="Europe/Berlin", command=("/bin/true",)
)


def test_valid_spec_is_normalised() -> None:
    spec = validate_spec(replace(GOOD, tags=("b", "a", "b"), env=(("Z", "1"), ("A", "2"))))
    assert spec.schedule == "0 3 * * *"
    assert spec.tags == ("a", "b")
    assert spec.env == (("A", "2"), ("Z", "1"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "Backup"}, "invalid job name"),
        ({"name": "-x"}, "invalid job name"),
        ({"name": "a" * 64}, "invalid job name"),
        ({"name": "sync"}, "is reserved"),
        ({"name": "a/b"}, "invalid job name"),
        ({"schedule": "* * *"}, "needs 5"),
        ({"schedule": "0 3 * * *\n* * * * *"}, "newline"),
        ({"timezone": "Nowhere/City"}, "unknown time zone"),
        ({"timezone": "../../etc/passwd"}, "unknown time zone"),
        ({"command": ()}, "empty command"),
        ({"command": ("",)}, "empty command"),
        ({"command": ("echo", "a\nb")}, "command argument 2 contains a newline"),
        ({"command": ("echo", "a\x00b")}, "NUL"),
        ({"command": ("echo", "\x1b[31mred")}, "control character"),
        ({"command": ("echo", "hi"), "shell": True}, "one quoted argument"),
        ({"description": "two\nlines"}, "description contains a newline"),
        ({"env": (("A", "x\ny"),)}, "--env A contains a newline"),
        ({"env": (("1A", "x"),)}, "bad environment variable name"),
        ({"env": (("SCHEDCTL_JOB", "x"),)}, "set by schedctl itself"),
        ({"env": (("A", "1"), ("A", "2"))}, "given twice"),
        ({"workdir": "relative/dir"}, "absolute path"),
        ({"run_as_user": "Root Admin"}, "invalid user name"),
        ({"tags": ("has space",)}, "invalid tag"),
        ({"timeout_seconds": 0}, "timeout must be at least 1s"),
        ({"retries": 101}, "retries must be between"),
        ({"jitter_seconds": -1}, "jitter cannot be negative"),
        ({"output_limit_bytes": 10}, "output limit"),
        ({"retention_seconds": 5}, "retention must be at least"),
    ],
)
def test_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("[", r"\[")):
        validate_spec(replace(GOOD, **change))  # type: ignore[arg-type]


def test_env_pair() -> None:
    assert parse_env_pair("A=b=c") == ("A", "b=c")
    assert parse_env_pair("EMPTY=") == ("EMPTY", "")
    with pytest.raises(ValidationError, match="KEY=VALUE"):
        parse_env_pair("NOEQUALS")
