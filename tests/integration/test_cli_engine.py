"""The engine commands end to end on a real SQLite store: run, runs, worker, demo, db.

In-process commands go through typer's ``CliRunner``; what needs a second process (cancelling a
run another terminal is waiting on, Ctrl-C, SIGTERM) runs ``python -m toolweave.cli`` in a
subprocess. Every test has its own ``TOOLWEAVE_HOME``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from toolweave.cli import app
from toolweave.cli.common import CliError
from toolweave.cli.render import event_line
from toolweave.cli.submitting import parse_pairs

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "assets" / "sample.png"
DEMO_DIR = ROOT / "examples" / "demo"
PACKAGE_DATA = ROOT / "src" / "toolweave" / "data"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    home = tmp_path / "home"
    values = {"TOOLWEAVE_HOME": str(home), "TOOLWEAVE_TEST_TOOLS": "1", "COLUMNS": "160"}
    for key in list(os.environ):
        if key.startswith("TOOLWEAVE_"):
            monkeypatch.delenv(key)
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # no toolweave.toml of the repository's working directory
    return values


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), catch_exceptions=False, env=env)


def cli_json(*args: str, env: dict[str, str] | None = None) -> Any:
    result = cli(*args, "--json", env=env)
    assert result.exit_code in (0, 1, 2, 3), result.output
    return json.loads(result.stdout)


def run_id_of(result: Result) -> str:
    return result.stdout.strip().splitlines()[-1]


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def spawn(env: dict[str, str]) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "toolweave.cli", *args],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# --- pure helpers ---------------------------------------------------------------------------------


def test_parse_pairs_reports_every_malformed_input() -> None:
    assert parse_pairs(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    with pytest.raises(CliError) as caught:
        parse_pairs(["novalue", "=1", "a=1", "a=2"])
    assert caught.value.code == 4
    assert len(caught.value.details) == 3
    assert "a: given twice" in caught.value.details[2]


def test_event_line_names_the_retry() -> None:
    line = event_line({
        "id": 3, "runId": "r", "type": "step.retry_scheduled", "stepId": "source", "at": 100.0,
        "data": {"at": 100.5, "nextAttempt": 2, "error": {"message": "HTTP 503"}},
    })
    assert "step.retry_scheduled  source  attempt 2 in 0.50s  — HTTP 503" in line
    failed = event_line({
        "id": 4, "runId": "r", "type": "step.failed", "stepId": "source", "at": 100.0,
        "data": {"reason": "server down", "error": {"message": "server down"}},
    })
    assert failed.count("server down") == 1 and failed.endswith("source  — server down"), failed
    skipped = event_line({"id": 5, "runId": "r", "type": "step.skipped", "stepId": "up", "at": 100.0,
                          "data": {"reason": "condition is false"}})
    assert skipped.endswith("up  (condition is false)"), skipped


# --- the demo ---------------------------------------------------------------------------------


def test_the_packaged_demo_job_and_image_are_the_examples() -> None:
    assert (PACKAGE_DATA / "demo_variants.yaml").read_bytes() == (DEMO_DIR / "variants.yaml").read_bytes()
    assert (PACKAGE_DATA / "sample.png").read_bytes() == SAMPLE.read_bytes()


def test_demo_runs_offline_with_a_retry_and_leaves_the_images(env: dict[str, str], tmp_path: Path) -> None:
    result = cli("demo", "--output", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "step.retry_scheduled  source  attempt 2" in out
    assert "the image host answered 503, 200; 1 retry needed" in out
    names = {"contact_sheet", "thumbnail", "vivid", "mono", "stamped", "upscaled"}
    for name in names:
        path = tmp_path / "out" / f"{name}.png"
        assert path.is_file() and path.stat().st_size > 1000
        assert str(path) in out
    # the demo has a data folder of its own (it may fetch from loopback; other runs may not)
    home, _, rest = out.split("details: TOOLWEAVE_HOME=")[1].partition(" toolweave runs show ")
    assert Path(home) == Path(env["TOOLWEAVE_HOME"]) / "demo"
    run = cli_json("runs", "show", rest.split()[0], env={"TOOLWEAVE_HOME": home})
    steps = {s["stepId"]: s for s in run["stepStatuses"]}
    assert run["status"] == "completed"
    assert steps["source"]["attempt"] == 2 and steps["upscale"]["status"] == "succeeded"
    assert run["finalOutputs"]["upscaled"]["width"] == 1280  # the 640 px sample is under min_width
    assert run["finalOutputs"]["contact_sheet"]["width"] == 2 * 320 + 3 * 8


def test_demo_default_output_folder_is_demo_output(env: dict[str, str], tmp_path: Path) -> None:
    result = cli("demo", "--view", "quiet")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "demo-output" / "contact_sheet.png").is_file()


# --- run ---------------------------------------------------------------------------------------


def test_run_wait_exports_outputs_and_skips_the_upscale_by_condition(env: dict[str, str], tmp_path: Path) -> None:
    result = cli(
        "run", "demo_variants", "-d", str(DEMO_DIR), "-i", f"image=@{SAMPLE}", "-i", "min_width=100",
        "--wait", "--output", str(tmp_path / "out"), "--json",
    )
    assert result.exit_code == 0, result.output
    run = json.loads(result.stdout)
    assert run["status"] == "completed"
    steps = {s["stepId"]: s for s in run["stepStatuses"]}
    assert steps["upscale"]["status"] == "skipped" and "condition" in steps["upscale"]["reason"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "contact_sheet.png", "mono.png", "stamped.png", "thumbnail.png", "vivid.png",
    ]
    assert run["jobInputs"]["min_width"] == 100  # text coerced to the input's type


def test_run_without_wait_submits_then_a_worker_runs_it(env: dict[str, str]) -> None:
    result = cli("run", "image.resize", "-i", f"image=@{SAMPLE}", "-i", "width=64")
    assert result.exit_code == 0, result.output
    run_id = run_id_of(result)
    assert "no worker is running" in result.stderr
    shown = cli_json("runs", "show", run_id)
    assert shown["status"] == "queued" and shown["masterAccountId"] == "local"
    assert shown["statusDetail"].startswith("no worker is running")
    text = cli("runs", "show", run_id)
    assert text.exit_code == 0 and run_id in text.stdout and "image.resize" in text.stdout
    assert "queued — no worker is running" in text.stdout
    assert [r["jobRunId"] for r in cli_json("runs", "list", "--status", "queued")["items"]] == [run_id]
    assert [r["jobRunId"] for r in cli_json("runs", "list", "--status", "pending")["items"]] == [run_id]  # the old name
    status = cli("status")
    assert status.exit_code == 0, status.output
    assert "no worker is running" in status.stdout and "builtin" in status.stdout
    assert f"run {run_id}" in status.stdout and "1 run queued" in status.stdout
    overview = cli_json("status")
    assert overview["workers"] == [] and overview["queuedRuns"] == 1
    assert overview["services"][0]["service"] == "builtin" and overview["services"][0]["waiting"] == 1
    assert overview["oldestWaiting"]["runId"] == run_id and overview["oldestWaiting"]["kind"] == "dispatch"

    worker = cli("worker", "--until-idle", "--timeout", "60")
    assert worker.exit_code == 0, worker.output
    shown = cli_json("runs", "show", run_id)
    assert shown["status"] == "completed"
    assert shown["finalOutputs"]["image"]["width"] == 64
    assert shown["generations"][0]["status"] == "completed"
    listed = cli_json("runs", "list", "--status", "completed")
    assert [r["jobRunId"] for r in listed["items"]] == [run_id]
    assert cli_json("runs", "list", "--job", "other")["items"] == []
    assert cli("runs", "list").exit_code == 0


def test_run_json_without_wait_prints_the_run_id(env: dict[str, str]) -> None:
    result = cli("run", "test.instant", "-i", "value=1", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["jobRunId"].startswith("run_")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["image.resize", "-i", "width=abc", "-i", "bogus=1"], ["bogus:", "image: is required", "width:"]),
        (["image.resize", "-i", "image=@missing.png"], ["image: no such file: missing.png"]),
        (["image.resize", "-i", "image=photo.png"], ["to send the file, write -i image=@photo.png"]),
        (["image.resize", "-i", "width"], ["-i 'width': write it as key=value"]),
        (["no.such.tool"], ["no tool or job named 'no.such.tool'"]),
        (["image.resze"], ["no tool or job named 'image.resze'; did you mean 'image.resize'?"]),
    ],
)
def test_input_errors_exit_4_naming_each_field(env: dict[str, str], args: list[str], expected: list[str]) -> None:
    result = cli("run", *args, "--wait")
    assert result.exit_code == 4
    for text in expected:
        assert text in result.stderr
    assert "Traceback" not in result.output


def test_a_file_given_to_a_name_the_tool_does_not_have_is_named_not_read(env: dict[str, str], tmp_path: Path) -> None:
    """`-i photo=@x.png` for a tool whose input is `image`: the name is the problem, not the bytes."""
    binary = tmp_path / "x.png"
    binary.write_bytes(SAMPLE.read_bytes())
    result = cli("run", "image.resize", "-i", f"photo=@{binary}", "-i", "width=10", "--wait")
    assert result.exit_code == 4
    assert "photo: is not an input of this tool (expected: image, width, height, mode, resample, background)" in result.stderr
    assert "utf-8" not in result.stderr and "cannot read" not in result.stderr


def test_exit_codes_follow_the_final_status(env: dict[str, str]) -> None:
    failed = cli("run", "test.fail_n_times", "-i", "n=5", "-i", "retryable=false", "--wait")
    assert failed.exit_code == 1, failed.output
    assert "error:" in failed.stdout
    ok = cli("run", "test.instant", "-i", "value=41", "--wait", "--json")
    assert ok.exit_code == 0
    assert json.loads(ok.stdout)["finalOutputs"]["value"] == 42


def test_retry_a_failed_run_from_the_cli(env: dict[str, str]) -> None:
    failed = cli("run", "test.fail_n_times", "-i", "n=1", "-i", "retryable=false", "--wait", "--json")
    assert failed.exit_code == 1, failed.output
    run = json.loads(failed.stdout)
    assert run["status"] == "failed" and run["stepStatuses"][0]["error"]["code"] == "test_failure"

    retried = cli("runs", "retry", run["jobRunId"], "--wait")
    assert retried.exit_code == 0, retried.output
    assert "run.retried" in retried.stdout and "run.created" not in retried.stdout  # only new events
    again = cli_json("runs", "show", run["jobRunId"])
    assert again["status"] == "completed"
    assert [g["status"] for g in again["generations"]] == ["failed", "completed"]

    refused = cli("runs", "retry", run["jobRunId"])
    assert refused.exit_code == 4 and "only a failed" in refused.stderr


def test_unknown_runs_and_other_accounts_runs_are_refused(env: dict[str, str]) -> None:
    assert cli("run", "test.instant", "--wait").exit_code == 0
    listed = cli_json("runs", "list")
    run_id = listed["items"][0]["jobRunId"]
    for command in (["runs", "show"], ["runs", "cancel"], ["runs", "retry"], ["runs", "watch"]):
        missing = cli(*command, "run_nope")
        assert missing.exit_code == 4 and "account 'local' has no run 'run_nope'" in missing.stderr
        other = cli(*command, run_id, "--account", "someone-else")
        assert other.exit_code == 4 and f"account 'someone-else' has no run '{run_id}'" in other.stderr
    assert cli_json("runs", "list", "--account", "someone-else")["items"] == []
    bad = cli("runs", "list", "--status", "finished")
    assert bad.exit_code == 4 and "unknown status finished" in bad.stderr


def test_watch_a_finished_run_replays_its_events(env: dict[str, str]) -> None:
    failed = cli("run", "test.fail_n_times", "-i", "n=3", "-i", "retryable=false", "--wait", "--json")
    run_id = json.loads(failed.stdout)["jobRunId"]
    watched = cli("runs", "watch", run_id)
    assert watched.exit_code == 1
    lines = watched.stdout
    assert lines.index("run.created") < lines.index("step.failed") < lines.index("run.failed")


def test_cancel_a_finished_run_says_so(env: dict[str, str]) -> None:
    run_id = json.loads(cli("run", "test.instant", "--wait", "--json").stdout)["jobRunId"]
    result = cli("runs", "cancel", run_id)
    assert result.exit_code == 0 and "had already ended: completed" in result.stdout


def test_db_upgrade_prints_the_revision(env: dict[str, str], tmp_path: Path) -> None:
    result = cli("db", "upgrade")
    assert result.exit_code == 0, result.output
    assert "is at revision" in result.stdout and "None" not in result.stdout
    assert (tmp_path / "home" / "toolweave.db").is_file()


# --- several processes --------------------------------------------------------------------------


def _running_run(run_id: str | None = None) -> str | None:
    items = cli_json("runs", "list", "--status", "running")["items"]
    for item in items:
        if run_id in (None, item["jobRunId"]):
            run = cli_json("runs", "show", item["jobRunId"])
            if any(s["status"] == "running" for s in run["stepStatuses"]):
                return str(item["jobRunId"])
    return None


def test_a_waited_run_can_be_watched_and_cancelled_from_another_terminal(
    env: dict[str, str], spawn: Callable[..., subprocess.Popen[str]]
) -> None:
    waiting = spawn("run", "test.slow_async", "-i", "seconds=600", "--wait", "--view", "lines")
    run_id = wait_for(_running_run, what="the run to start")
    cancelled = cli("runs", "cancel", run_id)
    assert cancelled.exit_code == 0, cancelled.output
    assert run_id in cancelled.stdout
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 3, err
    assert "run.cancelled" in out and "cancelled" in out
    assert cli_json("runs", "show", run_id)["status"] == "cancelled"

    # ... and retried from the CLI: it starts again from the cancelled step
    retried = cli("runs", "retry", run_id)
    assert retried.exit_code == 0 and "retried" in retried.stdout
    assert cli_json("runs", "show", run_id)["status"] == "queued"  # until a worker picks it up
    assert cli("runs", "cancel", run_id).exit_code == 0


def test_ctrl_c_stops_following_but_the_run_goes_on(
    env: dict[str, str], spawn: Callable[..., subprocess.Popen[str]]
) -> None:
    waiting = spawn("run", "test.slow_async", "-i", "seconds=600", "--wait", "--view", "lines")
    run_id = wait_for(_running_run, what="the run to start")
    waiting.send_signal(signal.SIGINT)
    _out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 130, err
    assert f"toolweave runs cancel {run_id}" in err and f"toolweave runs watch {run_id}" in err
    assert "Traceback" not in err
    assert cli_json("runs", "show", run_id)["status"] == "running"
    assert cli("runs", "cancel", run_id).exit_code == 0
    assert cli_json("runs", "show", run_id)["status"] == "cancelled"


def test_worker_announces_itself_and_stops_on_sigterm(
    env: dict[str, str], spawn: Callable[..., subprocess.Popen[str]]
) -> None:
    worker = spawn("worker", "--slots", "2")
    submitted = wait_for(
        lambda: (r := cli("run", "test.instant", "-i", "value=1")).exit_code == 0
        and "no worker is running" not in r.stderr and r,
        what="the worker to announce itself",
    )
    run_id = run_id_of(submitted)
    wait_for(lambda: cli_json("runs", "show", run_id)["status"] == "completed", what="the worker to run it")
    overview = cli_json("status")
    (live,) = overview["workers"]
    assert live["kind"] == "worker" and live["slots"] == 2 and live["heartbeatAt"] and live["pid"] == worker.pid
    assert overview["waitingReason"] is None and "1 worker, 2 slots" in cli("status").stdout
    # a run --wait leaves the work to the live worker (--worker auto)
    waited = cli("run", "test.instant", "-i", "value=2", "--wait", "--json")
    assert waited.exit_code == 0 and json.loads(waited.stdout)["finalOutputs"]["value"] == 3
    worker.send_signal(signal.SIGTERM)
    _out, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    assert "stopped after" in err
    # it made the store (a fresh home): Alembic's INFO lines are not a worker's start-up
    assert "alembic" not in err.lower() and "INFO" not in err, err
    after = cli("run", "test.instant")
    assert "no worker is running" in after.stderr


# --- the README -----------------------------------------------------------------------------------


def test_the_readme_lists_every_setting_and_links_existing_docs() -> None:
    import dataclasses
    import re

    from toolweave.settings import Settings

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [
        f.name for f in dataclasses.fields(Settings)
        if f"TOOLWEAVE_{f.name.upper()}`" not in readme and f"`{f.name}` (toml only)" not in readme
    ]
    assert missing == [], "settings missing from the README's configuration table"
    for link in re.findall(r"\]\(([^)#]+)\)", readme):
        if not link.startswith("http"):
            assert (ROOT / link).exists(), link


def test_an_invalid_definition_is_named_with_its_problems_not_reported_missing(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "wrong.yaml").write_text(
        "jobId: wrongtype\nsteps:\n  - stepId: a\n    toolId: image.resize\n    inputMappings:\n"
        "      - {value: 'not a number', targetInputName: width}\n"
    )
    result = cli("run", "wrongtype", "-d", str(bad), "--wait")
    assert result.exit_code == 4
    assert "'wrongtype' is defined in" in result.stderr and "wrong.yaml" in result.stderr
    assert "cannot be used" in result.stderr and "not a number" in result.stderr
    assert "no tool or job named" not in result.stderr
    missing = cli("run", "nothing_like_it", "-d", str(bad))
    assert missing.exit_code == 4 and "no tool or job named 'nothing_like_it'" in missing.stderr


def test_listings_fit_80_columns_without_cutting_what_people_paste(env: dict[str, str]) -> None:
    from rich.console import Console

    from toolweave.cli.render import runs_table

    items = [{"jobRunId": "run_01m8vtvdvstzrt4x7webdvrv5v", "jobDefinitionId": "a_rather_long_job_identifier",
              "version": "2", "status": "partially_completed", "createdAt": "2026-12-02T16:54:21.304Z",
              "durationMs": 1234, "error": {"message": "step enhance failed"}}]
    narrow = Console(width=80, record=True)
    narrow.print(runs_table(items, 80))
    text = narrow.export_text()
    assert "run_01m8vtvdvstzrt4x7webdvrv5v" in text and "partially_completed" in text and "…" not in text
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80
    narrow_env = dict(env, COLUMNS="80")
    tools = cli("tools", "list", env=narrow_env)
    assert tools.exit_code == 0 and "image.watermark" in tools.stdout and "…" not in tools.stdout.split("description")[0]
    assert len(tools.stdout.splitlines()) < 60  # first sentences, not whole descriptions
    jobs = cli("jobs", "list", "-d", str(DEMO_DIR), env=narrow_env)
    assert jobs.exit_code == 0 and jobs.stdout.startswith("1 job\n")
    assert "source → thumbnail, vivid, mono, stamped, upscale →" in " ".join(jobs.stdout.split())  # parallel, not a chain
    empty = cli("jobs", "list", env=narrow_env)
    assert empty.stdout == "0 jobs\n" and "TOOLWEAVE_DEFINITIONS" in empty.stderr  # no empty table


def test_an_unreachable_store_and_a_busy_port_are_one_line_each(env: dict[str, str]) -> None:
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens here once the socket is closed
    down = dict(env, TOOLWEAVE_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{port}/test")
    for args in (["keys", "create", "--account", "alice"], ["runs", "list"], ["status"], ["serve", "--port", "0"]):
        result = CliRunner().invoke(app, args, env=down)
        assert result.exit_code == 1, (args, result.output)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: the store at postgresql://"), (args, result.stderr)
        assert "Connection refused" in lines[0] and "Background on this error" not in result.stderr
        assert "Traceback" not in result.output
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", "--host", "127.0.0.1", "--port", str(taken)], env=env)
    assert result.exit_code == 1
    assert f"cannot serve on 127.0.0.1:{taken}" in result.stderr and "serving on" not in result.output


def test_a_bad_setting_is_named_with_where_it_came_from(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "toolweave.toml").write_text('[toolweave]\nworker_slots = "many"\n')
    result = cli("runs", "list")
    assert result.exit_code == 4
    assert "worker_slots = 'many'" in result.stderr and "toolweave.toml" in result.stderr
    assert "must be a whole number" in result.stderr and "invalid literal" not in result.stderr
    (tmp_path / "toolweave.toml").write_text("[toolweave]\nworkr_slots = 3\n")
    result = cli("runs", "list")
    assert result.exit_code == 4 and "unknown settings: workr_slots" in result.stderr
    assert "did you mean worker_slots?" in result.stderr
    (tmp_path / "toolweave.toml").unlink()
    result = cli("runs", "list", env=dict(env, TOOLWEAVE_LEASE_SECONDS="soon"))
    assert result.exit_code == 4 and "the environment variable TOOLWEAVE_LEASE_SECONDS" in result.stderr
    # a variable that is nearly a setting is not silently ignored; one far from every setting is
    result = cli("runs", "list", env=dict(env, TOOLWEAVE_WORKER_SLOTZ="3"))
    assert result.exit_code == 4 and "TOOLWEAVE_WORKER_SLOTZ" in result.stderr
    assert "did you mean TOOLWEAVE_WORKER_SLOTS?" in result.stderr
    assert cli("runs", "list", env=dict(env, TOOLWEAVE_TEST_POSTGRES="postgresql://x@y/z")).exit_code == 0


def test_keys_definitions_and_versions_fit_80_columns_without_cutting_what_people_paste(
    env: dict[str, str], tmp_path: Path
) -> None:
    narrow_env = dict(env, COLUMNS="80")
    for account, name in (("alice", "alice's laptop key for the studio"), ("a-rather-long-account-name-here", "ci")):
        assert cli("keys", "create", "--account", account, "--name", name).exit_code == 0
    listed = cli("keys", "list", env=narrow_env)
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.startswith("2 API keys\n")
    assert max(len(line.rstrip()) for line in listed.stdout.splitlines()) <= 80, listed.stdout
    assert "…" not in listed.stdout, listed.stdout
    for key in cli_json("keys", "list"):
        assert key["prefix"] in listed.stdout  # what `keys revoke` takes, whole
    assert listed.stdout.count("active") == 2
    nested = tmp_path / "a" / "rather" / "deeply" / "nested" / "folder" / "of" / "definitions"
    nested.mkdir(parents=True)
    (nested / "variants.yaml").write_text((DEMO_DIR / "variants.yaml").read_text())
    checked = cli("validate", str(nested), env=narrow_env)
    assert checked.exit_code == 0, checked.output
    assert max(len(line.rstrip()) for line in checked.stdout.splitlines()) <= 80, checked.stdout
    assert "…" not in checked.stdout and "demo_variants" in checked.stdout and "ok" in checked.stdout
    assert "variants.yaml" in checked.stdout.replace("│", "").replace(" ", "").replace("\n", "")
    assert checked.stdout.rstrip().endswith("1 definition valid.")
    versions = cli("jobs", "versions", "demo_variants", "-d", str(nested), env=narrow_env)
    assert versions.exit_code == 0 and versions.stdout.startswith("1 version of job demo_variants")
    assert "…" not in versions.stdout and max(len(line.rstrip()) for line in versions.stdout.splitlines()) <= 80


def test_values_are_shown_as_json_never_as_python(env: dict[str, str]) -> None:
    """`runs show`, `jobs show` and `tools show` show values as people write them (JSON), the
    origin as words; a mapping that collects several outputs names them."""
    result = cli("run", "demo_variants", "-d", str(DEMO_DIR), "-i", f"image=@{SAMPLE}", "-i", "min_width=100",
                 "--wait", "--view", "quiet")
    assert result.exit_code == 0, result.output
    run_id = cli_json("runs", "list")["items"][0]["jobRunId"]
    shown = cli("runs", "show", run_id).stdout
    assert 'label: "toolweave"' in shown and "origin: cli" in shown, shown
    assert "{'" not in shown and "'toolweave'" not in shown
    job = cli("jobs", "show", "demo_variants", "-d", str(DEMO_DIR)).stdout
    assert 'default "toolweave"' in job and 'format ← = "png"' in job, job
    assert "images ← [thumbnail.image, vivid.image, mono.image, stamped.image]" in job
    assert "(no source)" not in job and "'" not in job.split("inputs:")[1], job
    tool = cli("tools", "show", "text.template").stdout
    assert "default true" in tool and "default True" not in tool, tool
    fetch = cli("tools", "show", "media.fetch").stdout
    assert 'default ["image/", "video/", "audio/"]' in fetch, fetch
