"""Issue 10, attacks 2 and 9 (login): revoked keys kept working through web sessions made with them,
and ``POST /login`` took no CSRF token (another site could sign a visitor in to its own account)."""

from __future__ import annotations

from pathlib import Path

import httpx
from tests.helpers.accounts import web_login
from tests.integration.test_api import ADMIN_KEY, Server, assert_problem, running_server


def _csrf(page: str) -> str:
    return page.split('name="csrf" value="', 1)[1].split('"', 1)[0]


async def test_revoking_a_key_ends_every_session_made_with_it_at_once(server: Server) -> None:
    app = server.app
    key_id, secret = await app.create_key("carol", "laptop")
    _other_id, other = await app.create_key("carol", "phone")
    browsers = [server.client(follow_redirects=False) for _ in range(2)]
    try:
        for browser in browsers:
            await web_login(browser, secret)
            assert (await browser.get("/runs")).status_code == 200
            assert (await browser.get("/api/v1/runs")).status_code == 200
        phone = server.client(follow_redirects=False)
        await web_login(phone, other)
        csrf = _csrf((await browsers[0].get("/new/test.instant")).text)
        assert (await browsers[0].post("/new/test.instant", data={"csrf": csrf, "value": "1"})).status_code == 303

        assert await app.revoke_key(key_id) == 1

        for browser in browsers:  # the very next request, GET and POST, page and API
            response = await browser.get("/runs")
            assert response.status_code == 303 and response.headers["location"].startswith("/login")
            assert_problem(await browser.get("/api/v1/runs"), 401)
            response = await browser.post("/new/test.instant", data={"csrf": csrf, "value": "2"})
            assert response.status_code == 303 and response.headers["location"].startswith("/login")
            assert_problem(await browser.post("/api/v1/runs", json={"toolId": "test.instant"},
                                              headers={"X-CSRF-Token": csrf}), 401)
        async with server.client(secret) as revoked:
            assert_problem(await revoked.get("/api/v1/runs"), 401)
        # a session made with another key of the same account is not touched
        assert (await phone.get("/runs")).status_code == 200
        assert len((await phone.get("/api/v1/runs")).json()["items"]) == 1
        await phone.aclose()
    finally:
        for browser in browsers:
            await browser.aclose()


async def test_replacing_the_admin_key_ends_the_admin_sessions(tmp_path: Path, db_url: str) -> None:
    async with running_server(tmp_path / "home", database_url=db_url) as server:
        async with server.client(follow_redirects=False) as browser:
            await web_login(browser, ADMIN_KEY)
            assert (await browser.get("/runs")).status_code == 200
            server.app.settings.admin_key = "tw_a_new_admin_key_0123456789abcdef"
            assert (await browser.get("/runs")).status_code == 303
            assert_problem(await browser.get("/api/v1/runs"), 401)


async def test_login_needs_the_token_of_its_own_form(server: Server) -> None:
    """A page on another site can post a login form, but it cannot read the token of ours, nor set
    the SameSite=Strict cookie it must match."""
    async with server.client(follow_redirects=False) as victim:
        # the attacker's page posts the attacker's key, with no token, or a token of its own
        for data in ({"api_key": server.bob}, {"api_key": server.bob, "csrf": "made-up"}):
            response = await victim.post("/login", data=data, headers={"Origin": "https://evil.example"})
            assert response.status_code == 403 and "expired" in response.text
            assert "tw_session" not in response.headers.get("set-cookie", "")
        # a token from another browser's form does not fit this browser's cookie
        async with server.client() as attacker:
            attackers_token = _csrf((await attacker.get("/login")).text)
        await victim.get("/login")
        response = await victim.post("/login", data={"api_key": server.bob, "csrf": attackers_token})
        assert response.status_code == 403
        assert (await victim.get("/runs")).status_code == 303  # still signed out
        # the form's own token works once, in the browser that loaded it
        form = await victim.get("/login")
        cookie = form.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/login" in cookie
        response = await victim.post("/login", data={"api_key": server.alice, "csrf": _csrf(form.text)})
        assert response.status_code == 303
        assert (await victim.get("/runs")).status_code == 200


async def test_a_cookie_from_before_sessions_named_their_key_is_refused(server: Server) -> None:
    from toolweave.api.auth import SESSION_COOKIE, SESSION_NAMESPACE, _session_key

    await server.app.kv_set(SESSION_NAMESPACE, _session_key("old-token"), {"account": "alice", "csrf": "x"})
    async with httpx.AsyncClient(base_url=server.url, cookies={SESSION_COOKIE: "old-token"}) as old:
        assert_problem(await old.get("/api/v1/runs"), 401)
