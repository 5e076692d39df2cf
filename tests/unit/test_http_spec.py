"""The http service's pure parts: call descriptions and their checks, the service catalog, paths,
event streams, error classification, costs."""

from __future__ import annotations

import email.utils
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from toolweave.model.costing import input_cost, table_price, usage_cost
from toolweave.model.definitions import CostingModel, PriceTable, ToolDefinition
from toolweave.model.paths import PathError
from toolweave.services.base import ServiceError
from toolweave.services.catalog import ServiceCatalog
from toolweave.services.http.call import Endpoint, classify, read_event_stream, select
from toolweave.services.http.spec import ErrorSpec, check_call
from toolweave.services.plugins import Option, resolve_options
from toolweave.settings import ComfyServer, Settings


def tool(http: Any, **extra: Any) -> ToolDefinition:
    return ToolDefinition.model_validate({
        "toolId": "t", "service": "http",
        "inputSchema": {"prompt": {"type": "text", "required": True}, "image": {"type": "image"},
                        "n": {"type": "integer"}},
        "outputSchema": {"image": {"type": "image"}, "text": {"type": "text"}},
        "metadata": {"http": http} if http is not None else {},
        **extra,
    })


def problems(http: Any, *, base: bool = True) -> list[str]:
    return [f"{path}: {message}" for path, message in check_call(tool(http), has_base_url=base)]


def test_a_good_call_has_no_problems() -> None:
    assert problems({
        "request": {"path": "/gen", "json": {"prompt": "{{ prompt }}, oil", "n": {"$input": "n"},
                                              "image": {"$input": "image", "as": "data_uri"}}},
        "outputs": {"image": {"path": "data[*].url"}, "text": {"path": "caption", "optional": True}},
        "async": {"id": "id", "poll": {"method": "GET", "path": "/p/{{ id }}"},
                  "status": {"succeeded": ["done"], "running": ["busy"]},
                  "webhook": {"body": {"hook": "{{ webhook_url }}"}}},
    }) == []


@pytest.mark.parametrize(("http", "expected"), [
    (None, "metadata.http: metadata.http is required: the request this tool sends (see docs/http-services.md)"),
    ({"request": {"path": "/a", "url": "http://x"}},
     "metadata.http.request: give exactly one of path (under the service's base_url) or url"),
    ({"request": {"method": "GET", "path": "/a", "json": {}}}, "metadata.http.request: a GET request has no body"),
    ({"request": {"path": "/a", "json": {"x": {"$input": "nope"}}}},
     "metadata.http.request.json.x: $input 'nope' is not an input of this tool (inputs: prompt, image, n)"),
    ({"request": {"path": "/a", "json": {"x": "{{ promt }}"}}},
     "metadata.http.request.json.x: the template reads 'promt', which it is not given; it may read "
     "generation_id, image, inputs, n, prompt"),
    ({"request": {"path": "/a", "json": {"x": "{{ prompt"}}},
     "metadata.http.request.json.x: template '{{ prompt' does not parse: unexpected end of template, expected "
     "'end of print statement'. (line 1)"),
    ({"request": {"path": "/a", "json": {"x": {"$input": "image", "as": "file"}}}},
     "metadata.http.request.json.x: media 'as: file' is a multipart file part; use multipart, or url/data_uri/base64"),
    ({"request": {"path": "/a", "json": {"x": {"$input": "prompt", "as": "url"}}}},
     "metadata.http.request.json.x: 'as' applies to media inputs; 'prompt' is text"),
    ({"request": {"path": "/a"}, "outputs": {"nope": {"path": "a"}}},
     "metadata.http.outputs.nope: 'nope' is not an output of this tool (outputs: image, text)"),
    ({"request": {"path": "/a"}, "outputs": {"text": {"path": "a..b"}}},
     "metadata.http.outputs.text.path: path 'a..b' is malformed at character 2; write it like a.b[0]"),
    ({"request": {"path": "/a"}, "async": {"id": "id", "poll": {"method": "GET", "path": "/p"}}},
     "metadata.http.async: status is required: where the status is in a poll response, and which values mean what"),
    ({"request": {"path": "/a", "json": {}}, "async": {
        "id": "id", "poll": {"method": "GET", "path": "/p/{{ webhook_url }}"},
        "status": {"succeeded": ["ok"], "failed": ["ok"]}}},
     "metadata.http.async.status: status 'ok' is both succeeded and failed"),
    ({"request": {"path": "/a"}, "async": {"id": "id", "poll": {"method": "GET", "path": "/p"},
                                           "status": {"succeeded": ["ok"]}, "webhook": {"body": {"w": 1}}}},
     "metadata.http.async.webhook.body: the request has no json body to add to"),
    ({"request": {"path": "/a"}, "bogus": 1}, "metadata.http.bogus: Extra inputs are not permitted"),
])
def test_each_problem_is_named(http: Any, expected: str) -> None:
    assert expected in problems(http)


def test_a_path_needs_a_base_url() -> None:
    assert problems({"request": {"path": "/a"}}, base=False) == [
        "metadata.http.request.path: the service has no base_url, so the request needs a full url"
    ]


def test_follow_up_templates_see_the_run_id_but_the_submit_does_not() -> None:
    found = problems({"request": {"path": "/a/{{ id }}", "json": {}}, "async": {
        "id": "id", "poll": {"method": "GET", "path": "/p/{{ id }}"}, "status": {"succeeded": ["ok"]}}})
    assert found == ["metadata.http.request.path: the template reads 'id', which it is not given; it may read "
                     "generation_id, image, inputs, n, prompt"]


# --- the catalog ---------------------------------------------------------------------------------------


def catalog(services: dict[str, Any] | None = None, env: dict[str, str] | None = None, **settings: Any) -> ServiceCatalog:
    return ServiceCatalog(Settings(home=Path("/nonexistent"), services=services or {}, **settings),
                          env=env or {}, plugins=[])


def test_unknown_and_unconfigured_services_are_named() -> None:
    cat = catalog()
    assert cat.check_tool(tool(None, service="string")) == [
        ("service", "no service named 'string' is known here (services: builtin, comfydeploy, comfyui, fal, http, "
                    "huggingface, openai, replicate; `toolweave services list` shows them)")]
    assert cat.check_tool(tool(None, service="openia"))[0][1].startswith(
        "no service named 'openia' is known here; did you mean 'openai'?")
    assert cat.check_tool(tool({"request": {"path": "/x"}}, service="replicate")) == [
        ("service", "service 'replicate' is not configured: environment variable REPLICATE_API_TOKEN is not set")]


def test_a_configured_instance_expands_its_credentials_and_keeps_them_secret() -> None:
    cat = catalog({"myapi": {"kind": "http", "base_url": "https://api.example.com",
                             "headers": {"Authorization": "Bearer ${MY_KEY}", "X-Region": "${REGION:-eu}"}}},
                  env={"MY_KEY": "k-123456"})
    instance = cat.get("myapi")
    assert instance is not None and instance.configured
    assert instance.options["headers"] == {"Authorization": "Bearer k-123456", "X-Region": "eu"}
    assert instance.secrets == frozenset({"k-123456"})
    assert "k-123456" not in repr(cat.rows())


def test_instance_configuration_problems_are_one_sentence() -> None:
    cat = catalog({"a": {"base_url": "x"}, "b": {"kind": "nope"}, "c": {"kind": "http", "timeout_seconds": "soon",
                                                                        "colour": 1},
                   "comfyui": {"kind": "http"}, "openai": {"kind": "echo"}})
    assert cat.get("a").problem == '[toolweave.services.a] needs kind = "http" (or a plugin\'s kind)'  # type: ignore[union-attr]
    assert cat.get("b").problem == "no service kind 'nope' is installed (kinds: http)"  # type: ignore[union-attr]
    assert cat.get("c").problem == (  # type: ignore[union-attr]
        "unknown option colour (options: base_url, concurrency, headers, query, timeout_seconds); "
        "option 'timeout_seconds' must be float, not 'soon'")
    assert cat.get("comfyui").problem.startswith("[toolweave.services.comfyui] is not read")  # type: ignore[union-attr]
    assert cat.get("openai").problem == "'openai' is an http service; its kind cannot change"  # type: ignore[union-attr]


def test_a_plugin_cannot_take_a_core_name_and_a_broken_one_is_listed() -> None:
    cat = ServiceCatalog(Settings(home=Path("/x")), env={},
                         plugins=[("http", "evil", object()), ("x", "dist-x", ImportError("no"))])
    assert cat.kinds["http"].__class__.__name__ == "HttpKind"
    assert cat.get("x").problem == "plugin dist-x could not be loaded: ImportError: no"  # type: ignore[union-attr]


def test_input_priced_costs_are_for_http_services() -> None:
    priced = tool(None, service="comfyui", costingModel={"rateSource": "table", "priceTable": {"by": ["n"], "prices": {}}})
    cat = catalog(comfyui_servers=[ComfyServer("local", "http://x")])
    assert ("costingModel.rateSource", "rateSource 'table' is computed by http services; 'comfyui' is a comfyui service") \
        in cat.check_tool(priced)


def test_settings_read_services_from_the_environment() -> None:
    settings = Settings.load(env={"TOOLWEAVE_HOME": "/tmp/x", "TOOLWEAVE_SERVICES__OPENAI__BASE_URL": "http://l/v1",
                                  "TOOLWEAVE_SERVICES__OPENAI__HEADERS": '{"Authorization": "Bearer ${K}"}'})
    assert settings.services == {"openai": {"base_url": "http://l/v1", "headers": {"Authorization": "Bearer ${K}"}}}
    with pytest.raises(ValueError, match="TOOLWEAVE_SERVICES__OPENAI: write it as"):
        Settings.load(env={"TOOLWEAVE_HOME": "/tmp/x", "TOOLWEAVE_SERVICES__OPENAI": "x"})


def test_resolve_options_coerces_declared_types() -> None:
    options, _secrets, problem = resolve_options(
        {"n": Option(int, default=2), "on": Option(bool), "names": Option(list)},
        {"n": "5", "on": "yes", "names": "a, b"}, {})
    assert (options, problem) == ({"n": 5, "on": True, "names": ["a", "b"]}, None)


# --- reading answers --------------------------------------------------------------------------------


def test_select_with_a_star() -> None:
    body = {"data": [{"url": "a"}, {"url": "b"}], "x": [[1, 2], [3]]}
    assert select(body, "data[*].url") == ["a", "b"]
    assert select(body, "x[*][0]") == [1, 3]
    assert select(body, None) is body
    with pytest.raises(PathError):
        select(body, "data[*].nope")


def test_event_streams() -> None:
    stream = 'event: generating\ndata: ["a"]\n\nevent: generating\ndata: ["a b"]\n\nevent: complete\ndata: ["a b c"]\n\n'
    assert read_event_stream(stream, "x") == ["a b c"]
    with pytest.raises(ServiceError) as caught:
        read_event_stream('event: error\ndata: "out of memory"\n\n', "the Space")
    assert caught.value.message == 'the Space reported an error: "out of memory"' and not caught.value.retryable
    with pytest.raises(ServiceError) as caught:
        read_event_stream("event: heartbeat\ndata: null\n\n", "the Space")
    assert caught.value.retryable and caught.value.code == "bad_response"


def answer(status: int, body: Any = None, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


def test_classify() -> None:
    endpoint = Endpoint("svc", "https://x", secrets=frozenset({"sk-secret-1"}))
    spec = ErrorSpec()
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    limited = classify(answer(429, {"error": {"message": "slow down"}}, **{"Retry-After": when}), None, spec, endpoint, "x")
    assert limited.retryable and limited.code == "rate_limited" and 100 < (limited.retry_after or 0) <= 121
    loading = classify(answer(503, {"error": "loading", "estimated_time": 12.5}),
                       {"error": "loading", "estimated_time": 12.5}, spec, endpoint, "x")
    assert (loading.code, loading.retry_after) == ("server_error", 12.5)
    body = {"detail": [{"loc": ["body", "prompt"], "msg": "field required"}]}
    refused = classify(answer(422, body), body, spec, endpoint, "fal")
    assert refused.message == "fal refused the request (HTTP 422): prompt: field required" and not refused.retryable
    moderated = {"error": {"code": "image_generation_user_error", "message": "no"}}
    assert classify(answer(400, moderated), moderated, spec, endpoint, "x").code == "moderation"
    echoed = {"error": {"message": "bad key sk-secret-1"}}
    assert "sk-secret-1" not in classify(answer(401, echoed), echoed, spec, endpoint, "x").message


# --- costs ---------------------------------------------------------------------------------------------


def test_price_tables() -> None:
    table = PriceTable(by=["model", "size"], prices={"a": {"1": 0.5, "2": 1}}, default=Decimal("9"), multiply_by="n")
    assert table_price(table, {"model": "a", "size": "2", "n": 3}) == Decimal(3)
    assert table_price(table, {"model": "a", "size": "3"}) == Decimal(9)
    assert table_price(table.model_copy(update={"default": None}), {"model": "b", "size": "1"}) is None
    model = CostingModel.model_validate({"rateSource": "table", "priceTable": {"by": ["size"], "prices": {"s": 0.04}}})
    assert input_cost(model, {"size": "s"}) == Decimal("0.04")


def test_usage_costs() -> None:
    model = CostingModel.model_validate({"rateSource": "usage", "usage": [
        {"path": "usage.in", "price": 2, "per": 1000}, {"path": "usage.out", "price": 1}]})
    assert usage_cost(model, {"usage": {"in": 500, "out": 3}}) == Decimal(4)
    assert usage_cost(model, {"nothing": 1}) is None
    with pytest.raises(ValueError, match="a usage costing model needs usage"):
        CostingModel.model_validate({"rateSource": "usage"})
