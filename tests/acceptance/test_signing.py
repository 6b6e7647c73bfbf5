"""Signed definitions and host policy through the installed binary, with real ssh-keygen keys.

A database writer must not be able to make hosts run a changed definition: hosts that
require signatures refuse it (recorded, CRITICAL in `check`, not installed by `sync`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from cli_helpers import BIN, Cli, make_cli, ok, one_line_error
from test_roles import Roles, roles  # noqa: F401 (the fixture)

from schedctl.errors import ExitCode

REFUSED = int(ExitCode.REFUSED)
CHANGED = int(ExitCode.CHANGED_AFTER_SIGNING)


def make_key(where: Path, name: str) -> Path:
    """Generate a real ed25519 key pair; return the private key's path."""
    key = where / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)],
                   check=True)  # fmt: skip
    return key


def allowed_signers(path: Path, *entries: tuple[str, Path, str]) -> Path:
    """Write an allowed-signers file: (principal, key, options) per line."""
    lines = []
    for principal, key, options in entries:
        public = Path(f"{key}.pub").read_text().strip()
        lines.append(f"{principal} {options + ' ' if options else ''}{public}")
    path.write_text("\n".join(lines) + "\n")
    return path


def sql(url: str, statement: str) -> int:
    """Run one statement straight on the database, as any writer of the `jobs` table could."""
    import sqlalchemy as sa

    from schedctl.config import parse_database_url
    from schedctl.db.schema import make_engine

    engine = make_engine(parse_database_url(url))
    try:
        with engine.begin() as conn:
            return int(conn.execute(sa.text(statement)).rowcount)
    finally:
        engine.dispose()


def host_cli(tmp_path: Path, name: str, url: str, config: Path | None = None, **extra: str) -> Cli:
    """A host: its own name, data directory and configuration file."""
    where = tmp_path / name
    where.mkdir(exist_ok=True)
    settings = {"SCHEDCTL_HOST": name, **extra}
    if url.startswith("postgresql"):
        settings["SCHEDCTL_DATABASE_URL"] = url
    else:
        # SQLite: every "host" shares the one file, as hosts share a PostgreSQL database.
        settings["SCHEDCTL_DATABASE_URL"] = url
    if config is not None:
        settings["SCHEDCTL_CONFIG"] = str(config)
    return make_cli(where, **settings)


def installed(crontab: Path) -> set[str]:
    """Return the jobs a crontab file runs."""
    return {line.rsplit(" ", 1)[1] for line in crontab.read_text().splitlines()
            if line and not line.startswith("#") and " run " in line}  # fmt: skip


def refusals(cli: Cli, job: str) -> dict[str, dict[str, object]]:
    return {r["host"]: r for r in json.loads(ok(cli("history", job, "--refused", "--json")).out)}


def test_a_definition_changed_in_sql_is_refused_on_every_host(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    _, url, _ = backend
    key = make_key(tmp_path, "alice")
    signers = allowed_signers(tmp_path / "allowed_signers",
                              ("alice@example.com", key, 'namespaces="schedctl-job"'))  # fmt: skip
    operator = host_cli(tmp_path, "op", url, SCHEDCTL_SIGNING_KEY=str(key),
                        SCHEDCTL_SIGNER="alice@example.com")  # fmt: skip
    # One host reads the settings from its configuration file, the other from its environment.
    conf = tmp_path / "h1.env"
    conf.write_text(f"SCHEDCTL_REQUIRE_SIGNATURE=1\nSCHEDCTL_ALLOWED_SIGNERS={signers}\n")
    hosts = {
        "h1": host_cli(tmp_path, "h1", url, conf),
        "h2": host_cli(tmp_path, "h2", url, SCHEDCTL_REQUIRE_SIGNATURE="1",
                       SCHEDCTL_ALLOWED_SIGNERS=str(signers)),
    }  # fmt: skip
    # A schedule with no slot due now: `run` without --now then runs nothing even when allowed.
    added = ok(operator("add", "nightly", "-s", "0 0 1 1 *", "--user", "nobody", "--json",
                        "--", "/bin/true"))  # fmt: skip
    assert json.loads(added.out)["signed_by"] == "alice@example.com"
    assert "unsigned" not in added.out + added.err
    for name, host in hosts.items():
        ran = ok(host("run", "nightly", "--now"))
        assert "run.finished" in ran.err, (name, ran.err)
    cron = {name: tmp_path / name / "cron.d" / "schedctl" for name in hosts}
    for path in cron.values():
        path.parent.mkdir()
    for name, host in hosts.items():
        ok(host("sync", "crontab", "--file", str(cron[name]), "--schedctl", str(BIN)))
        assert installed(cron[name]) == {"nightly"}

    # The attack: whoever can write `jobs` changes the command and drops the user; the
    # revision stays as it was.
    pwned = tmp_path / "pwned"
    cast = "::jsonb" if url.startswith("postgresql") else ""
    assert sql(url, f"UPDATE jobs SET command = '[\"/usr/bin/touch\", \"{pwned}\"]'{cast}, "
                    f"run_as_user = NULL WHERE name = 'nightly'") == 1  # fmt: skip
    for name, host in hosts.items():
        for args in (("run", "nightly"), ("run", "nightly", "--now")):
            refused = host(*args)
            assert refused.rc == REFUSED, (name, args, refused.rc, refused.err)
            lines = [x for x in refused.err.splitlines() if "run.refused.signature" in x]
            assert len(lines) == 1, refused.err
            assert "changed after it was signed" in lines[0]
            assert "schedctl verify nightly" in lines[0]
            assert "schedctl sign nightly --accept-changes" in lines[0]
            assert "Traceback" not in refused.err
    assert not pwned.exists()
    # Recorded per host; no slot taken, no run row beyond the two good ones.
    found = refusals(operator, "nightly")
    assert set(found) == {"h1", "h2"}
    assert all(r["kind"] == "signature" and r["count"] == 2 for r in found.values())
    history = json.loads(ok(operator("history", "nightly", "--json")).out)
    assert [r["status"] for r in history] == ["succeeded", "succeeded"]
    assert "host h1 refuses job nightly" in ok(operator("history", "nightly")).err
    checked = operator("check", "nightly")
    assert checked.rc == 2, checked.out
    assert "refused on host h1 (signature)" in checked.out
    assert "refused on host h2 (signature)" in checked.out
    verified = operator("verify", "nightly", "--json")
    assert verified.rc == 0  # the operator's host requires nothing
    assert json.loads(verified.out)[0]["valid"] is None
    verified = hosts["h2"]("verify", "nightly", "--json")
    assert verified.rc == REFUSED
    assert json.loads(verified.out)[0]["valid"] is False
    # sync removes the line it had installed, and says why.
    for name, host in hosts.items():
        synced = ok(host("sync", "crontab", "--file", str(cron[name]), "--schedctl", str(BIN)))
        assert "job nightly not installed: this host refuses it (signature" in synced.err
        assert installed(cron[name]) == set()

    # The operator looks, and signs the definition they mean: it runs again everywhere. A
    # plain edit would sign the changed row's other fields unseen: refused, nothing stored.
    one_line_error(operator("edit", "nightly", "--user", "nobody", "--", "/bin/true"),
                   CHANGED, "changed after 'alice@example.com' signed it (command, ")  # fmt: skip
    shown = ok(operator("verify", "nightly")).out
    assert f'command: ["/bin/true"] -> ["/usr/bin/touch", "{pwned}"]' in shown, shown
    assert 'run_as_user: "nobody" -> null' in shown, shown
    ok(operator("edit", "nightly", "--accept-changes", "--user", "nobody", "--", "/bin/true"))
    for name, host in hosts.items():
        ok(host("run", "nightly", "--now"))
        ok(host("sync", "crontab", "--file", str(cron[name]), "--schedctl", str(BIN)))
        assert installed(cron[name]) == {"nightly"}
    assert not pwned.exists()
    # The change log names the signer of the signed changes, and none for the direct UPDATE.
    changes = json.loads(ok(operator("history", "nightly", "--changes", "--json")).out)
    assert [c["signer_claimed"] for c in changes] == [
        "alice@example.com",
        None,
        "alice@example.com",
    ]
    assert refusals(operator, "nightly") == {}
    ok(operator("check", "nightly"))
    assert ok(hosts["h1"]("verify", "nightly")).out.count("valid") == 1


def test_unsigned_unknown_signers_and_tampered_signatures_are_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    alice, mallory = make_key(tmp_path, "alice"), make_key(tmp_path, "mallory")
    signers = allowed_signers(tmp_path / "allowed", ("alice@example.com", alice, ""),
                              ("carol@example.com", mallory, 'namespaces="git"'))  # fmt: skip
    as_alice = host_cli(tmp_path, "a", url, SCHEDCTL_SIGNING_KEY=str(alice),
                        SCHEDCTL_SIGNER="alice@example.com")  # fmt: skip
    as_mallory = host_cli(tmp_path, "m", url, SCHEDCTL_SIGNING_KEY=str(mallory),
                          SCHEDCTL_SIGNER="alice@example.com")  # fmt: skip
    as_carol = host_cli(tmp_path, "c", url, SCHEDCTL_SIGNING_KEY=str(mallory),
                        SCHEDCTL_SIGNER="carol@example.com")  # fmt: skip
    unsigned = host_cli(tmp_path, "u", url)
    ok(as_alice("db", "upgrade"))
    marker = tmp_path / "ran"
    for cli, job in ((as_alice, "good"), (as_mallory, "forged"), (as_carol, "wrong-ns"),
                     (as_alice, "tampered")):  # fmt: skip
        added = ok(cli("add", job, "-s", "0 0 1 1 *", "--", "/usr/bin/touch", f"{marker}-{job}"))
        assert "unsigned" not in added.out
    added = ok(unsigned("add", "plain", "-s", "0 0 1 1 *", "--", "/usr/bin/touch", f"{marker}-p"))
    assert added.out.count("unsigned: hosts with require_signature will refuse it") == 1
    # A signature lifted from another job: valid bytes, wrong definition.
    assert sql(url, "UPDATE jobs SET signature = (SELECT signature FROM jobs WHERE name = 'good') "
                    "WHERE name = 'tampered'") == 1  # fmt: skip
    host = host_cli(tmp_path, "h", url, SCHEDCTL_REQUIRE_SIGNATURE="1",
                    SCHEDCTL_ALLOWED_SIGNERS=str(signers))  # fmt: skip
    expected = {
        "forged": "not allowed to sign jobs",
        "wrong-ns": "not allowed to sign jobs",
        "tampered": "changed after it was signed",
        "plain": "unsigned",
    }
    for job, why in expected.items():
        refused = host("run", job, "--now")
        assert refused.rc == REFUSED, (job, refused.err)
        assert why in refused.err, (job, refused.err)
        assert not Path(f"{marker}-{job}").exists()
    ok(host("run", "good", "--now"))
    assert Path(f"{marker}-good").exists()
    verdicts = {v["job"]: v for v in json.loads(host("verify", "--json").out)}
    assert host("verify").rc == REFUSED
    assert verdicts["good"]["valid"] is True and not verdicts["good"]["refused"]
    assert verdicts["forged"]["signer"] == "alice@example.com"
    assert verdicts["forged"]["key"] != verdicts["good"]["key"]
    for job, why in expected.items():
        assert verdicts[job]["refused"] and why in verdicts[job]["refusal"]["reason"], job
    assert ok(host("verify", "good")).out.count("runs") == 1
    # Re-signing by an allowed signer is what makes a job run again.
    one_line_error(as_alice("sign", "tampered", "plain"), CHANGED,
                   "does not match the signature either")  # fmt: skip
    ok(as_alice("sign", "tampered", "plain", "--accept-changes"))
    ok(host("run", "tampered", "--now"))
    ok(host("run", "plain", "--now"))


def test_a_key_held_by_ssh_agent_signs(tmp_path: Path) -> None:
    key = make_key(tmp_path, "agent-key")
    sock = tmp_path / "agent.sock"
    agent = subprocess.run(["ssh-agent", "-a", str(sock), "-s"], capture_output=True, text=True,
                           check=True)  # fmt: skip
    pid = int(agent.stdout.split("SSH_AGENT_PID=", 1)[1].split(";", 1)[0])
    try:
        subprocess.run(["ssh-add", "-q", str(key)], env={**os.environ, "SSH_AUTH_SOCK": str(sock)},
                       check=True, capture_output=True)  # fmt: skip
        key.unlink()  # only the agent holds the private half now
        public = Path(f"{key}.pub")
        url = f"sqlite:///{tmp_path / 'shared.db'}"
        operator = host_cli(tmp_path, "op", url, SCHEDCTL_SIGNER="ops@example.com",
                            SSH_AUTH_SOCK=str(sock))  # fmt: skip
        ok(operator("--sign-with", str(public), "add", "agent-job", "-s", "0 0 1 1 *", "--",
                    "/bin/true"))  # fmt: skip
        no_agent = host_cli(tmp_path, "na", url, SCHEDCTL_SIGNER="ops@example.com",
                            SCHEDCTL_SIGNING_KEY=str(public))  # fmt: skip
        one_line_error(no_agent("add", "other", "-s", "@daily", "--", "/bin/true"),
                       ExitCode.CONFIG, "ssh-keygen could not sign")  # fmt: skip
    finally:
        os.kill(pid, signal.SIGTERM)
    signers = allowed_signers(tmp_path / "allowed", ("ops@example.com", key, ""))
    host = host_cli(tmp_path, "h", url, SCHEDCTL_REQUIRE_SIGNATURE="1",
                    SCHEDCTL_ALLOWED_SIGNERS=str(signers))  # fmt: skip
    ok(host("run", "agent-job", "--now"))
    assert json.loads(ok(host("verify", "--json")).out) == [
        {"job": "agent-job", "revision": 1, "signed": True, "signer": "ops@example.com",
         "key": json.loads(ok(host("show", "agent-job", "--json")).out)["signing_key"],
         "valid": True, "reason": None, "refused": False, "refusal": None,
         "key_matches_stored": True, "changed_after_signing": False, "changes": None}
    ]  # fmt: skip
    # Nothing half-stored by the failed add.
    one_line_error(host("show", "other"), ExitCode.NOT_FOUND, "no job named 'other'")


@pytest.mark.usefixtures("machine_settings_turn")
def test_host_policy_refuses_users_and_commands_outside_its_directories(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    operator = host_cli(tmp_path, "op", url)
    jobs_dir = tmp_path / "jobs"
    jobs_dir.mkdir()
    marker = tmp_path / "marks"
    marker.mkdir()
    script = jobs_dir / "mark"
    script.write_text(f'#!/bin/sh\ntouch {marker}/"$1"\n')
    script.chmod(0o755)
    (jobs_dir / "escape").symlink_to("/usr/bin/touch")
    ok(operator("add", "as-root", "-s", "0 0 1 1 *", "--", str(script), "as-root"))
    ok(operator("add", "outside", "-s", "0 0 1 1 *", "--", "/usr/bin/touch", f"{marker}/outside"))
    ok(operator("add", "linked", "-s", "0 0 1 1 *", "--", str(jobs_dir / "escape"),
                f"{marker}/linked"))  # fmt: skip
    ok(operator("add", "shelled", "-s", "0 0 1 1 *", "--shell", "--",
                f"{script} shelled; touch {marker}/shelled-too"))  # fmt: skip
    ok(operator("add", "plain-shell", "-s", "0 0 1 1 *", "--shell", "--",
                f"{script} plain-shell"))  # fmt: skip
    conf = tmp_path / "host.env"
    conf.write_text(f"SCHEDCTL_ALLOWED_USERS=nobody\nSCHEDCTL_COMMAND_DIRS={jobs_dir}\n")
    host = host_cli(tmp_path, "h", url, conf)
    refused = host("run", "as-root", "--now")
    assert refused.rc == REFUSED, refused.err
    assert "run.refused.policy" in refused.err and "runs as 'root'" in refused.err
    assert not (marker / "as-root").exists()
    conf.write_text(f"SCHEDCTL_ALLOWED_USERS=nobody,root\nSCHEDCTL_COMMAND_DIRS={jobs_dir}\n")
    ok(host("run", "as-root", "--now"))
    assert (marker / "as-root").exists()
    ok(host("run", "plain-shell", "--now"))
    assert (marker / "plain-shell").exists()
    for job, why in (("outside", "outside SCHEDCTL_COMMAND_DIRS"),
                     ("linked", "resolves to /usr/bin/touch"),
                     ("shelled", "holds shell syntax")):  # fmt: skip
        refused = host("run", job, "--now")
        assert refused.rc == REFUSED, (job, refused.err)
        assert why in refused.err, (job, refused.err)
    assert sorted(p.name for p in marker.iterdir()) == ["as-root", "plain-shell"]
    checked = host("check", "outside")
    assert checked.rc == 2 and "refused on host h (policy)" in checked.out
    cron = tmp_path / "cron.d" / "schedctl"
    cron.parent.mkdir()
    synced = ok(host("sync", "crontab", "--file", str(cron), "--schedctl", str(BIN)))
    assert installed(cron) == {"as-root", "plain-shell"}
    for job in ("outside", "linked", "shelled"):
        assert f"job {job} not installed: this host refuses it (policy" in synced.err


def test_an_exec_notification_written_into_the_outbox_is_not_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    key = make_key(tmp_path, "alice")
    signers = allowed_signers(tmp_path / "allowed", ("alice@example.com", key, ""))
    scripts = {}
    for name in ("signed-target", "planted"):
        script = tmp_path / name
        script.write_text(f"#!/bin/sh\ntouch {tmp_path}/{name}.ran\n")
        script.chmod(0o755)
        scripts[name] = script
    operator = host_cli(tmp_path, "op", url, SCHEDCTL_SIGNING_KEY=str(key),
                        SCHEDCTL_SIGNER="alice@example.com")  # fmt: skip
    ok(operator("add", "good", "-s", "0 0 1 1 *", "--notify", f"exec:{scripts['signed-target']}",
                "--", "/bin/true"))  # fmt: skip
    # Whoever can write the outbox queues a command of their own for the job.
    for target in scripts.values():
        assert sql(url, "INSERT INTO notifications (job_id, job_name, event, target, state, "
                        "attempts, created_at, next_attempt_at) SELECT id, name, 'failure', "
                        f"'exec:{target}', 'pending', 0, '2026-01-01 00:00:00', "
                        "'2026-01-01 00:00:00' FROM jobs WHERE name = 'good'") == 1  # fmt: skip
    host = host_cli(tmp_path, "h", url, SCHEDCTL_REQUIRE_SIGNATURE="1",
                    SCHEDCTL_ALLOWED_SIGNERS=str(signers), SCHEDCTL_NOTIFY_ATTEMPTS="1")  # fmt: skip
    delivered = host("notify")
    assert (tmp_path / "signed-target.ran").exists(), delivered.err
    assert not (tmp_path / "planted.ran").exists()
    assert "lists no such target" in delivered.err


def test_the_runner_role_records_and_clears_refusals_the_reader_sees(
    roles: Roles,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    key = make_key(tmp_path, "alice")
    signers = allowed_signers(tmp_path / "allowed", ("alice@example.com", key, ""))
    ok(roles.cli("admin")("add", "nightly", "-s", "0 0 1 1 *", "--", "/bin/true"))
    host = roles.cli("runner", SCHEDCTL_HOST="h1", SCHEDCTL_REQUIRE_SIGNATURE="1",
                     SCHEDCTL_ALLOWED_SIGNERS=str(signers))  # fmt: skip
    refused = host("run", "nightly", "--now")
    assert refused.rc == REFUSED and "its definition is unsigned" in refused.err, refused.err
    assert "record_error" not in refused.err
    cron = tmp_path / "cron.d" / "schedctl"
    cron.parent.mkdir()
    ok(host("sync", "crontab", "--file", str(cron), "--schedctl", str(BIN)))
    assert installed(cron) == set()
    checked = roles.cli("reader")("check", "nightly")
    assert checked.rc == 2 and "refused on host h1 (signature)" in checked.out
    ok(roles.cli("admin", SCHEDCTL_SIGNING_KEY=str(key), SCHEDCTL_SIGNER="alice@example.com")(
        "sign", "nightly"))  # fmt: skip
    ok(host("sync", "crontab", "--file", str(cron), "--schedctl", str(BIN)))
    assert installed(cron) == {"nightly"}
    assert json.loads(ok(roles.cli("reader")("history", "--refused", "--json")).out) == []


def policy_host(tmp_path: Path) -> tuple[Cli, Cli, Path, Path, Path]:
    """A host that allows root and only the programs of `allowed/`, and a planted `evil/`.

    Returns (operator, host, allowed, evil, marks): each program writes its name into marks.
    """
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    marks = tmp_path / "marks"
    marks.mkdir()
    allowed, evil = tmp_path / "allowed", tmp_path / "evil"
    for where, mark in ((allowed, "ALLOWED"), (evil, "EVIL")):
        where.mkdir()
        for name in ("x", "sh") if where == evil else ("x",):
            script = where / name
            script.write_text(f'#!/bin/sh\necho {mark} > {marks}/{mark}-{name}-"$1"\n')
            script.chmod(0o755)
    conf = tmp_path / "host.env"
    conf.write_text(f"SCHEDCTL_ALLOWED_USERS=root\nSCHEDCTL_COMMAND_DIRS={allowed}\n")
    return host_cli(tmp_path, "op", url), host_cli(tmp_path, "h", url, conf), allowed, evil, marks


def test_command_dirs_run_the_checked_file_whatever_the_path_and_working_directory(
    tmp_path: Path,
) -> None:
    """An empty or `.` PATH entry cannot make `run` start ./x from the job's working directory."""
    operator, host, allowed, evil, marks = policy_host(tmp_path)
    for job, path, shell in (("empty", f":{allowed}:/usr/bin:/bin", False),
                             ("dot", f".:{allowed}:/usr/bin:/bin", False),
                             ("relative", f"evil:{allowed}:/usr/bin:/bin", False),
                             ("shell-empty", f":{allowed}:/usr/bin:/bin", True)):  # fmt: skip
        command = ["--shell", "--", f"x {job}"] if shell else ["--", "x", job]
        ok(operator("add", job, "-s", "0 0 1 1 *", "--workdir", str(evil), "-e", f"PATH={path}",
                    *command))  # fmt: skip
        refused = host("run", job, "--now")
        assert refused.rc == REFUSED, (job, refused.err)
        assert "run.refused.policy" in refused.err and "give only absolute directories" in (
            refused.err
        ), (job, refused.err)
        verified = host("verify", job, "--json")
        assert verified.rc == REFUSED and json.loads(verified.out)[0]["refused"] is True, verified
    # The host's own PATH may hold an empty entry: the file checked is the file started, not
    # the ./x a lookup from the job's working directory would find.
    ok(operator("add", "host-path", "-s", "0 0 1 1 *", "--workdir", str(evil), "--", "x", "hp"))
    ok(operator("add", "host-path-shell", "-s", "0 0 1 1 *", "--workdir", str(evil), "--shell",
                "--", "x hps"))  # fmt: skip
    conf = tmp_path / "host.env"
    odd = host_cli(tmp_path, "h", f"sqlite:///{tmp_path / 'shared.db'}", conf,
                   PATH=f":{allowed}:/usr/bin:/bin")  # fmt: skip
    ok(odd("run", "host-path", "--now"))
    ok(odd("run", "host-path-shell", "--now"))
    assert sorted(p.name for p in marks.iterdir()) == ["ALLOWED-x-hp", "ALLOWED-x-hps"]


def test_command_dirs_refuse_variables_that_load_other_code(tmp_path: Path) -> None:
    """BASH_ENV, a PATH others can write for `#!/usr/bin/env`, GCONV_PATH and their kind."""
    operator, host, allowed, evil, marks = policy_host(tmp_path)
    bash = allowed / "bs"
    bash.write_text(f"#!/bin/bash\necho bash > {marks}/ALLOWED-bs\n")
    via_env = allowed / "es"
    via_env.write_text(f"#!/usr/bin/env sh\necho env > {marks}/ALLOWED-es\n")
    for script in (bash, via_env):
        script.chmod(0o755)
    planted = evil / "evilenv.sh"
    planted.write_text(f"echo EVIL > {marks}/EVIL-bash-env\n")
    # A directory another user owns: what `env sh` finds there is theirs.
    shutil_chown(evil, "nobody")
    cases = {
        "bash-env": (["-e", f"BASH_ENV={planted}"], bash, "sets BASH_ENV"),
        "env-path": (["-e", f"PATH={evil}:/usr/bin:/bin"], via_env, "someone other than root"),
        "gconv": (["-e", f"GCONV_PATH={evil}"], bash, "sets GCONV_PATH"),
        "python": (["-e", f"PYTHONPATH={evil}"], bash, "sets PYTHONPATH"),
        "perl": (["-e", "PERL5OPT=-Mevil"], bash, "sets PERL5OPT"),
        "node": (["-e", "NODE_OPTIONS=--require /x"], bash, "sets NODE_OPTIONS"),
        "shellopts": (["-e", "SHELLOPTS=xtrace", "-e", "PS4=$(id)"], bash, "sets PS4"),
    }
    for job, (env, script, why) in cases.items():
        ok(operator("add", job, "-s", "0 0 1 1 *", *env, "--", str(script)))
        refused = host("run", job, "--now")
        assert refused.rc == REFUSED, (job, refused.err)
        assert why in refused.err and "run.refused.policy" in refused.err, (job, refused.err)
    assert list(marks.iterdir()) == []
    # A PATH of root-only directories, and the allowed ones, is fine.
    ok(operator("add", "root-path", "-s", "0 0 1 1 *", "-e", f"PATH={allowed}:/usr/bin:/bin",
                "-e", "LANG=C.UTF-8", "--", str(via_env)))  # fmt: skip
    ok(host("run", "root-path", "--now"))
    assert [p.name for p in marks.iterdir()] == ["ALLOWED-es"]


def shutil_chown(path: Path, user: str) -> None:
    import shutil

    shutil.chown(path, user)


def sql_value(url: str, query: str) -> object:
    """Read one value straight from the database."""
    import sqlalchemy as sa

    from schedctl.config import parse_database_url
    from schedctl.db.schema import make_engine

    engine = make_engine(parse_database_url(url))
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(query)).scalar()
    finally:
        engine.dispose()


def test_a_definition_changed_in_sql_is_not_signed_again_by_routine_commands(
    backend: tuple[Cli, str, dict[str, str]], tmp_path: Path
) -> None:
    _, url, _ = backend
    alice, mallory = make_key(tmp_path, "alice"), make_key(tmp_path, "mallory")
    signers = allowed_signers(tmp_path / "allowed", ("alice@example.com", alice, ""))
    # The operator's own host knows who may sign: a job mallory signed is no one's to re-sign.
    operator = host_cli(tmp_path, "op", url, SCHEDCTL_SIGNING_KEY=str(alice),
                        SCHEDCTL_SIGNER="alice@example.com",
                        SCHEDCTL_ALLOWED_SIGNERS=str(signers))  # fmt: skip
    as_mallory = host_cli(tmp_path, "m", url, SCHEDCTL_SIGNING_KEY=str(mallory),
                          SCHEDCTL_SIGNER="mallory@example.com")  # fmt: skip
    host = host_cli(tmp_path, "h", url, SCHEDCTL_REQUIRE_SIGNATURE="1",
                    SCHEDCTL_ALLOWED_SIGNERS=str(signers))  # fmt: skip
    out = tmp_path / "out"
    ok(operator("add", "sj", "-s", "0 0 1 1 *", "--shell", "--",
                f"echo signed-ran BACKDOOR=$BACKDOOR >> {out}"))  # fmt: skip
    ok(operator("add", "other", "-s", "0 0 1 1 *", "--", "/bin/true"))
    ok(as_mallory("add", "mal", "-s", "0 0 1 1 *", "--", "/bin/true"))
    ok(host_cli(tmp_path, "u", url)("add", "plain", "-s", "0 0 1 1 *", "--", "/bin/true"))
    ok(host("run", "sj", "--now"))
    assert out.read_text() == "signed-ran BACKDOOR=\n"

    cast = "::jsonb" if url.startswith("postgresql") else ""
    assert sql(url, f"""UPDATE jobs SET env = '{{"BACKDOOR": "1"}}'{cast}, """
                    f"""command = '["echo TAMPERED BACKDOOR=$BACKDOOR >> {out}"]'{cast} """
                    "WHERE name = 'sj'") == 1  # fmt: skip
    signature = sql_value(url, "SELECT signature FROM jobs WHERE name = 'sj'")
    refused = host("run", "sj", "--now")
    assert refused.rc == REFUSED, refused.err
    assert "check `schedctl verify sj`" in refused.err
    assert "`schedctl sign sj --accept-changes` only if the change is intended" in refused.err

    # Each routine command is refused (one line, nothing stored), or skips the job.
    for args in (("edit", "sj", "--description", "nightly report"), ("sign", "sj")):
        one_line_error(operator(*args), CHANGED,
                       "job 'sj' not stored: its definition was changed after "
                       "'alice@example.com' signed it (command, env, ")  # fmt: skip
    signed_all = operator("sign")
    assert signed_all.rc == CHANGED, signed_all.err
    assert "signed job other" in signed_all.out and "signed job plain" in signed_all.out
    assert "skipped job sj: its definition was changed after" in signed_all.err
    assert "skipped job mal: it is signed by 'mallory@example.com', whom" in signed_all.err
    assert "signed job sj" not in signed_all.out and "signed job mal" not in signed_all.out
    ok(operator("disable", "sj"))  # taken off every host, its old signature kept
    one_line_error(operator("enable", "sj"), CHANGED, "job 'sj' not stored")
    assert sql_value(url, "SELECT signature FROM jobs WHERE name = 'sj'") == signature
    assert sql_value(url, "SELECT signer FROM jobs WHERE name = 'mal'") == "mallory@example.com"
    assert host("run", "sj", "--now").rc == REFUSED
    assert out.read_text() == "signed-ran BACKDOOR=\n"

    # Review, then the explicit act: only named jobs.
    shown = ok(operator("verify", "sj")).out
    assert "job sj changed after alice@example.com signed it:" in shown, shown
    assert 'env.BACKDOOR: (unset) -> "1"' in shown, shown
    assert f'command: ["echo signed-ran BACKDOOR=$BACKDOOR >> {out}"] -> ' in shown, shown
    assert "enabled: true -> false" in shown, shown
    one_line_error(operator("sign", "--accept-changes"), int(ExitCode.USAGE), "name the jobs")
    ok(operator("sign", "sj", "--accept-changes"))
    ok(operator("enable", "sj"))
    ok(host("run", "sj", "--now"))
    assert out.read_text() == "signed-ran BACKDOOR=\nTAMPERED BACKDOOR=1\n"
    assert "changed after" not in ok(operator("verify", "sj")).out


def test_verify_shows_the_key_of_the_signature_not_the_stored_one(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    key = make_key(tmp_path, "alice")
    signers = allowed_signers(tmp_path / "allowed", ("alice@example.com", key, ""))
    operator = host_cli(tmp_path, "op", url, SCHEDCTL_SIGNING_KEY=str(key),
                        SCHEDCTL_SIGNER="alice@example.com")  # fmt: skip
    ok(operator("add", "rich", "-s", "0 0 1 1 *", "--", "/bin/true"))
    listed = subprocess.run(["ssh-keygen", "-l", "-f", f"{key}.pub"], capture_output=True,
                            text=True, check=True).stdout.split()[1]  # fmt: skip
    fake = "SHA256:FakeFingerprintOfBobsHardwareKey0000000000"
    assert sql(url, f"UPDATE jobs SET signing_key = '{fake}' WHERE name = 'rich'") == 1
    host = host_cli(tmp_path, "h", url, SCHEDCTL_REQUIRE_SIGNATURE="1",
                    SCHEDCTL_ALLOWED_SIGNERS=str(signers))  # fmt: skip
    found = json.loads(host("verify", "rich", "--json").out)[0]
    assert found["key"] == listed and found["key_matches_stored"] is False
    shown = host("verify", "rich", "-o", "wide").out
    assert fake not in shown.split("\n\n")[0].split("rich", 1)[1].splitlines()[0], shown
    assert listed in shown
    assert f"its stored key {fake} is not the key that made its signature ({listed})" in shown


def test_the_config_files_trust_settings_are_not_loosened_by_the_environment(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    alice, mallory = make_key(tmp_path, "alice"), make_key(tmp_path, "mallory")
    signers = allowed_signers(tmp_path / "allowed", ("alice@example.com", alice, ""))
    theirs = allowed_signers(tmp_path / "theirs", ("mallory@example.com", mallory, ""))
    marker = tmp_path / "ran"
    as_mallory = host_cli(tmp_path, "m", url, SCHEDCTL_SIGNING_KEY=str(mallory),
                          SCHEDCTL_SIGNER="mallory@example.com")  # fmt: skip
    ok(as_mallory("add", "mj", "-s", "0 0 1 1 *", "--", "/usr/bin/touch", str(marker)))
    conf = tmp_path / "host.env"
    conf.write_text(f"SCHEDCTL_ALLOWED_SIGNERS={signers}\nSCHEDCTL_REQUIRE_SIGNATURE=1\n"
                    "SCHEDCTL_ALLOWED_USERS=nobody\n")  # fmt: skip
    assert host_cli(tmp_path, "h", url, conf)("run", "mj", "--now").rc == REFUSED
    for key, value in (("SCHEDCTL_ALLOWED_SIGNERS", str(theirs)),
                       ("SCHEDCTL_REQUIRE_SIGNATURE", "0"),
                       ("SCHEDCTL_ALLOWED_USERS", "nobody,root")):  # fmt: skip
        loosened = host_cli(tmp_path, "h", url, conf, **{key: value})
        for args in (("run", "mj", "--now"), ("verify", "mj")):
            one_line_error(loosened(*args), int(ExitCode.CONFIG),
                           f"{key} is set in the environment")  # fmt: skip
    assert not marker.exists()
    # The same value as the file's is no conflict; where the file is silent the environment
    # still applies (here: a command directory the job's command is outside of).
    same = host_cli(tmp_path, "h", url, conf, SCHEDCTL_ALLOWED_SIGNERS=str(signers),
                    SCHEDCTL_COMMAND_DIRS=str(tmp_path / "nowhere"))  # fmt: skip
    refused = same("run", "mj", "--now")
    assert refused.rc == REFUSED and "not allowed to sign jobs" in refused.err, refused.err
    conf.write_text("SCHEDCTL_ALLOWED_USERS=nobody,root\n")
    silent = host_cli(tmp_path, "h", url, conf, SCHEDCTL_COMMAND_DIRS=str(tmp_path / "nowhere"))
    refused = silent("run", "mj", "--now")
    assert refused.rc == REFUSED and "outside SCHEDCTL_COMMAND_DIRS" in refused.err, refused.err
    assert not marker.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="root's checks: run as root")
def test_root_refuses_a_config_file_or_database_another_user_can_change(tmp_path: Path) -> None:
    import pwd
    import shutil

    nobody = pwd.getpwnam("nobody")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    url = f"sqlite:///{theirs / 'evil.db'}"
    marker = tmp_path / "ran"
    planter = host_cli(tmp_path, "p", url)
    ok(planter("add", "backup", "-s", "0 0 1 1 *", "--", "/usr/bin/touch", str(marker)))
    conf = tmp_path / "cfg.env"
    conf.write_text(f"SCHEDCTL_DATABASE_URL={url}\n")
    (tmp_path / "h").mkdir()
    host = make_cli(tmp_path / "h", SCHEDCTL_CONFIG=str(conf), SCHEDCTL_HOST="h")

    def chown(path: Path, uid: int, mode: int) -> None:
        os.chown(path, uid, uid and nobody.pw_gid)
        path.chmod(mode)

    # Another user's file, or one anyone may write: refused before it is read.
    chown(conf, nobody.pw_uid, 0o644)
    one_line_error(host("run", "backup", "--now"), int(ExitCode.CONFIG),
                   f"unsafe config file {conf}: it belongs to user nobody")  # fmt: skip
    chown(conf, 0, 0o666)
    one_line_error(host("list"), int(ExitCode.CONFIG),
                   f"unsafe config file {conf}: writable by group and others (mode 0666)")  # fmt: skip
    chown(conf, 0, 0o600)
    # Its database: the file, and the directory it lies in.
    chown(theirs, nobody.pw_uid, 0o755)
    one_line_error(host("run", "backup", "--now"), int(ExitCode.CONFIG),
                   f"unsafe SQLite database directory {theirs}: it belongs to user nobody")  # fmt: skip
    chown(theirs, 0, 0o700)
    chown(theirs / "evil.db", nobody.pw_uid, 0o600)
    one_line_error(host("run", "backup", "--now"), int(ExitCode.CONFIG),
                   f"unsafe SQLite database {theirs / 'evil.db'}: it belongs to user nobody")  # fmt: skip
    chown(theirs / "evil.db", 0, 0o620)
    one_line_error(host("run", "backup", "--now"), int(ExitCode.CONFIG),
                   "writable by its group (mode 0620)")  # fmt: skip
    assert not marker.exists()
    chown(theirs / "evil.db", 0, 0o600)
    ok(host("run", "backup", "--now"))
    assert marker.exists()
    shutil.rmtree(theirs)
