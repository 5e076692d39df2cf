"""The web page end to end in real headless Chromium: log in with an API key, submit the example
job from its form with an uploaded image, watch the DAG go live to completion, see the output image.

Screenshots go to a temporary folder, or to docs/screenshots/ when TOOLWEAVE_SCREENSHOTS=1 (to
refresh the ones in the docs). Outside CI the test skips (with the reason) when no Chromium is
installed; in CI (CI=true) a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from tests.integration.test_api import running_server

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo"
SAMPLE = ROOT / "examples" / "assets" / "sample.png"
DOCS_SHOTS = ROOT / "docs" / "screenshots"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

pytestmark = pytest.mark.browser


def _chromium() -> str:
    found = os.environ.get("TOOLWEAVE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    reason = "no Chromium found (install Debian's chromium, or set TOOLWEAVE_CHROMIUM)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


async def test_log_in_submit_the_example_job_watch_it_complete_and_see_the_output(tmp_path: Path) -> None:
    executable = _chromium()
    playwright_api = pytest.importorskip("playwright.async_api")
    shots = DOCS_SHOTS if os.environ.get("TOOLWEAVE_SCREENSHOTS") == "1" else tmp_path / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    async with running_server(tmp_path / "home", definitions=[DEMO]) as server, playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, args=ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 860})
            page.set_default_timeout(30_000)

            await page.goto(f"{server.url}/")
            assert "/login" in page.url
            await page.fill("#api_key", "tw_not_a_key")
            await page.click("button[type=submit]")
            assert "not valid" in (await page.inner_text(".alert.error"))
            await page.fill("#api_key", server.alice)
            await page.click("button[type=submit]")
            await page.wait_for_selector("article.item[data-id=demo_variants]")
            assert await page.inner_text(".who") == "alice"
            await page.screenshot(path=str(shots / "catalog.png"), full_page=True)

            await page.click("article.item[data-id=demo_variants] a.button")
            await page.wait_for_selector("#run-form")
            assert await page.locator(".dag .node").count() >= 5  # the job's steps, drawn from its definition
            # a bad submit first: the required image is missing
            await page.evaluate("document.getElementById('run-form').noValidate = true")
            await page.click("#submit-run")
            await page.wait_for_selector("#form-errors")
            assert "image" in await page.inner_text("#form-errors")
            await page.evaluate("document.getElementById('run-form').noValidate = true")
            await page.set_input_files("#in-image", str(SAMPLE))
            await page.fill("#in-label", "made in the browser")
            await page.screenshot(path=str(shots / "run-form.png"), full_page=True)
            streams: list[str] = []
            page.on("request", lambda request: streams.append(request.url) if "/events" in request.url else None)
            await page.click("#submit-run")

            await page.wait_for_url("**/runs/run_*")
            run_id = page.url.rsplit("/", 1)[1]
            await page.wait_for_selector(".dag .node")
            live = await page.get_attribute("#run", "data-terminal") == "false"
            if live:
                await page.screenshot(path=str(shots / "run-live.png"), full_page=True)
            # live states arrive over the event stream; the page reloads itself when the run ends
            # (data-terminal=true only comes from the server, after that reload)
            await page.wait_for_selector("#run[data-terminal=true] #run-status.st-completed", timeout=60_000)
            await page.wait_for_selector("#outputs img.artifact[data-output=contact_sheet]")
            image = page.locator("#outputs img.artifact[data-output=contact_sheet]")
            await image.scroll_into_view_if_needed()
            assert await image.evaluate("img => img.complete && img.naturalWidth > 0")
            states = await page.eval_on_selector_all(".dag .node", "nodes => nodes.map(n => n.getAttribute('class'))")
            assert all("st-succeeded" in s or "st-skipped" in s for s in states), states
            assert await page.locator("#retry-run").count() == 0
            if live:  # the page followed the run over its event stream
                assert any(f"/api/v1/runs/{run_id}/events" in url for url in streams), streams
            await page.evaluate("window.scrollTo(0, 0)")
            await page.screenshot(path=str(shots / "run-completed.png"), full_page=True)

            await page.click("nav a[href='/runs']")
            await page.wait_for_selector(f"tr[data-run={run_id}] .pill.st-completed")
            await page.screenshot(path=str(shots / "runs.png"), full_page=True)
        finally:
            await browser.close()

    run = await server.app.get_run(run_id)
    assert run["status"] == "completed" and run["masterAccountId"] == "alice"
    assert run["origin"] == {"platform": "web"}


async def test_another_account_cannot_open_the_run_page(tmp_path: Path) -> None:
    executable = _chromium()
    playwright_api = pytest.importorskip("playwright.async_api")
    async with running_server(tmp_path / "home") as server, playwright_api.async_playwright() as pw:
        run_id = await server.app.submit("test.instant", {"value": 1}, account_id="alice")
        browser = await pw.chromium.launch(executable_path=executable, args=ARGS)
        try:
            page = await browser.new_page()
            await page.goto(f"{server.url}/login")
            await page.fill("#api_key", server.bob)
            await page.click("button[type=submit]")
            await page.wait_for_selector(".who")
            response = await page.goto(f"{server.url}/runs/{run_id}")
            assert response is not None and response.status == 404
            assert "Run not found" in await page.inner_text("h1")
            events = await page.goto(f"{server.url}/api/v1/runs/{run_id}/events")
            assert events is not None and events.status == 404
        finally:
            await browser.close()
