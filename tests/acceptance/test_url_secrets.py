"""A password with URL metacharacters is printed by no command, in no error, not even in part."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from cli_helpers import Cli, Result, make_cli, ok
from pgserver import PgServer, free_port
from psycopg import sql

pytestmark = pytest.mark.postgres
SPECIALS = ["#", "?", "/", "@", "%", " "]
COMMANDS = [["db", "status"], ["list"], ["run", "nightly"], ["check"]]
DEBUG = [["--debug", "db", "status"], ["--debug", "list"], ["run", "nightly", "--debug"],
         ["check", "--debug"]]  # fmt: skip


def password_with(char: str) -> str:
    # No three characters of it occur in schedctl's messages by chance.
    return f"Qz8{char}Kx9{char}Vw1"


def fragments(secret: str) -> set[str]:
    """Every piece of `secret` three or more characters long."""
    n = len(secret)
    return {secret[i:j] for i in range(n) for j in range(i + 3, n + 1)}


def leaks(results: list[tuple[list[str], Result]], secret: str) -> list[str]:
    """Return `command: fragment` for every output that holds a piece of `secret`."""
    pieces = fragments(secret)
    return [
        f"{' '.join(args)}: {piece!r} in {result.out + result.err!r}"
        for args, result in results
        for piece in pieces
        if piece in result.out + result.err
    ]


def run_all(cli: Cli, commands: list[list[str]]) -> list[tuple[list[str], Result]]:
    return [(args, cli(*args)) for args in commands]


@pytest.mark.parametrize("char", SPECIALS, ids=["hash", "question", "slash", "at", "percent",
                                                "space"])  # fmt: skip
def test_no_output_holds_any_part_of_the_password(
    char: str, pg: PgServer, pg_url: str, tmp_path: Path
) -> None:
    secret = password_with(char)
    dbname = pg_url.rsplit("/", 1)[1]
    role = f"pw_{SPECIALS.index(char)}"
    with pg.admin() as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(secret)
            )
        )
    # Written right (percent-encoded), the URL works: every command succeeds, none prints it.
    good = f"postgresql://{role}:{quote(secret, safe='')}@127.0.0.1:{pg.port}/{dbname}"
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=good)
    ok(cli("db", "upgrade"))
    ok(cli("add", "nightly", "-s", "@daily", "--", "/bin/true"))
    results = run_all(cli, COMMANDS + DEBUG)
    assert all(r.rc == 0 for args, r in results if args[0] != "check"), results
    assert "url              postgresql://" + role + ":***@127.0.0.1" in results[0][1].out

    # Written raw, the password is read by libpq's own rules: each command connects with
    # what libpq reads, or refuses the URL; against an unreachable host, every error fires.
    closed = f"127.0.0.1:{free_port()}"
    for host, commands in [
        (f"127.0.0.1:{pg.port}", COMMANDS + DEBUG),
        (closed, COMMANDS + DEBUG),
        ("nohost.invalid", COMMANDS),
    ]:
        raw = f"postgresql://{role}:{secret}@{host}/{dbname}"
        more = run_all(make_cli(tmp_path, SCHEDCTL_DATABASE_URL=raw), commands)
        for args, result in more:
            if args[0] == "check":
                assert result.rc in (0, 3), result
            elif "--debug" not in args and result.rc != 0:
                assert result.rc in (75, 77, 78), result
                assert result.err.startswith("schedctl: error: ") and result.err.count("\n") == 1
        results += more
    # The same URL from a config file, and on the command line (with its warning).
    raw = f"postgresql://{role}:{secret}@{closed}/{dbname}"
    config = tmp_path / "schedctl.env"
    config.write_text(f"SCHEDCTL_DATABASE_URL={raw}\n")
    results += run_all(make_cli(tmp_path, SCHEDCTL_CONFIG=str(config)), COMMANDS)
    flagged = make_cli(tmp_path)
    results += [
        (["--db", "URL", "list"], flagged("--db", raw, "list")),
        (["run", "nightly", "--db", "URL"], flagged("run", "nightly", "--db", raw)),
        (["check", "--db", "URL"], flagged("check", "--db", raw)),
    ]
    assert leaks(results, secret) == []


def test_db_flag_with_a_password_warns_once(pg: PgServer, pg_url: str, tmp_path: Path) -> None:
    cli = make_cli(tmp_path)
    ok(make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url)("db", "upgrade"))
    for args in (
        ["--db", pg_url, "list"],
        ["run", "nope", "--db", pg_url],
        ["check", "--db", pg_url],
    ):
        result = cli(*args)
        warnings = [ln for ln in result.err.splitlines() if ln.startswith("schedctl: warning:")]
        assert len(warnings) == 1, result.err
        assert "ps" in warnings[0] and "SCHEDCTL_DATABASE_URL" in warnings[0]
        assert "/etc/schedctl/schedctl.env" in warnings[0]
    # No password on the command line (or none at all): no warning.
    quiet = [
        make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url)("list"),
        cli("--db", f"sqlite:///{tmp_path / 'x.db'}", "list"),
        cli("--db", f"postgresql://{pg.user}@127.0.0.1:{pg.port}/postgres", "list"),
    ]
    assert not any("warning" in r.err for r in quiet), [r.err for r in quiet]


def test_an_internal_error_shows_no_part_of_the_password_on_any_entry_point(
    pg: PgServer, pg_url: str, tmp_path: Path
) -> None:
    secret = password_with("@")
    dbname = pg_url.rsplit("/", 1)[1]
    with pg.admin() as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                sql.Identifier("pw_internal"), sql.Literal(secret)
            )
        )
    url = f"postgresql://pw_internal:{quote(secret, safe='')}@127.0.0.1:{pg.port}/{dbname}"
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url)
    ok(cli("db", "upgrade"))
    ok(cli("add", "nightly", "-s", "* * * * *", "--", "/bin/true"))
    ok(cli("run", "nightly", "--now"))
    # Rows no reader can decode, written behind schedctl's back: each entry point fails for
    # real, inside its own code, and none of them may print the password in saying so.
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE jobs SET env = '[]'")
        conn.execute(
            "ALTER TABLE jobs ALTER COLUMN jitter_seconds TYPE interval"
            " USING make_interval(secs => jitter_seconds)"
        )
    results = run_all(cli, [["--debug", "show", "nightly"], ["run", "nightly", "--now", "--debug"],
                            ["check", "nightly", "--debug"]])  # fmt: skip
    debug_env = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=url, SCHEDCTL_DEBUG="1")
    results += run_all(debug_env, [["list"], ["run", "nightly", "--now"], ["check"]])
    for args, result in results:
        expected = 3 if args[0] == "check" else 1
        assert result.rc == expected, (args, result)
        said = result.out if args[0] == "check" else result.err.splitlines()[-1]
        prefix = "SCHEDCTL UNKNOWN - " if args[0] == "check" else "schedctl: error: "
        assert said.startswith(prefix + "unexpected internal error ("), (args, said)
        assert "Traceback (most recent call last)" in result.err, (args, result.err)
    assert leaks(results, secret) == []
