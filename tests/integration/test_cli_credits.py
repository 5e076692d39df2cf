"""``toolweave credits …``, ``toolweave limits …``, ``run --estimate`` and ``--cost-ceiling`` on a
real SQLite store (typer's ``CliRunner``, a home per test)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tests.integration.test_cli_engine import cli, cli_json, env, run_id_of  # noqa: F401 (a fixture)

PRICED = {
    "toolId": "test.instant", "service": "builtin", "version": "2",
    "inputSchema": {"value": {"type": "integer", "default": 0}},
    "outputSchema": {"value": {"type": "integer"}, "note": {"type": "text"}},
    "costingModel": {"rateSource": "static", "staticCost": {"amount": "0.5"}},
}


@pytest.fixture
def priced(tmp_path: Path) -> str:
    path = tmp_path / "priced.yaml"
    path.write_text(yaml.safe_dump(PRICED))
    return str(path)


def test_grant_show_history_and_a_refused_run(env: dict[str, str], priced: str) -> None:  # noqa: F811
    granted = cli("credits", "grant", "local", "0.75", "--note", "trial")
    assert granted.exit_code == 0, granted.output
    assert "available  0.75" in granted.stdout
    estimate = cli("run", "test.instant", "-d", priced, "-i", "value=1", "--estimate")
    assert estimate.exit_code == 0, estimate.output
    assert "estimate for test.instant: 0.50" in estimate.stdout and "static cost" in estimate.stdout
    assert "0.75 — covered" in estimate.stdout
    first = cli("run", "test.instant", "-d", priced, "-i", "value=1")
    assert first.exit_code == 0, first.output
    refused = cli("run", "test.instant", "-d", priced, "-i", "value=2")
    assert refused.exit_code == 4
    assert "refused: this run is estimated at 0.50 credits and account local has 0.25 available" in refused.output
    shown = cli_json("credits", "show", "local")
    assert (shown["balance"], shown["held"], shown["available"]) == ("0.75", "0.50", "0.25")
    history = cli_json("credits", "history", "local")
    assert [e["kind"] for e in history] == ["hold", "grant"]
    assert len(json.loads(cli("runs", "list", "--json").stdout)["items"]) == 1  # the refused run was never made


def test_a_run_pays_and_spend_counts_it(env: dict[str, str], priced: str) -> None:  # noqa: F811
    cli("credits", "grant", "local", "5")
    done = cli("run", "test.instant", "-d", priced, "-i", "value=1", "--wait", "--view", "quiet")
    assert done.exit_code == 0, done.output
    spent = cli_json("credits", "spend", "--days", "1")
    assert spent["total"] == "0.50" and spent["byTool"] == {"test.instant": "0.50"}
    assert cli_json("credits", "show", "local")["available"] == "4.50"


def test_limits_and_bad_values_are_named(env: dict[str, str]) -> None:  # noqa: F811
    set_ = cli("limits", "set", "acme", "--runs-in-flight", "1", "--confirm-above", "2", "--json")
    assert set_.exit_code == 0, set_.output
    assert json.loads(set_.stdout)["limits"]["maxRunsInFlight"] == 1
    first = cli("run", "test.instant", "--account", "acme")
    assert first.exit_code == 0, first.output
    over = cli("run", "test.instant", "--account", "acme")
    assert over.exit_code == 4 and "at most 1 runs in flight" in over.output
    for args, message in (
        (("credits", "grant", "acme", "lots"), "decimal number"),
        (("credits", "grant", "acme", "0"), "more than 0"),
        (("limits", "set", "acme"), "give at least one of"),
        (("limits", "set", "acme", "--credits", "maybe"), "--credits must be on, off or default"),
        (("run", "test.instant", "--cost-ceiling", "free"), "--cost-ceiling must be a decimal number"),
    ):
        result = cli(*args)
        assert result.exit_code == 4, (args, result.output)
        assert message in result.output, (args, result.output)


def test_a_cost_ceiling_from_the_command_line(env: dict[str, str], priced: str, tmp_path: Path) -> None:  # noqa: F811
    job = tmp_path / "pair.yaml"
    job.write_text(yaml.safe_dump({
        "jobId": "pair", "inputSchema": {"value": {"type": "integer", "default": 1}},
        "outputSchema": {"first": {"type": "integer", "sourceStepId": "a", "sourceOutputName": "value"},
                         "second": {"type": "integer", "sourceStepId": "b", "sourceOutputName": "value"}},
        "steps": [{"stepId": "a", "toolId": "test.instant",
                   "inputMappings": [{"sourceJobInput": "value", "targetInputName": "value"}]},
                  {"stepId": "b", "toolId": "test.instant", "inputMappings": [
                      {"sourceStepId": "a", "sourceOutputName": "value", "targetInputName": "value"}]}],
    }))
    result = cli("run", "pair", "-d", priced, "-d", str(job), "--cost-ceiling", "0.75", "--wait", "--json")
    assert result.exit_code == 2, result.output  # partially completed
    run = json.loads(result.stdout)
    assert run["error"]["code"] == "cost_ceiling" and run["finalOutputs"] == {"first": 2}


def test_a_grant_past_the_largest_balance_is_one_line(env: dict[str, str]) -> None:  # noqa: F811
    for _ in range(10):
        assert cli("credits", "grant", "rich", "1000000000").exit_code == 0
    refused = cli("credits", "grant", "rich", "1")
    assert refused.exit_code == 4 and "error: the balance of an account may be at most 10000000000" in refused.output
