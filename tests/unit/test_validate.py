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
        ({"run_as_user": "machine$"}, "invalid user name"),  # systemd warns about it
        ({"tags": ("has space",)}, "invalid tag"),
        ({"timeout_seconds": 0}, "timeout must be at least 1s"),
        ({"retries": 101}, "retries must be between"),
        ({"jitter_seconds": -1}, "jitter cannot be negative"),
        ({"output_limit_bytes": 10}, "output limit"),
        ({"retention_seconds": 5}, "retention must be at least"),
        # What a unit line cannot carry exactly (systemd joins, strips or rewrites it).
        ({"workdir": "/tmp/a\\"}, "ends with a backslash"),
        ({"workdir": "/tmp/a "}, "ends with a backslash, space or tab"),
        ({"workdir": "/tmp/a\t"}, "ends with a backslash, space or tab"),
        ({"workdir": "/tmp//a"}, "has an empty, . or .. part"),
        ({"workdir": "/tmp/./a"}, "has an empty, . or .. part"),
        ({"workdir": "/tmp/../a"}, "has an empty, . or .. part"),
        ({"workdir": "/tmp/a/"}, "ends with /"),
        ({"workdir": "/" + "a" * 256}, "a part longer than 255 bytes"),
        ({"workdir": ("/" + "a" * 255) * 16}, "longer than 4095 bytes"),
        ({"workdir": "/tmp/a\u2028b"}, "workdir contains line separator"),
        ({"workdir": "/tmp/a\u0085b"}, "workdir contains control character"),
        ({"description": "a\x9b[31mb"}, "description contains control character"),
        ({"description": "a\u2029b"}, "line separator"),
        ({"env": (("A", "x\x85y"),)}, "--env A contains control character"),
        ({"command": ("echo", "\udcff")}, "not UTF-8"),
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


@pytest.mark.parametrize(
    "workdir",
    ["/", "/srv/a b", "/srv/a  b", "/srv/a\tb", "/srv/a\\b", "/srv/100%", "/srv/$HOME",
     "/srv/'q'", '/srv/"q"', "/srv/a;b #c", "/srv/\u00e9\U0001f600", "/srv/nbsp\u00a0",
     "/" + "a" * 255],
)  # fmt: skip
def test_workdirs_a_unit_carries_exactly_are_kept(workdir: str) -> None:
    # tests/integration/test_sandbox_systemd.py reads them back from a booted systemd.
    assert validate_spec(replace(GOOD, workdir=workdir)).workdir == workdir
