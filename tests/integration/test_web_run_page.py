"""The run page as the server renders it (the browser test covers what the page does in Chromium):
an in-process step that is working shows that it is busy, not 0 %, on the page, in its graph and on
the command line; a priced step shows its cost and each attempt's."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import yaml
from tests.helpers.accounts import web_login
from tests.integration.test_api import JOBS, running_server

from toolweave.cli.render import steps_table

NAP = {
    "jobId": "nap_then_more",
    "steps": [
        {"stepId": "nap", "toolId": "test.sleep", "inputMappings": [{"value": 60, "targetInputName": "seconds"}]},
        {"stepId": "more", "toolId": "test.sleep", "dependencies": ["nap"],
         "inputMappings": [{"value": 0, "targetInputName": "seconds"}]},
    ],
}


def _definitions(tmp_path: Path, app_tool: dict[str, Any]) -> Path:
    folder = tmp_path / "defs"
    folder.mkdir()
    (folder / "nap.yaml").write_text(yaml.safe_dump(NAP))
    priced = {**app_tool, "version": "2", "costingModel": {"rateSource": "static", "staticCost": {"amount": "0.0125"}}}
    (folder / "priced.yaml").write_text(yaml.safe_dump(priced))
    return folder


def _step_html(page: str, step_id: str) -> str:
    start = page.index(f'data-step-row="{step_id}"')
    return page[start:page.index("</li>\n", start)]


async def test_a_busy_in_process_step_shows_it_is_working_and_a_priced_step_its_costs(tmp_path: Path) -> None:
    from toolweave.services.builtin import builtin_tool_definitions

    instant = next(t for t in builtin_tool_definitions(True) if t.tool_id == "test.instant").dump()
    folder = _definitions(tmp_path, instant)
    async with running_server(tmp_path / "home", definitions=[JOBS, folder]) as server:
        app = server.app
        napping = await app.submit("nap_then_more", {}, account_id="alice")
        paid = await app.submit("test.instant", {"value": 3}, account_id="alice")
        assert (await app.wait(paid, 60))["status"] == "completed"
        for _ in range(600):  # until the nap has started
            run = await app.get_run(napping, "alice")
            if run["stepStatuses"][0]["status"] == "running":
                break
            await asyncio.sleep(0.05)
        assert run["stepStatuses"][0]["status"] == "running"
        assert run["stepStatuses"][0]["progress"] == 0.0  # what the store knows: nothing reported yet

        async with httpx.AsyncClient(base_url=server.url) as web:
            await web_login(web, server.alice)
            page = (await web.get(f"/runs/{napping}")).text
            nap = _step_html(page, "nap")
            assert 'class="bar indeterminate"' in nap, nap  # busy, not a bar stuck at 0 %
            assert re.search(r'<g class="node st-running" data-step="nap"[^>]*>.*?<rect class="bar busy"', page, re.S)
            assert 'class="bar indeterminate"' not in _step_html(page, "more")  # waiting: no bar at all

            priced = (await web.get(f"/runs/{paid}")).text
            step = _step_html(priced, "test.instant")
            assert re.search(r'data-role="cost"[^>]*>\$0\.0125<', step), step  # the step's cost
            assert step.count("$0.0125") == 2, step  # and its one attempt's

        # the command line: "…" for the busy step, not "0%"
        from rich.console import Console

        console = Console(width=120, record=True)
        console.print(steps_table(run))
        text = console.export_text()
        nap_line = next(line for line in text.splitlines() if line.startswith("nap "))
        assert "…" in nap_line and "0%" not in nap_line, text
        await app.cancel(napping, "alice")
