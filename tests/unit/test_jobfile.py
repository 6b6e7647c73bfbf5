"""The job file writer, checked by reading what it writes back through tomllib."""

from __future__ import annotations

import tomllib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schedctl import jobfile
from schedctl.errors import ValidationError
from schedctl.models import JobSpec

text = st.text(max_size=40)


@given(
    description=text,
    args=st.lists(text, min_size=1, max_size=4),
    env=st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True), text),
    workdir=text,
    shell=st.booleans(),
)
def test_what_is_written_reads_back_as_the_same_job(
    description: str, args: list[str], env: dict[str, str], workdir: str, shell: bool
) -> None:
    spec = JobSpec(
        name="j", schedule="@daily", timezone="UTC",
        command=(args[0],) if shell else tuple(args), shell=shell, description=description,
        env=tuple(sorted(env.items())), workdir=workdir or None, tags=("a", "b"),
        timeout_seconds=5400, retention_seconds=86400, enabled=False,
    )  # fmt: skip
    written = jobfile.render([spec])
    assert tomllib.loads(written)["job"][0]["name"] == "j"
    (entry,) = jobfile.parse(written, "f.toml", "Europe/Berlin")
    assert entry.spec == spec


def test_lines_name_the_key_of_the_job_it_is_in() -> None:
    doc = '[[job]]\nname = "a"\nschedule = "@daily"\ncommand = ["x"]\n\n[[job]]\nname = "b"\n' \
          'schedule = "@daily"\ncommand = ["x"]\nretries = "3"\n'  # fmt: skip
    with pytest.raises(ValidationError, match=r"^f.toml:10: retries: must be a whole number"):
        jobfile.parse(doc, "f.toml", "UTC")
