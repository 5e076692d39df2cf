"""The command line for jobs that change shape: versions, fork and replay, batches, pruning."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from tests.integration.test_cli_engine import cli, cli_json, env

__all__ = ["env"]  # the fixture

GREETING = {
    "jobId": "greeting",
    "inputSchema": {"name": {"type": "string", "required": True}},
    "outputSchema": {"text": {"type": "string", "sourceStepId": "say", "sourceOutputName": "text"}},
    "steps": [
        {"stepId": "say", "toolId": "text.template",
         "inputMappings": [{"template": "Hello, {{ job.name }}!", "targetInputName": "template"}]},
    ],
}


def write_versions(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    v2: dict[str, Any] = json.loads(json.dumps(GREETING))
    v2["version"] = "2"
    v2["steps"][0]["inputMappings"][0]["template"] = "Good day, {{ job.name }}."
    (folder / "greeting-1.yaml").write_text(yaml.safe_dump(GREETING))
    (folder / "greeting-2.yaml").write_text(yaml.safe_dump(v2))
    return folder


def test_versions_are_listed_and_run_version_pins_one(env: dict[str, str], tmp_path: Path) -> None:
    folder = write_versions(tmp_path / "defs")
    listed = cli_json("jobs", "versions", "greeting", "-d", str(folder))
    assert [(v["version"], v["latest"]) for v in listed] == [("1", False), ("2", True)]
    table = cli("jobs", "versions", "greeting", "-d", str(folder), env={"COLUMNS": "160"})
    assert table.exit_code == 0 and "2 (latest)" in table.stdout

    latest = cli_json("run", "greeting", "-d", str(folder), "-i", "name=Ada", "--wait")
    pinned = cli_json("run", "greeting", "-d", str(folder), "-i", "name=Ada", "--wait", "--version", "1")
    assert latest["version"] == "2" and latest["finalOutputs"] == {"text": "Good day, Ada."}
    assert pinned["version"] == "1" and pinned["finalOutputs"] == {"text": "Hello, Ada!"}
    shown = cli("runs", "show", pinned["jobRunId"])
    assert "greeting v1" in shown.stdout

    missing = cli("run", "greeting", "-d", str(folder), "-i", "name=Ada", "--version", "9")
    assert missing.exit_code == 4 and "no version '9'" in missing.stderr and "1, 2" in missing.stderr


def test_runs_retry_from_a_step_or_with_an_input_forks_the_run(env: dict[str, str], tmp_path: Path) -> None:
    folder = write_versions(tmp_path / "defs")
    done = cli_json("run", "greeting", "-d", str(folder), "-i", "name=Ada", "--wait", "--version", "1")
    assert done["status"] == "completed"
    in_place = cli("runs", "retry", done["jobRunId"])
    assert in_place.exit_code == 4 and "step to run again from" in in_place.stderr

    forked = cli_json("runs", "retry", done["jobRunId"], "-i", "name=Grace", "--wait")
    assert forked["forkedFromRunId"] == done["jobRunId"] and forked["version"] == "1"
    assert forked["finalOutputs"] == {"text": "Hello, Grace!"} and forked["jobInputs"] == {"name": "Grace"}
    again = cli("runs", "retry", done["jobRunId"], "--from", "say")
    assert again.exit_code == 0 and f"forked from {done['jobRunId']}" in again.stderr
    new_id = again.stdout.strip()
    shown = cli_json("runs", "show", new_id)
    assert shown["forkedFromStep"] == "say" and shown["forkedFromRunId"] == done["jobRunId"]
    text = cli("runs", "show", new_id).stdout
    assert f"forked from run {done['jobRunId']} from step say" in text

    unknown = cli("runs", "retry", done["jobRunId"], "--from", "nope")
    assert unknown.exit_code == 4 and "has no step 'nope'" in unknown.stderr
    other = cli("runs", "retry", done["jobRunId"], "--from", "say", "--account", "mallory")
    assert other.exit_code == 4 and "no run" in other.stderr
    bad = cli("runs", "retry", done["jobRunId"], "-i", "colour=red")
    assert bad.exit_code == 4 and "colour" in bad.stderr


SHOUT = {
    "jobId": "shout_all",
    "inputSchema": {"words": {"type": "json", "required": True}},
    "outputSchema": {"shouted": {"type": "json", "sourceStepId": "shout", "sourceOutputName": "text"}},
    "steps": [{"stepId": "shout", "toolId": "text.template", "map": {"over": {"sourceJobInput": "words"}, "concurrency": 2},
               "inputMappings": [{"template": "{{ item | upper }}!", "targetInputName": "template"}]}],
}


def test_a_map_step_from_the_cli_and_its_items(env: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "map"
    folder.mkdir()
    (folder / "shout.yaml").write_text(yaml.safe_dump(SHOUT))
    done = cli_json("run", "shout_all", "-d", str(folder), "-i", 'words=["hi", "there", "you"]', "--wait")
    assert done["status"] == "completed" and done["finalOutputs"] == {"shouted": ["HI!", "THERE!", "YOU!"]}
    shown = cli("runs", "show", done["jobRunId"])
    assert "items 3/3 done" in shown.stdout
    page = cli_json("runs", "items", done["jobRunId"], "shout", "--limit", "2")
    assert [i["item"] for i in page["items"]] == ["hi", "there"] and page["nextAfter"] == 1
    table = cli("runs", "items", done["jobRunId"], "shout", "--after", "1")
    assert table.exit_code == 0 and "'you'" in table.stdout and "THERE" not in table.stdout
    missing = cli("runs", "items", done["jobRunId"], "nope")
    assert missing.exit_code == 4 and "no run" in missing.stderr
    bad = cli("run", "shout_all", "-d", str(folder), "-i", "words=hello", "--wait")
    assert bad.exit_code == 1 and "not a list" in bad.stdout + bad.stderr
