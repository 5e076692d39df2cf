"""The command line for jobs that change shape: versions, fork and replay, batches, pruning."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from tests.integration.test_cli_engine import SAMPLE, cli, cli_json, env

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
    assert table.exit_code == 0 and '"you"' in table.stdout and "THERE" not in table.stdout
    missing = cli("runs", "items", done["jobRunId"], "nope")
    assert missing.exit_code == 4 and "no run" in missing.stderr
    bad = cli("run", "shout_all", "-d", str(folder), "-i", "words=hello", "--wait")
    assert bad.exit_code == 1 and "not a list" in bad.stdout + bad.stderr


RESIZE = {
    "jobId": "thumbs",
    "inputSchema": {"image": {"type": "image", "required": True}, "width": {"type": "integer", "default": 64, "maximum": 512},
                    "label": {"type": "string", "default": "x"}},
    "outputSchema": {"thumb": {"type": "image", "sourceStepId": "small", "sourceOutputName": "image"}},
    "steps": [{"stepId": "small", "toolId": "image.resize", "inputMappings": [
        {"sourceJobInput": "image", "targetInputName": "image"}, {"sourceJobInput": "width", "targetInputName": "width"}]}],
}


def batch_json(*args: str) -> Any:
    """A batch's JSON report (exit 4 when a row was refused)."""
    result = cli(*args, "--json")
    assert result.exit_code in (0, 1, 2, 3, 4), result.output
    return json.loads(result.stdout)


def test_a_batch_runs_one_run_per_row_and_reports_bad_rows_by_line(env: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "thumbs.yaml").write_text(yaml.safe_dump(RESIZE))
    (folder / "photo.png").write_bytes(SAMPLE.read_bytes())
    (folder / "rows.csv").write_text(
        "image,width\n"
        "@photo.png,32\n"           # line 2: a file next to the batch file
        "@photo.png,999\n"          # line 3: above the maximum
        "@missing.png,40\n"         # line 4: no such file
        "@photo.png,48,extra\n"     # line 5: a value too many
        "\n"
        '"@photo.png","56"\n'       # line 7
    )
    out = tmp_path / "out"
    result = cli("run", "thumbs", "-d", str(folder / "thumbs.yaml"), "--batch", str(folder / "rows.csv"), "--output",
                 str(out), "--json")
    assert result.exit_code == 4, result.output
    report = json.loads(result.stdout)
    rows = {row["line"]: row for row in report["rows"]}
    assert sorted(rows) == [2, 3, 4, 5, 7]
    assert rows[2]["status"] == rows[7]["status"] == "completed"
    assert "width: must be at most 512" in rows[3]["error"]
    assert "image: no such file: missing.png" in rows[4]["error"]
    assert "3 values for 2 columns" in rows[5]["error"]
    assert Path(rows[2]["files"]["thumb"]).parent == out / "line-2" and (out / "line-7").is_dir()

    # the same command again attaches to the runs it made; nothing is made twice
    again = batch_json("run", "thumbs", "-d", str(folder / "thumbs.yaml"), "--batch", str(folder / "rows.csv"))
    assert [(r["line"], r["created"]) for r in again["rows"] if r["jobRunId"]] == [(2, False), (7, False)]
    assert {r["jobRunId"] for r in again["rows"] if r["jobRunId"]} == {rows[2]["jobRunId"], rows[7]["jobRunId"]}
    listed = cli_json("runs", "list", "--job", "thumbs")
    assert len(listed["items"]) == 2
    # another batch id makes new runs of the same rows
    other = batch_json("run", "thumbs", "-d", str(folder / "thumbs.yaml"), "--batch", str(folder / "rows.csv"), "--batch-id", "second")
    assert all(r["created"] for r in other["rows"] if r["jobRunId"])


def test_garbage_batch_rows_and_files(env: dict[str, str], tmp_path: Path) -> None:
    folder = write_versions(tmp_path / "defs")
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"name": "Ada"}\nnot json\n[1, 2]\n\n{"name": "Bo", "colour": "red"}\n{"name": "' + "x" * 70000 + '"}\n')
    result = cli("run", "greeting", "-d", str(folder), "--batch", str(rows), "--wait", "--json", "-i", "name=Shared")
    assert result.exit_code == 4
    report = {row["line"]: row for row in json.loads(result.stdout)["rows"]}
    assert report[1]["outputs"] == {"text": "Good day, Ada."}  # a row's value wins over -i
    assert "not valid JSON" in report[2]["error"] and "not list" in report[3]["error"]
    assert "colour" in report[5]["error"] and 6 in report
    shared = tmp_path / "shared.csv"
    shared.write_text("other\n1\n")  # no name column: -i gives it; the unknown column is refused
    bad = batch_json("run", "greeting", "-d", str(folder), "--batch", str(shared), "-i", "name=Shared")
    assert "other" in bad["rows"][0]["error"]

    for name, content, message in [
        ("rows.txt", b"name\nAda\n", "takes a .csv or a .jsonl file"),
        ("empty.csv", b"", "holds no rows"),
        ("twice.csv", b"name,name\nA,B\n", "names 'name' twice"),
        ("blank.csv", b"name,\nA,B\n", "every column of the header must name an input"),
        ("latin.csv", "name\nJosé\n".encode("latin-1"), "not UTF-8"),
    ]:
        path = tmp_path / name
        path.write_bytes(content)
        refused = cli("run", "greeting", "-d", str(folder), "--batch", str(path))
        assert refused.exit_code == 4 and message in refused.stderr, (name, refused.stderr)
    unknown = cli("run", "nothing", "--batch", str(shared))
    assert unknown.exit_code == 4 and "no tool or job named 'nothing'" in unknown.stderr
