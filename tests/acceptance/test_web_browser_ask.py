"""A run that asks, in real headless Chromium: the run page follows the run until its step asks,
shows the candidates as thumbnails, keeps the answer form while someone is filling it in, and a
click on a thumbnail answers; the run then goes on to completion on the same page."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.acceptance.test_web_browser import ARGS, SAMPLE, _chromium
from tests.integration.test_api import running_server

pytestmark = pytest.mark.browser
ASK = Path(__file__).resolve().parents[2] / "examples" / "ask"


async def test_choosing_a_candidate_on_the_run_page(tmp_path: Path) -> None:
    executable = _chromium()
    playwright_api = pytest.importorskip("playwright.async_api")
    async with running_server(tmp_path / "home", definitions=[ASK]) as server, playwright_api.async_playwright() as pw:
        async with server.client(server.alice) as client:
            response = await client.post("/api/v1/runs", data={"jobId": "pick_best"},
                                         files={"image": ("s.png", SAMPLE.read_bytes(), "image/png")})
            run_id = response.json()["jobRunId"]
        browser = await pw.chromium.launch(executable_path=executable, args=ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 860})
            page.set_default_timeout(30_000)
            await page.goto(f"{server.url}/login")
            await page.fill("#api_key", server.alice)
            await page.click("button[type=submit]")
            await page.wait_for_selector(".who")
            await page.goto(f"{server.url}/runs/{run_id}")
            # the page follows the run until its step asks: four thumbnails, each a button
            await page.wait_for_selector("form[data-answer-form=pick] button[data-candidate='3'] img", timeout=60_000)
            assert await page.locator("form[data-answer-form=pick] button[data-candidate] img").count() == 4
            assert "Needs you" in await page.inner_text("#run-status")
            thumbnail = page.locator("button[data-candidate='1'] img")
            assert await thumbnail.evaluate("img => img.complete && img.naturalWidth > 0")
            # a note being typed survives a redraw of the live part
            await page.fill("form[data-answer-form=pick] input[name=comment]", "the second one")
            assert await page.evaluate("document.querySelector('form.answer').classList.contains('dirty')")
            await page.click("button[data-candidate='1']")
            await page.wait_for_selector("#run[data-terminal=true] #run-status.st-completed", timeout=60_000)
            assert "Answered" in await page.inner_text("[data-role=answer]")
        finally:
            await browser.close()
    run = await server.app.get_run(run_id)
    pick = next(s for s in run["stepStatuses"] if s["stepId"] == "pick")
    assert pick["outputs"]["chosenIndexes"] == [1] and pick["outputs"]["comment"] == "the second one"
    assert pick["outputs"]["answeredBy"] == "alice"
