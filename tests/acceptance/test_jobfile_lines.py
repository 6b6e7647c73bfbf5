"""`apply -f` names the line and key of a bad env, secret-env or secrets value."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import make_cli, ok, one_line_error

from schedctl.errors import ExitCode

HEAD = '[[job]]\nname = "s1"\nschedule = "@daily"\ntz = "UTC"\ncommand = ["/bin/true"]\n'

CASES = [
    # (the rest of the file, the line and key the error must cite, a fragment of it)
    ('\n[job.secret-env]\nOK = "x"\nPW = "a\\u0001b"\n', "9: secret-env:", "PW"),
    ('secret-env = { PW = "a\\u0001b" }\n', "6: secret-env:", "PW"),
    ('env = { A = "1" }\nsecret-env = { PW = "a\\u0001b" }\n', "7: secret-env:", "PW"),
    ('secret-env = { PW = "ok" }\n[job.env]\nA = "1"\nB = "2\\u0002"\n', "9: env:", "B"),
    ('\n[job.env]\nA = "a\\u0001"\n', "8: env:", "A"),
    ('\n[job.secrets]\nOK = "file:ok"\nTOK = "nope:x"\n', "9: secrets:", "TOK"),
    ('secrets = { TOK = "nope:x" }\n', "6: secrets:", "TOK"),
]


@pytest.mark.parametrize(("rest", "cited", "name"), CASES)
def test_a_bad_value_is_cited_at_its_own_line_and_key(
    tmp_path: Path, rest: str, cited: str, name: str
) -> None:
    cli = make_cli(tmp_path)
    path = tmp_path / "s1.toml"
    path.write_text(HEAD + rest)
    one_line_error(cli("apply", "-f", str(path)), ExitCode.USAGE, f"s1.toml:{cited}")
    result = cli("apply", "-f", str(path))
    assert name in result.err, result.err
    assert ok(cli("list", "--json")).out.strip() == "[]"  # nothing applied
