"""The web page end to end in real headless Chromium: log in with an API key, submit the example
job from its form with an uploaded image, watch the DAG go live to completion, see the output image;
every page fits a phone (390 px) and a desktop (1280 px) without scrolling sideways and needs
nothing from the internet; the run page tells the whole story of a run.

Screenshots go to a temporary folder, or to docs/screenshots/ when TOOLWEAVE_SCREENSHOTS=1 (to
refresh the ones in the docs). Outside CI the test skips (with the reason) when no Chromium is
installed; in CI (CI=true) a missing browser is a failure.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import zipfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from tests.integration.test_api import running_server

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo"
SAMPLE = ROOT / "examples" / "assets" / "sample.png"
STORY = Path(__file__).parent / "story"
JOBS = Path(__file__).parent / "jobs"
WIDTHS = (390, 1280)
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

            # the gallery: a click opens the larger view, arrows go through the outputs
            await page.click("#outputs a.zoom[data-name=contact_sheet]")
            await page.wait_for_selector("dialog#viewer[open] .viewer-body img")
            assert await page.inner_text("#viewer .viewer-title") == "contact_sheet"
            assert await page.locator("#viewer .viewer-body img").evaluate("i => i.complete && i.naturalWidth > 0")
            await page.keyboard.press("ArrowRight")
            assert await page.inner_text("#viewer .viewer-title") != "contact_sheet"
            await page.keyboard.press("Escape")
            assert await page.locator("dialog#viewer[open]").count() == 0
            # "download all": one archive with every file output
            archive = await page.request.get(server.url + await page.get_attribute("#download-all", "href"))
            assert archive.status == 200 and archive.headers["content-type"] == "application/zip"
            names = zipfile.ZipFile(io.BytesIO(await archive.body())).namelist()
            assert "contact_sheet.png" in names and len([n for n in names if n.endswith(".png")]) >= 5, names

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


async def _sign_in(page: Any, server: Any, key: str) -> None:
    await page.goto(f"{server.url}/login")
    await page.fill("#api_key", key)
    await page.click("button[type=submit]")
    await page.wait_for_selector(".who")


async def _offline(page: Any, server_url: str) -> list[str]:
    """Refuse every request that leaves this machine; returns the list of those refused."""
    refused: list[str] = []
    own = urlsplit(server_url).netloc

    async def guard(route: Any) -> None:
        if urlsplit(route.request.url).netloc == own or route.request.url.startswith(("data:", "blob:")):
            await route.continue_()
        else:
            refused.append(route.request.url)
            await route.abort()

    await page.route("**/*", guard)
    return refused


async def test_every_page_fits_a_phone_and_a_desktop_and_needs_no_internet(tmp_path: Path) -> None:
    """At 390 px (a phone) and 1280 px nothing is wider than the window, on every page: sign-in,
    catalog, both kinds of form, runs, a finished run with images, a failed run, a queued one,
    queue and workers, the API reference, an error page. No page asks for anything off this
    machine (the API reference's script and style sheet are served here)."""
    executable = _chromium()
    playwright_api = pytest.importorskip("playwright.async_api")
    async with running_server(tmp_path / "home", definitions=[DEMO, JOBS, STORY]) as server, \
            playwright_api.async_playwright() as pw:
        app = server.app
        done = await app.submit("demo_variants", {"image": str(SAMPLE), "label": "a rather long label " * 4},
                                account_id="alice", allow_local_paths=True)
        story = await app.submit("story", {}, account_id="alice")
        await app.wait(done, 60)
        browser = await pw.chromium.launch(executable_path=executable, args=ARGS)
        try:
            context = await browser.new_context(viewport={"width": WIDTHS[0], "height": 844})
            page = await context.new_page()
            page.set_default_timeout(30_000)
            refused = await _offline(page, server.url)
            pages = ["/login"]
            await _sign_in(page, server, server.alice)
            pages += ["/", "/new/demo_variants", "/new/image.watermark", "/runs", f"/runs/{done}",
                      f"/runs/{story}", "/status", "/api/docs", "/runs/run_unknown", "/new/no_such_tool"]
            wide: list[str] = []
            for width in WIDTHS:
                await page.set_viewport_size({"width": width, "height": 844})
                for path in pages:
                    if path == "/login":
                        continue
                    await page.goto(server.url + path)
                    if path == "/api/docs":
                        await page.wait_for_selector(".swagger-ui .opblock", timeout=30_000)
                    await page.wait_for_load_state("networkidle")
                    scroll, inner = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
                    if scroll > inner:
                        wide.append(f"{path} at {width} px is {scroll} px wide")
            # the sign-in page, signed out
            await context.clear_cookies()
            for width in WIDTHS:
                await page.set_viewport_size({"width": width, "height": 844})
                await page.goto(f"{server.url}/login")
                scroll, inner = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
                if scroll > inner:
                    wide.append(f"/login at {width} px is {scroll} px wide")
            assert wide == []
            assert refused == []
        finally:
            await browser.close()


async def test_the_run_page_tells_the_whole_story(tmp_path: Path) -> None:
    """Every attempt of every step with its error and duration, the time until a retry, the step
    counts as they are (not "3/3" when some were cancelled), times in the viewer's time zone,
    descriptions rendered from Markdown."""
    executable = _chromium()
    playwright_api = pytest.importorskip("playwright.async_api")
    async with running_server(tmp_path / "home", definitions=[STORY]) as server, playwright_api.async_playwright() as pw:
        app = server.app
        run_id = await app.submit("story", {}, account_id="alice")
        for _ in range(600):  # until the patient step waits for its second attempt
            run = await app.get_run(run_id)
            states = {s["stepId"]: s["status"] for s in run["stepStatuses"]}
            if states["patient"] == "waiting_retry" and states["broken"] in ("skipped", "failed"):
                break
            await __import__("asyncio").sleep(0.05)
        assert states["flaky"] == "succeeded", states
        browser = await pw.chromium.launch(executable_path=executable, args=ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 900}, timezone_id="Asia/Tokyo",
                                                locale="en-GB")
            page = await context.new_page()
            page.set_default_timeout(30_000)
            await _sign_in(page, server, server.alice)
            await page.goto(f"{server.url}/runs/{run_id}")

            flaky = page.locator("[data-step-row=flaky]")
            attempts = flaky.locator(".attempt")
            assert await attempts.count() == 3
            for n in (1, 2):
                text = await attempts.nth(n - 1).inner_text()
                assert f"attempt {n} of key" in text and "fails on purpose" in text, text
                assert re.search(r"\d+(\.\d)? (ms|s)", text), text  # its duration
            assert "Completed" in await attempts.nth(2).inner_text()
            broken = page.locator("[data-step-row=broken]")
            assert "not retryable" in await broken.locator(".attempt").inner_text()
            assert "Skipped" in await broken.locator("[data-role=status]").inner_text()
            countdown = await page.inner_text("[data-step-row=patient] [data-role=retry] [data-until]")
            assert re.fullmatch(r"in (\d+ min \d+ s|\d+ s)", countdown), countdown

            # times in the viewer's zone (Tokyo, UTC+9), not UTC
            started = datetime.fromisoformat(run["startedAt"].replace("Z", "+00:00")) + timedelta(hours=9)
            shown = await page.inner_text("#run-started time")
            assert started.strftime("%H:%M:%S") in shown and "UTC" not in shown, shown
            assert await page.get_attribute("#run-started time", "data-local") == "true"

            await page.click("#cancel-run")
            await page.wait_for_selector("#run[data-terminal=true] #run-status.st-cancelled")
            counts = await page.inner_text("#run-steps") + " / " + await page.inner_text("#steps-other")
            assert "1 of 3 done" in counts and "1 cancelled" in counts and "1 skipped" in counts, counts

            await page.goto(f"{server.url}/")
            description = page.locator("article.item[data-id=story] .desc")
            assert await description.locator("strong").inner_text() == "fail"
            assert await description.locator("a").get_attribute("href") == "https://example.invalid/"
        finally:
            await browser.close()


async def test_the_form_shows_an_input_only_while_its_visible_if_holds(tmp_path: Path) -> None:
    """The predecessor's string tool, converted: 'Append Text' shows for concat, 'Search For' and
    'Replace With' for replace; a hidden required field neither blocks nor feeds the submit."""
    import json as _json

    from toolweave.registry.predecessor import convert

    executable = _chromium()
    playwright_api = pytest.importorskip("playwright.async_api")
    source = ROOT / "tests" / "data" / "predecessor-tools" / "string-primitive.json"
    defs = tmp_path / "defs"
    defs.mkdir()
    (defs / "string.json").write_text(_json.dumps(convert(_json.loads(source.read_text())).definitions))
    async with running_server(tmp_path / "home", definitions=[defs]) as server, playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, args=ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 860})
            page.set_default_timeout(30_000)
            await page.goto(f"{server.url}/login")
            await page.fill("#api_key", server.alice)
            await page.click("button[type=submit]")
            await page.goto(f"{server.url}/new/string-primitive")
            await page.wait_for_selector("#run-form")

            def shown(name: str) -> Any:
                return page.locator(f'.field[data-field="{name}"]').is_visible()

            assert await page.input_value("#in-operation") == "concat"
            assert (await shown("appendText"), await shown("searchText"), await shown("replacementText")) == (
                True, False, False)
            await page.select_option("#in-operation", "replace")
            assert (await shown("appendText"), await shown("searchText"), await shown("replacementText")) == (
                False, True, True)
            await page.fill("#in-inputText", "a-b-c")
            await page.fill("#in-searchText", "-")
            await page.fill("#in-replacementText", "+")
            await page.click("#submit-run")  # the hidden required 'Append Text' does not block it
            await page.wait_for_url("**/runs/run_*")
            run_id = page.url.rsplit("/", 1)[1]
        finally:
            await browser.close()
        run = await server.app.wait(run_id, 30)
    assert run["status"] == "completed", run["error"]
    assert run["finalOutputs"] == {"result": "a+b+c"}
    assert "appendText" not in run["jobInputs"]
