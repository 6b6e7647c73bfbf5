"""Secrets by reference (`--secret NAME=REF`) and masked env values (`--secret-env`).

A job receives the value of a secret read on the host at run time; the database holds only
the reference, no output of schedctl's shows a value, and the output it stores has each
value masked. A secret that cannot be read stops the run before the job starts (exit 79).
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
from pathlib import Path

import pytest
from cli_helpers import (
    Cli,
    Result,
    make_cli,
    ok,
    one_line_error,
    run_rows,
    store_as_older_versions_did,
)

SECRET_EXIT = 79
# Hostile on purpose: an `=`, a newline inside, unicode, quotes and a trailing newline that
# the file has and the value does not.
FILE_VALUE = "tok=en-Ω-'\"-first\nsecond-line-ü"
ENV_VALUE = "pw=Ünïcode-päss-42"
# What the job prints of its secrets, so the test can tell they reached it.
JOB = (
    'printf %s "$TOKEN" | sha256sum > "$MARK"; '
    'echo "token is $TOKEN"; echo "pw is $PW" >&2; echo "plain is $PLAIN"'
)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def secrets_dir(tmp_path: Path) -> Path:
    where = tmp_path / "secrets"
    where.mkdir(mode=0o700)
    return where


def put(where: Path, name: str, value: str, mode: int = 0o600) -> Path:
    path = where / name
    path.write_text(value + "\n", encoding="utf-8")
    path.chmod(mode)
    return path


def dump_tables(url: str) -> str:
    """Return the text of every row of every schedctl table."""
    import sqlalchemy as sa

    from schedctl.config import parse_database_url
    from schedctl.db.schema import make_engine
    from schedctl.db.tables import metadata

    engine = make_engine(parse_database_url(url))
    parts = []
    try:
        with engine.connect() as conn:
            for table in metadata.sorted_tables:
                for row in conn.execute(sa.select(table)).mappings():
                    parts.append(
                        json.dumps({k: str(v) for k, v in row.items()}, ensure_ascii=False)
                    )
    finally:
        engine.dispose()
    return "\n".join(parts)


def pieces(value: str) -> list[str]:
    """The value and each line of it: none may show anywhere."""
    return [value, *value.splitlines()]


def shown_anywhere(results: dict[str, Result], value: str) -> list[str]:
    return [
        f"{what}: {piece!r}"
        for what, r in results.items()
        for piece in pieces(value)
        if piece in r.out or piece in r.err
    ]


def with_secrets(tmp_path: Path, cli: Cli, env: dict[str, str]) -> tuple[Cli, Path]:
    where = secrets_dir(tmp_path)
    extra = {k: v for k, v in env.items() if k == "SCHEDCTL_DATABASE_URL"}
    return make_cli(tmp_path, SCHEDCTL_SECRETS_DIR=str(where), **extra), where


def test_a_file_secret_reaches_the_job_and_no_output_or_table_holds_it(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    cli, url, env = backend
    cli, where = with_secrets(tmp_path, cli, env)
    put(where, "token", FILE_VALUE)
    mark = tmp_path / "mark"
    ok(cli("add", "deploy", "-s", "@daily", "--secret", "TOKEN=file:token",
           "--secret-env", f"PW={ENV_VALUE}", "--env", "PLAIN=visible-value",
           "--env", f"MARK={mark}", "--", "/bin/sh", "-c", JOB))  # fmt: skip
    run = cli("run", "deploy", "--now")
    assert run.rc == 0, run.err
    # The job got the exact value: the file's, less its final newline.
    assert mark.read_text().split()[0] == sha(FILE_VALUE)
    (row,) = run_rows(url, "deploy")
    assert row["status"] == "succeeded"
    # Stored output: each value (and each line of the file's) masked, the rest as printed.
    tail = row["output_tail"]
    assert sorted(tail.splitlines()) == ["plain is visible-value", "pw is ***", "token is ***"]
    for value in (FILE_VALUE, ENV_VALUE):
        assert not any(p in tail for p in pieces(value)), tail
    run_id = str(row["id"])
    results = {
        " ".join(args): cli(*args)
        for args in (
            ["show", "deploy"], ["show", "deploy", "--json"], ["list"], ["list", "--json"],
            ["list", "-o", "wide"], ["export"], ["history"], ["history", "--json"],
            ["history", "--format", "csv"], ["logs", run_id], ["logs", run_id, "--json"],
            ["report"], ["check"], ["history", "--changes"], ["history", "--changes", "--json"],
        )
    }  # fmt: skip
    for what, r in results.items():
        assert r.rc in (0, 1, 2), (what, r.err)
    # The job's own output streams through to the journal as it printed it (its own); what
    # schedctl says of the run (its events) shows no value.
    events = "\n".join(ln for ln in run.err.splitlines() if ln.startswith("timestamp="))
    assert "event=run.finished" in events
    results["run events"] = Result(0, "", events)
    assert shown_anywhere(results, FILE_VALUE) == []
    assert shown_anywhere(results, ENV_VALUE) == []
    assert "TOKEN=file:token" in results["show deploy"].out
    assert (
        "PW=***" in results["show deploy"].out
        and "PLAIN=visible-value" in results["show deploy"].out
    )
    shown = json.loads(results["show deploy --json"].out)
    assert shown["secrets"] == {"TOKEN": "file:token"} and shown["env"]["PW"] == "***"
    assert "token is ***" in results[f"logs {run_id}"].out
    # The database holds the reference and never the file's value; the --secret-env value is
    # stored (it is given to the database), but never in the output it keeps.
    tables = dump_tables(url)
    assert "file:token" in tables
    assert not any(p in tables for p in pieces(FILE_VALUE))
    assert tables.count(ENV_VALUE) == 1  # the job's env column only
    if url.startswith("sqlite:///"):
        raw = Path(url.removeprefix("sqlite:///")).read_bytes()
        assert not any(p.encode() in raw for p in pieces(FILE_VALUE))


@pytest.mark.parametrize("case", ["mode 0644", "owned by nobody", "symlink out", "missing",
                                  "a directory"])  # fmt: skip
def test_an_unsafe_or_missing_secret_file_is_refused_and_the_job_not_run(
    tmp_path: Path, case: str
) -> None:
    where = secrets_dir(tmp_path)
    cli = make_cli(tmp_path, SCHEDCTL_SECRETS_DIR=str(where))
    mark = tmp_path / "ran"
    path = where / "token"
    if case == "mode 0644":
        put(where, "token", "v-0644", 0o644)
        expect = "has mode 0644, open to others: `chmod 600"
    elif case == "owned by nobody":
        put(where, "token", "v-nobody")
        os.chown(path, pwd.getpwnam("nobody").pw_uid, -1)
        expect = "is owned by uid"
    elif case == "symlink out":
        outside = put(tmp_path, "elsewhere", "v-outside")
        path.symlink_to(outside)
        expect = "is a symlink that leads out of the secrets directory"
    elif case == "missing":
        expect = "No such file or directory: create it (owned by root, mode 0600)"
    else:
        path.mkdir()
        expect = "is not a regular file"
    ok(cli("add", "j", "-s", "@daily", "--secret", "TOKEN=file:token", "--", "/bin/sh", "-c",
           f"touch {mark}"))  # fmt: skip
    result = cli("run", "j", "--now")
    assert result.rc == SECRET_EXIT, result.err
    errors = [ln for ln in result.err.splitlines() if ln.startswith("schedctl: error: ")]
    assert len(errors) == 1 and "Traceback" not in result.err, result.err
    assert errors[0].startswith("schedctl: error: secret TOKEN (file:token): ")
    assert str(path) in errors[0]
    assert expect in errors[0] and errors[0].endswith("the job was not run"), errors[0]
    assert not mark.exists()
    assert "v-" not in result.err
    (row,) = run_rows(f"sqlite:///{tmp_path / 'data' / 'schedctl.db'}", "j")
    assert (row["status"], row["exit_code"], row["started_at"]) == ("failed", SECRET_EXIT, None)
    assert expect in row["output_tail"]
    history = json.loads(ok(cli("history", "--json")).out)
    assert [(h["status"], h["exit_code"]) for h in history] == [("failed", SECRET_EXIT)]


@pytest.mark.parametrize(
    ("pair", "fragment"),
    [
        ("TOKEN=file:../etc/shadow", "leaves its directory"),
        ("TOKEN=file:a/../../x", "leaves its directory"),
        ("TOKEN=file:/etc/shadow", "is an absolute path"),
        ("TOKEN=credential:a/b", "a credential ID has no '/'"),
        ("TOKEN=vault:x", "is not a reference"),
        ("TOKEN=file:a b", "use letters, digits"),
        ("TOKEN=file:a\nb", "--secret TOKEN contains a newline"),
        ("TOKEN=file:", "use letters, digits"),
        ("TO\nKEN=file:x", "bad environment variable name"),
        ("TÖKEN=file:x", "bad environment variable name"),
        ("=file:x", "bad environment variable name"),
        ("A=B=file:x", "is not a reference"),
        ("SCHEDCTL_JOB=file:x", "set by schedctl itself"),
        ("TOKEN", "use NAME=REF"),
    ],
)
def test_a_bad_secret_reference_or_name_is_refused_when_stored(
    tmp_path: Path, pair: str, fragment: str
) -> None:
    cli = make_cli(tmp_path)
    one_line_error(cli("add", "j", "-s", "@daily", "--secret", pair, "--", "true"), 2, fragment)
    ok(cli("add", "j", "-s", "@daily", "--", "true"))
    one_line_error(cli("edit", "j", "--secret", pair), 2, fragment)
    assert "secrets" not in ok(cli("export", "j")).out


def test_a_reference_written_past_validation_is_refused_at_run_time(tmp_path: Path) -> None:
    """A `..` put straight into the database never reads outside the secrets directory."""
    where = secrets_dir(tmp_path)
    put(tmp_path, "outside", "v-outside")
    cli = make_cli(tmp_path, SCHEDCTL_SECRETS_DIR=str(where))
    mark = tmp_path / "ran"
    ok(cli("add", "j", "-s", "@daily", "--", "/bin/sh", "-c", f"touch {mark}; echo $TOKEN"))
    url = f"sqlite:///{tmp_path / 'data' / 'schedctl.db'}"
    store_as_older_versions_did(url, "j", secrets={"TOKEN": "file:../outside"})
    result = cli("run", "j", "--now")
    assert result.rc == SECRET_EXIT and "leaves its directory" in result.err, result.err
    assert not mark.exists() and "v-outside" not in result.err


def test_a_credential_secret_is_loaded_by_the_unit_and_read_from_the_credentials_directory(
    tmp_path: Path,
) -> None:
    """The unit loads the credential; `run` reads it where systemd puts it, refuses without."""
    cli = make_cli(tmp_path)
    mark = tmp_path / "mark"
    ok(cli("add", "j", "-s", "@daily", "--secret", "API_KEY=credential:api.key",
           "--secret", "OTHER=credential:api.key", "--", "/bin/sh", "-c",
           f'printf %s "$API_KEY" | sha256sum > {mark}; echo "key $OTHER"'))  # fmt: skip
    units = ok(cli("render", "systemd", "j")).out
    assert units.count("LoadCredential=api.key\n") == 1, units
    crontab = ok(cli("render", "crontab", "j")).out
    assert "api.key" not in crontab

    # As systemd sets it for the service: a directory holding one file per credential.
    creds = tmp_path / "credentials"
    creds.mkdir(mode=0o700)
    value = "k3y=Ω\nline2"
    (creds / "api.key").write_text(value)
    (creds / "api.key").chmod(0o400)  # as systemd writes it (systemd.exec(5), Credentials)
    with_creds = make_cli(tmp_path, CREDENTIALS_DIRECTORY=str(creds))
    ran = with_creds("run", "j", "--now")
    assert ran.rc == 0, ran.err
    assert mark.read_text().split()[0] == sha(value)
    url = f"sqlite:///{tmp_path / 'data' / 'schedctl.db'}"
    assert run_rows(url, "j")[-1]["output_tail"] == "key ***\n"

    # Under cron, the daemon or a shell there is no credentials directory: refused, recorded.
    mark.unlink()
    refused = cli("run", "j", "--now")
    assert refused.rc == SECRET_EXIT and not mark.exists()
    assert "secret API_KEY (credential:api.key): no systemd credentials here" in refused.err
    (creds / "api.key").unlink()
    missing = with_creds("run", "j", "--now")
    assert missing.rc == SECRET_EXIT
    assert "add `LoadCredential=api.key` to the job's unit" in missing.err
    assert [r["status"] for r in run_rows(url, "j")] == ["succeeded", "failed", "failed"]


def test_export_masks_secret_env_and_apply_keeps_the_stored_value(tmp_path: Path) -> None:
    cli = make_cli(tmp_path)
    ok(cli("add", "j", "-s", "@daily", "--secret-env", f"PW={ENV_VALUE}", "--env", "A=1",
           "--secret", "TOKEN=file:tok", "--", "true"))  # fmt: skip
    text = ok(cli("export")).out
    assert ENV_VALUE not in text
    assert (
        'env = { A = "1" }\nsecret-env = { PW = "***" }\nsecrets = { TOKEN = "file:tok" }\n' in text
    )
    exported = tmp_path / "jobs.toml"
    exported.write_text(text)
    # Round trip on the same database: nothing changes, the stored value stays.
    assert "1 unchanged" in ok(cli("apply", "-f", str(exported))).out
    # A new value in the file changes it, and the diff shows it masked.
    exported.write_text(text.replace('PW = "***"', 'PW = "new-secret-value"'))
    plan = ok(cli("apply", "-f", str(exported), "--dry-run"))
    assert "new-secret-value" not in plan.out and "secret-env" in plan.out, plan.out
    # On a database without the job, the placeholder stands for nothing: refused, one line.
    (tmp_path / "other").mkdir()
    other = make_cli(tmp_path / "other")
    exported.write_text(text)
    one_line_error(other("apply", "-f", str(exported)), 2, 'secret-env: PW = "***" is export')
    # --with-secrets writes the value (mode 0600 with -o) and applies anywhere.
    full = tmp_path / "full.toml"
    ok(cli("export", "--with-secrets", "-o", str(full)))
    assert full.stat().st_mode & 0o777 == 0o600
    assert ENV_VALUE in full.read_text()
    ok(other("apply", "-f", str(full)))
    assert json.loads(ok(other("show", "j", "--json")).out)["secret_env"] == ["PW"]


def test_editing_secrets_and_secret_env(tmp_path: Path) -> None:
    cli = make_cli(tmp_path)
    ok(cli("add", "j", "-s", "@daily", "--secret-env", "PW=first-value", "--", "true"))
    # --env on a secret variable keeps it secret; --unset-env removes value and mark.
    ok(cli("edit", "j", "--env", "PW=second-value", "--secret", "T=file:t"))
    shown = json.loads(ok(cli("show", "j", "--json")).out)
    assert shown["env"] == {"PW": "***"} and shown["secrets"] == {"T": "file:t"}
    edited = ok(cli("edit", "j", "--json", "--unset-secret", "T"))
    assert "second-value" not in edited.out
    assert json.loads(edited.out)["secrets"] == {}
    one_line_error(cli("edit", "j", "--unset-secret", "T"), 2, "the job has no such secret")
    one_line_error(cli("edit", "j", "--secret", "PW=file:x"), 2, "both an --env variable and")
    one_line_error(cli("edit", "j", "--secret-env", "second-value"), 2, "use KEY=VALUE")
    r = cli("edit", "j", "--secret-env", "second-value")
    assert "second-value" not in r.err
    # The change log records a change of secrets alone, and of secret values only the names.
    changes = ok(cli("history", "--changes", "--json")).out
    assert '"T": "file:t"' in changes and "-value" not in changes, changes
    ok(cli("edit", "j", "--unset-env", "PW", "--env", "PW=now-plain"))
    assert json.loads(ok(cli("show", "j", "--json")).out)["env"] == {"PW": "now-plain"}


def test_a_failure_notification_carries_the_masked_output(tmp_path: Path) -> None:
    got = tmp_path / "notified.json"
    hook = tmp_path / "hook"
    hook.write_text(f"#!/bin/sh\ncat > {got}\n")
    hook.chmod(0o755)
    where = secrets_dir(tmp_path)
    put(where, "token", "notified-secret-value")
    cli = make_cli(tmp_path, SCHEDCTL_SECRETS_DIR=str(where))
    ok(cli("add", "j", "-s", "@daily", "--secret", "TOKEN=file:token", "--notify",
           f"exec:{hook}", "--", "/bin/sh", "-c", 'echo "leaking $TOKEN"; exit 3'))  # fmt: skip
    assert cli("run", "j", "--now").rc == 3
    if not got.exists():
        ok(cli("notify"))
    document = got.read_text()
    assert "leaking ***" in document and "notified-secret-value" not in document


NOBODY = pwd.getpwnam("nobody").pw_uid


@pytest.mark.parametrize("case", ["mode 0777", "mode 1777", "owned by nobody", "parent 0777",
                                  "symlink owned by nobody"])  # fmt: skip
def test_a_secrets_directory_others_can_change_is_refused(tmp_path: Path, case: str) -> None:
    """Another user who can swap a file or symlink there would choose the value a job gets."""
    parent = tmp_path / "parent"
    parent.mkdir(mode=0o755)
    where = parent / "secrets"
    where.mkdir(mode=0o700)
    put(where, "a_tok", "value-for-this-job")
    put(where, "b_tok", "ROOT-ONLY-OTHER-KEY")
    mark = tmp_path / "got"
    cli = make_cli(tmp_path, SCHEDCTL_SECRETS_DIR=str(where))
    ok(cli("add", "sa", "-s", "@daily", "--secret", "TOK=file:a_tok", "--", "/bin/sh", "-c",
           f'printf %s "$TOK" > {mark}'))  # fmt: skip
    # A symlink inside the directory to a file that passes the checks is followed.
    (where / "a_tok").unlink()
    (where / "a_tok").symlink_to("b_tok")
    ok(cli("run", "sa", "--now"))
    assert mark.read_text() == "ROOT-ONLY-OTHER-KEY"
    mark.unlink()
    (where / "a_tok").unlink()
    put(where, "a_tok", "value-for-this-job")
    expect = "is not safe"
    if case == "mode 0777":
        where.chmod(0o777)
        expect = f"the secrets directory {where} is not safe ({where} is writable by its group"
    elif case == "mode 1777":
        where.chmod(0o1777)
        expect = f"({where} is writable by its group or others (mode 1777))"
    elif case == "owned by nobody":
        os.chown(where, NOBODY, -1)
        expect = f"({where} belongs to uid {NOBODY})"
    elif case == "parent 0777":
        parent.chmod(0o777)
        expect = f"({parent} is writable by its group or others (mode 0777))"
    else:
        (where / "a_tok").unlink()
        (where / "a_tok").symlink_to("b_tok")
        os.lchown(where / "a_tok", NOBODY, -1)
        expect = f"{where / 'a_tok'} is a symlink owned by uid {NOBODY}"
    if case.startswith(("mode", "owned", "parent")):
        # What the other user does once they can: point the job's secret at another one.
        (where / "a_tok").unlink()
        (where / "a_tok").symlink_to("b_tok")
    refused = cli("run", "sa", "--now")
    assert refused.rc == SECRET_EXIT, refused.err
    errors = [ln for ln in refused.err.splitlines() if ln.startswith("schedctl: error: ")]
    assert len(errors) == 1 and "Traceback" not in refused.err, refused.err
    assert errors[0].startswith("schedctl: error: secret TOK (file:a_tok): ")
    assert expect in errors[0] and errors[0].endswith("the job was not run"), errors[0]
    assert not mark.exists() and "ROOT-ONLY" not in refused.err


@pytest.mark.parametrize("case", ["mode 0644", "owned by nobody", "symlink out",
                                  "directory 0777"])  # fmt: skip
def test_an_unsafe_credential_is_refused_and_the_job_not_run(tmp_path: Path, case: str) -> None:
    """A credential gets the checks a file secret gets, for what systemd writes: 0400, ours."""
    creds = tmp_path / "credentials"
    creds.mkdir(mode=0o500)
    mark = tmp_path / "got"
    cli = make_cli(tmp_path, CREDENTIALS_DIRECTORY=str(creds))
    ok(cli("add", "j", "-s", "@daily", "--secret", "KEY=credential:api.key", "--", "/bin/sh",
           "-c", f'printf %s "$KEY" > {mark}'))  # fmt: skip
    path = put(creds, "api.key", "v-as-systemd-wrote-it", 0o400)
    ok(cli("run", "j", "--now"))
    assert mark.read_text() == "v-as-systemd-wrote-it"
    mark.unlink()
    if case == "mode 0644":
        path.chmod(0o644)
        expect = f"{path} has mode 0644, open to others"
    elif case == "owned by nobody":
        os.chown(path, NOBODY, -1)
        expect = f"{path} is owned by uid {NOBODY}"
    elif case == "symlink out":
        path.unlink()
        path.symlink_to(put(tmp_path, "outside", "v-outside"))
        expect = "is a symlink that leads out of the credentials directory"
    else:
        creds.chmod(0o777)
        expect = f"the credentials directory {creds} is not safe"
    refused = cli("run", "j", "--now")
    assert refused.rc == SECRET_EXIT, refused.err
    errors = [ln for ln in refused.err.splitlines() if ln.startswith("schedctl: error: ")]
    assert len(errors) == 1 and "Traceback" not in refused.err, refused.err
    assert errors[0].startswith("schedctl: error: secret KEY (credential:api.key): ")
    assert expect in errors[0] and errors[0].endswith("the job was not run"), errors[0]
    assert not mark.exists() and "v-" not in refused.err
