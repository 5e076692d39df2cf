"""Issue 10, attack 9 (URLs): ``http://0177.0.0.1/`` as a callback was accepted and then retried
with tracebacks; as a media input it "failed unexpectedly". Every numeric, octal, hexadecimal and
shortened IPv4 form is refused before any connection (and before any DNS lookup), for callbacks and
media URLs alike, and at submit with a 422 naming the field."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from pathlib import Path
from typing import Any

import pytest
from tests.helpers.accounts import runs_of
from tests.integration.test_api import Server, assert_problem, running_server

from toolweave import admission
from toolweave.netguard import ForbiddenURL, check_literal, check_url
from toolweave.notify.callback import CallbackChannel
from toolweave.notify.dispatcher import DeliveryError

LOOPBACK_FORMS = [
    "http://0177.0.0.1/",            # octal
    "http://00000177.0.0.1/",
    "http://2130706433/",            # one 32-bit integer
    "http://017700000001/",          # one octal integer
    "http://0x7f000001/",            # one hex integer
    "http://0x7f.1/",                # hex, shortened
    "http://0x7F.0.0.1/",
    "http://127.1/",                 # shortened
    "http://127.0.1/",
    "http://0/",
    "http://127.0.0.1./",            # trailing dot
    "http://127.0.0.1:8080/x.png",
    "http://0.0.0.0/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",    # IPv4-mapped
    "http://[::ffff:7f00:1]/",
    "http://[::127.0.0.1]/",         # IPv4-compatible
    "http://[2002:7f00:1::]/",       # 6to4 of 127.0.0.1
    "http://[64:ff9b::7f00:1]/",     # NAT64 of 127.0.0.1
    "http://localhost/",
    "http://LOCALHOST./",
    "http://api.localhost/",
]
PRIVATE_FORMS = [
    "http://10.0.0.1/", "http://0x0a.0.0.1/", "http://167772161/", "http://192.168.1.1/",
    "https://3232235777/", "http://169.254.169.254/latest/meta-data/", "http://0xa9fea9fe/",
    "http://100.64.0.1/", "http://[fe80::1]/", "http://[fc00::1]/",
]
NOT_A_DOTTED_QUAD = ["http://134744072/", "http://8.8.2056/", "http://1.2.3/", "http://0x08.0x08.0x08.0x08/"]
PUBLIC = ["https://example.com/cat.png", "http://8.8.8.8/", "http://1.2.3.com/", "http://[2606:4700::1111]/",
          "https://example.com:8443/a?b=c"]


@pytest.fixture
def no_dns(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Fail the test if anything resolves a name: refusals must come from the URL alone."""
    calls: list[Any] = []

    async def refuse(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        raise AssertionError(f"getaddrinfo{args} was called")

    monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", refuse)
    return calls


@pytest.mark.parametrize("url", LOOPBACK_FORMS + PRIVATE_FORMS + NOT_A_DOTTED_QUAD)
async def test_every_numeric_or_private_form_is_refused_without_dns(url: str, no_dns: list[Any]) -> None:
    with pytest.raises(ForbiddenURL) as refused:
        check_literal(url, allow_private=False)
    assert "not allowed" in str(refused.value) or "form" in str(refused.value)
    with pytest.raises(ForbiddenURL):
        await check_url(url, allow_private=False)
    assert no_dns == []


@pytest.mark.parametrize("url", LOOPBACK_FORMS[:10] + NOT_A_DOTTED_QUAD)
def test_ambiguous_forms_are_refused_even_where_private_addresses_are_allowed(url: str) -> None:
    with pytest.raises(ForbiddenURL, match="octal, hexadecimal, integer or shortened"):
        check_literal(url, allow_private=True)


@pytest.mark.parametrize("url", PUBLIC)
def test_public_urls_pass_the_literal_check(url: str) -> None:
    check_literal(url, allow_private=False)


@pytest.mark.parametrize("url", ["ftp://example.com/", "file:///etc/passwd", "http://", "http:///x", "gopher://x/",
                                 "http://exa mple.com/", "http://[::1/", "http://example.com:99999/"])
def test_what_is_not_an_http_url_is_refused(url: str) -> None:
    with pytest.raises(ForbiddenURL):
        check_literal(url, allow_private=False)


async def test_submit_refuses_them_in_callbacks_media_inputs_and_fetch_sources(tmp_path: Path, db_url: str) -> None:
    async with running_server(tmp_path / "home", database_url=db_url, callback_allow_private_urls=False) as server:
        async with server.client(server.bob) as bob:
            for url in LOOPBACK_FORMS + PRIVATE_FORMS[:4] + NOT_A_DOTTED_QUAD[:2]:
                bodies = [
                    ({"toolId": "test.instant", "callbackUrl": url}, "callbackUrl"),
                    ({"toolId": "image.resize", "inputs": {"image": url, "width": 8}}, "inputs.image"),
                    ({"toolId": "media.fetch", "inputs": {"source": url}}, "inputs.source"),
                    ({"toolId": "image.grid", "inputs": {"images": ["https://example.com/a.png", url]}}, "inputs.images[1]"),
                ]
                for body, field in bodies:
                    response = await bob.post("/api/v1/runs", json=body)
                    problem = assert_problem(response, 422)
                    assert field in [e["field"] for e in problem["errors"]], (url, problem)
            assert await runs_of(bob) == []


async def test_a_stored_callback_with_such_a_url_fails_once_without_a_traceback(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """Runs stored before this check (or written by another front end) still cannot reach the URL:
    the delivery fails for good, at once, with the reason."""
    channel = CallbackChannel(server.app.http, b"secret", allow_private=False)
    for url in ("http://0177.0.0.1/hook", "http://2130706433/", "http://0x7f.1/", "http://127.1/"):
        with pytest.raises(DeliveryError) as failed:
            await channel.deliver({"notification_id": "ntf_x", "event_type": "run.completed",
                                   "target": {"url": url}, "payload": {}})
        assert failed.value.retryable is False and "refused" in str(failed.value)
    assert not [r for r in caplog.records if r.exc_info]


async def test_a_media_url_built_at_run_time_is_refused_when_the_step_runs(server: Server) -> None:
    """A URL that a template builds is not seen at submit; the tool refuses it, for good."""
    async with server.client(server.bob) as bob:
        response = await bob.post("/api/v1/runs", json={"toolId": "image.grid", "inputs": {"images": '["http://0x7f.1/a.png"]'}})
        assert_problem(response, 422)  # JSON text is read at submit too
    app = server.app
    from toolweave.app import MediaError

    for url in ("http://0177.0.0.1/a.png", "http://127.1/a.png", "http://[::ffff:127.0.0.1]/a.png"):
        with pytest.raises(MediaError, match=r"form|not allowed"):
            await app.host.load_media(url)


@pytest.fixture
def intranet_dns(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A resolver that knows ``intranet.example`` (a private address) and ``cdn.example`` (a
    public one); every other name does not resolve. Returns the names looked up."""
    answers = {"intranet.example": "10.0.0.7", "cdn.example": "93.184.216.34"}
    asked: list[str] = []

    async def resolve(self: Any, host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        asked.append(host)
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port or 80))]

    monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", resolve)
    return asked


async def test_a_name_that_resolves_to_a_private_address_is_refused_at_submit(
    tmp_path: Path, db_url: str, intranet_dns: list[str]
) -> None:
    """Not only literal addresses: a host name is looked up at submit, so a private one is a 422
    naming the field and the setting that would allow it, and no run is created to fail later."""
    async with running_server(tmp_path / "home", database_url=db_url, callback_allow_private_urls=False) as server:
        async with server.client(server.bob) as bob:
            for body, field, setting in (
                ({"toolId": "media.fetch", "inputs": {"source": "http://intranet.example/a.png"}},
                 "inputs.source", "TOOLWEAVE_MEDIA_ALLOW_PRIVATE_URLS"),
                ({"toolId": "image.grid", "inputs": {"images": ["http://cdn.example/a.png", "http://intranet.example/b.png"]}},
                 "inputs.images[1]", "TOOLWEAVE_MEDIA_ALLOW_PRIVATE_URLS"),
                ({"toolId": "image.resize", "inputs": {"image": "http://10.0.0.1/a.png", "width": 8}},
                 "inputs.image", "TOOLWEAVE_MEDIA_ALLOW_PRIVATE_URLS"),
                ({"toolId": "test.instant", "callbackUrl": "https://intranet.example/hook"},
                 "callbackUrl", "TOOLWEAVE_CALLBACK_ALLOW_PRIVATE_URLS"),
            ):
                problem = assert_problem(await bob.post("/api/v1/runs", json=body), 422)
                assert [e["field"] for e in problem["errors"]] == [field], problem
                assert setting in problem["errors"][0]["message"], problem
                assert "private" in problem["errors"][0]["message"]
            assert await runs_of(bob) == []
            assert "intranet.example" in intranet_dns
            # a batch looks each name up once, for all its items
            intranet_dns.clear()
            response = await bob.post("/api/v1/runs/batch", json={"toolId": "media.fetch", "items": [
                {"inputs": {"source": f"http://intranet.example/{i}.png"}} for i in range(5)]})
            assert response.json()["refused"] == 5, response.text
            assert all("TOOLWEAVE_MEDIA_ALLOW_PRIVATE_URLS" in str(item["error"]) for item in response.json()["items"])
            assert intranet_dns == ["intranet.example"]
            assert await runs_of(bob) == []
        # what passes (checked here, not run: the worker would fetch it): a public name, and one that
        # does not resolve now (the fetch checks it again); where the operator allows private
        # addresses, nothing is looked up at submit
        app = server.app
        fetch = app.job_for("media.fetch")
        for url in ("http://cdn.example/a.png", "http://nowhere.example/a.png"):
            await admission.check_urls(fetch, {"source": url}, None, app.settings)
        intranet_dns.clear()
        allowing = dataclasses.replace(app.settings, media_allow_private_urls=True)
        await admission.check_urls(fetch, {"source": "http://intranet.example/a.png"}, None, allowing)
        assert intranet_dns == []


async def test_the_refusal_when_fetching_names_the_setting_too(server: Server, intranet_dns: list[str]) -> None:
    from toolweave.app import MediaError

    with pytest.raises(MediaError, match="TOOLWEAVE_MEDIA_ALLOW_PRIVATE_URLS") as refused:
        await server.app.host.load_media("http://intranet.example/a.png")
    assert "10.0.0.7" in str(refused.value)
    channel = CallbackChannel(server.app.http, b"secret", allow_private=False)
    with pytest.raises(DeliveryError, match="TOOLWEAVE_CALLBACK_ALLOW_PRIVATE_URLS"):
        await channel.deliver({"notification_id": "ntf_x", "event_type": "run.completed",
                               "target": {"url": "http://intranet.example/hook"}, "payload": {}})
