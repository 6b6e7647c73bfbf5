"""report, check, metrics, prune and `history --missed` through the installed binary."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from cli_helpers import BIN, Cli, cli_env, make_cli, ok, one_line_error, tty_run
from pgserver import PgServer
from PIL import Image, ImageStat
from prometheus_client.parser import text_string_to_metric_families


def _tty_output(args: list[str], env: dict[str, str]) -> str:
    """Run the binary on a pseudo-terminal; return what it showed."""
    rc, shown = tty_run(args, env)
    assert rc == 0
    return shown.decode()


@pytest.fixture
def history(tmp_path: Path, pg_url: str) -> tuple[dict[str, str], Cli]:
    """Three jobs run once each for the current minute: one succeeds, one fails, one times out."""
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url)
    ok(cli("db", "upgrade"))
    ok(cli("add", "fine", "-s", "* * * * *", "--tag", "web", "--", "true"))
    ok(cli("add", "broken", "-s", "* * * * *", "--", "sh", "-c", "exit 3"))
    ok(cli("add", "slow", "-s", "* * * * *", "--timeout", "1s", "--", "sleep", "30"))
    for job in ("fine", "broken", "slow"):
        cli("run", job, timeout=90)
    return cli_env(tmp_path, SCHEDCTL_DATABASE_URL=pg_url), cli


def test_report_json_table_and_colour(history: tuple[dict[str, str], Cli], tmp_path: Path) -> None:
    env, cli = history
    data = json.loads(ok(cli("report", "--json", "--since", "1h")).out)
    rows = {r["job"]: r for r in data["jobs"]}
    assert (rows["fine"]["succeeded"], rows["fine"]["failed"], rows["fine"]["state"]) == (
        1,
        0,
        "ok",
    )
    assert (rows["broken"]["failed"], rows["broken"]["state"]) == (1, "failing")
    assert rows["slow"]["failed"] == 1 and rows["slow"]["duration_max_seconds"] >= 1.0
    assert all(r["missed"] == 0 and r["next_fire"] for r in rows.values())
    assert [
        r["job"] for r in json.loads(ok(cli("report", "--json", "--tag", "web")).out)["jobs"]
    ] == ["fine"]
    table = ok(cli("report")).out
    assert "\x1b[" not in table  # piped: plain
    lines = table.splitlines()
    assert lines[0].split()[:7] == ["JOB", "STATE", "RUNS", "OK", "FAILED", "SKIPPED", "MISSED"]
    assert any(line.split()[:2] == ["broken", "failing"] for line in lines)
    tty_env = {k: v for k, v in env.items() if k != "NO_COLOR"} | {"TERM": "xterm-256color"}
    coloured = _tty_output(["report"], tty_env)
    assert "\x1b[31m" in coloured or "\x1b[38;5;" in coloured  # red for the failing job
    plain = _tty_output(["report"], tty_env | {"NO_COLOR": "1"})
    assert "broken" in plain and "\x1b[31m" not in plain and "\x1b[38;5;" not in plain


def test_check_codes_summary_and_unknown(
    history: tuple[dict[str, str], Cli], tmp_path: Path
) -> None:
    _, cli = history
    res = cli("check")
    assert res.rc == 2, res
    lines = res.out.splitlines()
    assert lines[0].startswith("SCHEDCTL CRITICAL - broken, slow (2 critical, 0 warning, 3 jobs)")
    assert "CRITICAL broken: last run" in res.out and "failed, exit 3" in res.out
    assert "CRITICAL slow: last run" in res.out and "timed_out, exit 124" in res.out
    good = cli("check", "fine")
    assert (good.rc, good.out) == (0, "SCHEDCTL OK - 1 jobs OK\n")
    data = json.loads(cli("check", "--json").out)
    assert data["state"] == "CRITICAL" and {j["job"]: j["state"] for j in data["jobs"]} == {
        "fine": "OK", "broken": "CRITICAL", "slow": "CRITICAL"}  # fmt: skip
    gone = make_cli(tmp_path, SCHEDCTL_DATABASE_URL="postgresql://x@127.0.0.1:9/none")("check")
    assert gone.rc == 3 and gone.out.startswith("SCHEDCTL UNKNOWN - ")
    assert "Traceback" not in gone.err
    missing = cli("check", "nope")
    assert missing.rc == 3 and "no job named 'nope'" in missing.out


def test_metrics_file_and_history_missed_and_prune(
    history: tuple[dict[str, str], Cli], tmp_path: Path
) -> None:
    _, cli = history
    out_dir = tmp_path / "textfile"
    out_dir.mkdir()
    ok(cli("metrics", "--output", str(out_dir / "schedctl.prom")))
    assert [p.name for p in out_dir.iterdir()] == ["schedctl.prom"]  # no temp file left
    text = (out_dir / "schedctl.prom").read_text()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    on_stdout = {f.name for f in text_string_to_metric_families(ok(cli("metrics")).out)}
    assert on_stdout == set(fams) and len(fams) == 9
    failed = [
        s
        for s in fams["schedctl_runs"].samples
        if s.labels == {"job": "broken", "status": "failed"}
    ]
    assert failed and failed[0].value == 1
    assert ok(cli("history", "fine", "--missed")).out.strip() == "no missed slots for fine"
    assert json.loads(ok(cli("history", "fine", "--missed", "--json")).out) == []
    one_line_error(cli("history", "--missed"), 2, "--missed needs a JOB")
    assert ok(cli("prune", "--dry-run")).out.startswith("would delete 0 runs")
    one_line_error(cli("prune", "--older-than", "10s"), 2, "at least 1m")
    assert ok(cli("prune", "--older-than", "1m", "--keep-failed", "1m", "--json")).out
    assert json.loads(ok(cli("report", "--json")).out)["jobs"][0]["runs"] >= 0


def test_html_report_renders_in_headless_chromium(
    history: tuple[dict[str, str], Cli], tmp_path: Path
) -> None:
    _, cli = history
    page = tmp_path / "report.html"
    ok(cli("report", "--html", str(page), "--since", "1h"))
    html = page.read_text()
    assert "<svg" in html and "broken" in html and "#e03131" in html  # a failed run drawn red
    for remote in ("src=", "href=", "@import", "url("):
        assert remote not in html  # nothing to fetch at view time
    browser = shutil.which("chromium")
    if browser is None:
        pytest.skip("chromium is not installed (.ci/run installs it)")
    shot = tmp_path / "shot.png"
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'chrome'}", "--window-size=1400,900",
         f"--screenshot={shot}", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    image = Image.open(shot).convert("RGB")
    assert image.size == (1400, 900)
    stat = ImageStat.Stat(image)
    assert max(stat.stddev) > 10  # not a blank page
    colours = {c for _, c in image.getcolors(maxcolors=1_000_000) or []}
    # The status colours of the timeline made it to the screen: succeeded green, failed red.
    assert (0x2F, 0x9E, 0x44) in colours and (0xE0, 0x31, 0x31) in colours


def test_html_report_fits_1280_pixels_without_scrolling(
    history: tuple[dict[str, str], Cli], tmp_path: Path
) -> None:
    _, cli = history
    longest = "a" * 63
    ok(cli("add", longest, "-s", "* * * * *", "--", "false"))
    cli("run", longest, timeout=90)
    page = tmp_path / "report.html"
    ok(cli("report", "--html", str(page), "--since", "1h"))
    browser = shutil.which("chromium")
    if browser is None:
        pytest.skip("chromium is not installed (.ci/run installs it)")
    # The page's own width, as the browser laid it out, read back through the title.
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace(
        "</body>", "<script>document.title='W'+document.documentElement.scrollWidth</script></body>"
    ))  # fmt: skip
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'chrome'}", "--window-size=1280,900", "--dump-dom",
         probe.as_uri()],
        check=True, capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    found = re.search(r"<title>W(\d+)</title>", dom)
    assert found, dom[:500]
    assert int(found[1]) <= 1280


def test_check_writes_nothing_and_runs_with_select_only(
    history: tuple[dict[str, str], Cli], pg: PgServer, pg_url: str, tmp_path: Path
) -> None:
    owner = history[1]
    # A run whose runner died long ago, and a result waiting in this host's spool.
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE runs SET status = 'running', finished_at = NULL, db_backend_pid = 2147483647,"
            " heartbeat_at = now() - interval '1 hour'"
            " WHERE job_id = (SELECT id FROM jobs WHERE name = 'fine')"
        )
        conn.execute("CREATE ROLE monitor LOGIN PASSWORD 'monitor-pw'")
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO monitor")
        conn.execute(
            "CREATE TABLE writes (at timestamptz DEFAULT now(), op text);"
            " CREATE FUNCTION note_write() RETURNS trigger LANGUAGE plpgsql AS"
            " $$BEGIN INSERT INTO writes (op) VALUES (TG_OP); RETURN NULL; END$$;"
            " CREATE TRIGGER note_runs AFTER INSERT OR UPDATE OR DELETE ON runs"
            " FOR EACH STATEMENT EXECUTE FUNCTION note_write();"
            " CREATE TRIGGER note_jobs AFTER INSERT OR UPDATE OR DELETE ON jobs"
            " FOR EACH STATEMENT EXECUTE FUNCTION note_write()"
        )
    spool = tmp_path / "data" / "spool"
    spool.mkdir(parents=True, exist_ok=True, mode=0o700)
    (spool / "run-99.json").write_text("{")
    dbname = pg_url.rsplit("/", 1)[1]
    reader = make_cli(
        tmp_path,
        SCHEDCTL_DATABASE_URL=f"postgresql://monitor:monitor-pw@127.0.0.1:{pg.port}/{dbname}",
    )

    def writes() -> int:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM writes").fetchone()
        return int(row[0]) if row else -1

    for cli in (reader, owner):
        res = cli("check", "fine")
        # The stored row is what is judged: a running run gone silent, not yet marked `lost`.
        assert (res.rc, res.out.splitlines()[1:]) == (
            2, ["CRITICAL fine: run 1 stuck: no heartbeat for 60m"]), (res.out, res.err)  # fmt: skip
        assert writes() == 0 and (spool / "run-99.json").exists()
        assert "spool." not in res.err
    assert reader("check", "--json").rc == 2
    assert writes() == 0
    # --settle opts in to settling: the reader may not, the owner does.
    refused = reader("check", "--settle", "fine")
    assert refused.rc == 3 and "permission denied" in refused.out, refused.out
    settled = owner("check", "--settle", "fine")
    assert settled.rc == 2 and "stuck" not in settled.out and "lost" in settled.out, settled.out
    assert writes() > 0 and not (spool / "run-99.json").exists()
    assert (spool / "bad" / "run-99.json").exists()


def test_a_prune_cut_off_between_batches_leaves_no_slot_it_deleted_counted_missed(
    tmp_path: Path, pg_url: str
) -> None:
    """Each batch commits alone: the retention mark must be there before the first one."""
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url)
    ok(cli("db", "upgrade"))
    for job in ("a-hourly", "b-hourly"):
        ok(cli("add", job, "-s", "0 * * * *", "--tz", "UTC", "--", "true"))
    with psycopg.connect(pg_url, autocommit=True) as admin:
        # Ten days of history, every hourly slot run once, the jobs as old as their history.
        admin.execute("UPDATE jobs SET created_at = now() - interval '10 days'")
        admin.execute("UPDATE job_changes SET at = now() - interval '10 days'")
        admin.execute(
            "INSERT INTO runs (job_id, job_name, job_revision, slot, trigger, attempt, status,"
            " host, pid, claimed_at, started_at, finished_at, exit_code, duration_seconds,"
            " output_bytes, output_truncated, schedctl_version)"
            " SELECT j.id, j.name, 1, s, 'cron', 1, 'succeeded', 'h', 1, s, s,"
            " s + interval '1 second', 0, 1.0, 0, false, 'x' FROM jobs j, generate_series("
            "date_trunc('hour', now() - interval '10 days') + interval '1 hour',"
            " date_trunc('hour', now()), interval '1 hour') s"
        )
        before = json.loads(ok(cli("report", "--since", "7d", "--json")).out)
        assert [r["missed"] for r in before["jobs"]] == [0, 0]
        # Every deleting statement takes a while, so the cut lands between committed batches.
        admin.execute(
            "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN PERFORM pg_sleep(1.5); RETURN NULL; END $$"
        )
        admin.execute(
            "CREATE TRIGGER slow AFTER DELETE ON runs FOR EACH STATEMENT EXECUTE FUNCTION slow()"
        )
        left = "SELECT count(*) FROM runs WHERE job_name = 'a-hourly'"
        total = admin.execute(left).fetchone()[0]  # type: ignore[index]
        pruning = subprocess.Popen(
            [str(BIN), "prune", "--older-than", "1d"],
            env=cli_env(tmp_path, SCHEDCTL_DATABASE_URL=pg_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(200):
            if admin.execute(left).fetchone()[0] < total:  # type: ignore[index]
                break
            time.sleep(0.05)
        else:
            pytest.fail("prune deleted nothing of a-hourly")
        cut = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = 'schedctl'"
        ).fetchone()
        assert cut == (1,)
        _, err = pruning.communicate(timeout=60)
        assert pruning.returncode == 75, err
        # b-hourly's batch was cut off: its runs are all there, a-hourly's old ones are gone.
        assert admin.execute(
            "SELECT count(*) FROM runs WHERE job_name = 'b-hourly'"
        ).fetchone() == (total,)
        admin.execute("DROP TRIGGER slow ON runs")
    after = {
        r["job"]: r for r in json.loads(ok(cli("report", "--since", "7d", "--json")).out)["jobs"]
    }
    assert after["a-hourly"]["runs"] < before["jobs"][0]["runs"]
    assert (after["a-hourly"]["missed"], after["b-hourly"]["missed"]) == (0, 0)
    assert "no missed slots" in ok(cli("history", "a-hourly", "--missed", "--since", "7d")).out


def test_a_job_removed_while_prune_runs_is_passed_over(tmp_path: Path, pg_url: str) -> None:
    """`prune` read the jobs, then one went: the others are still marked and pruned."""
    cli = make_cli(tmp_path, SCHEDCTL_DATABASE_URL=pg_url)
    ok(cli("db", "upgrade"))
    ok(cli("add", "a-stays", "-s", "@daily", "--", "true"))
    ok(cli("add", "b-goes", "-s", "@daily", "--", "true"))
    with psycopg.connect(pg_url, autocommit=True) as admin:
        # Marking the first job takes a while: the second is removed meanwhile.
        admin.execute(
            "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " IF NEW.job_id = (SELECT id FROM jobs WHERE name = 'a-stays')"
            " THEN PERFORM pg_sleep(1.5); END IF; RETURN NEW; END $$"
        )
        admin.execute(
            "CREATE TRIGGER slow BEFORE INSERT ON prune_marks FOR EACH ROW EXECUTE FUNCTION slow()"
        )
        pruning = subprocess.Popen(
            [str(BIN), "prune"],
            env=cli_env(tmp_path, SCHEDCTL_DATABASE_URL=pg_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(400):
            if admin.execute(
                "SELECT 1 FROM pg_stat_activity WHERE application_name = 'schedctl'"
                " AND state = 'active' AND query LIKE 'INSERT INTO prune_marks%'"
            ).fetchone():
                break
            time.sleep(0.01)
        else:
            pytest.fail("prune never marked a job")
        ok(cli("remove", "b-goes", "--yes"))
        _, err = pruning.communicate(timeout=60)
        assert (pruning.returncode, err) == (0, ""), err
        assert admin.execute(
            "SELECT j.name FROM prune_marks m JOIN jobs j ON j.id = m.job_id"
        ).fetchall() == [("a-stays",)]
        admin.execute("DROP TRIGGER slow ON prune_marks")
