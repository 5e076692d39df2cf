"""The two requests a busy server takes most of, answered without FastAPI's routing and dependency
machinery: a backend's webhook (``POST /webhooks/{service}/{generation_id}?token=…``) and a JSON
submit with an API key (``POST /api/v1/runs``, ``Authorization: Bearer …``).

For such small requests the framework cost more CPU than the work (``bench/ingress.py``: matching
the path against every route, solving the dependencies, validating the path and query, the
response model). ``LeanRoutes`` sits inside the body limit and the security headers, in front of
the routes: it answers these two requests by calling what their routes call (the same checks,
``routes_system.receive_webhook``, ``routes_runs.submit_and_show``), and its errors go through
the application's own exception handlers, so the answers are the routes' answers, problem
documents included. Anything else about such a request — a path or query parameter the routes
would refuse, a second ``token``, an over-long ``Idempotency-Key``, a session cookie instead of a
key, a form, another content type — is passed on to the routes, which answer it as always.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from pydantic import TypeAdapter
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from toolweave.api import submit as submit_mod
from toolweave.api.auth import UNAUTHENTICATED_HEADERS, key_caller, remembered_caller
from toolweave.api.problems import ApiProblem
from toolweave.api.routes_runs import submit_and_show
from toolweave.api.routes_system import receive_webhook
from toolweave.api.schemas import RunDetail
from toolweave.submitting import KeyRevoked

_SERVICE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_GENERATION = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{0,128}")
_PLAIN_QUERY = re.compile(r"[A-Za-z0-9_-]*")
"""A query string's rest that ``parse_qsl`` would read as it is (no ``&``, ``;``, ``=``, ``%`` or ``+``)."""
_WEBHOOKS = "/webhooks/"
_RUNS = "/api/v1/runs"
_RUN_DETAIL: TypeAdapter[RunDetail] = TypeAdapter(RunDetail)
_JSON = b"application/json"


class LeanRoutes:
    """ASGI middleware (see the module's text); ``api`` is the FastAPI application, for its state
    and exception handlers."""

    def __init__(self, app: ASGIApp, *, api: Any) -> None:
        self.app = app
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            path: str = scope["path"]
            if path.startswith(_WEBHOOKS):
                webhook = _webhook_params(path, scope["query_string"])
                if webhook is not None:
                    await self._answer(scope, receive, send, self._webhook(scope, receive, *webhook))
                    return
            elif path == _RUNS:
                submit = _submit_params(scope["headers"])
                if submit is not None:
                    await self._answer(scope, receive, send, self._submit(receive, *submit))
                    return
        await self.app(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive, send: Send, handling: Any) -> None:
        try:
            response = await handling
        except _Disconnected:
            return
        except Exception as exc:
            response = await self._problem(scope, receive, exc)
        await response(scope, receive, send)

    async def _problem(self, scope: Scope, receive: Receive, exc: Exception) -> Response:
        """What the application's exception handlers answer to ``exc`` (as a route raising it gets)."""
        handlers = self.api.exception_handlers
        for kind in type(exc).__mro__:
            handler = handlers.get(kind)
            if handler is not None:
                response: Response = await handler(Request(scope, receive), exc)
                return response
        raise exc

    async def _webhook(self, scope: Scope, receive: Receive, service: str, generation_id: str, token: str) -> Response:
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
        body = await _read_body(receive)
        state = self.api.state
        result = await receive_webhook(state.toolweave, state.metrics, service, generation_id, token, headers, body)
        return Response(b'{"applied":true}' if result["applied"] else b'{"applied":false}', media_type="application/json")

    async def _submit(self, receive: Receive, credentials: str, idempotency_key: str | None) -> Response:
        app = self.api.state.toolweave
        found = await remembered_caller(app, credentials)
        if found is None:
            raise ApiProblem(401, "the API key is unknown or revoked", kind="unauthenticated", headers=UNAUTHENTICATED_HEADERS)
        caller, remembered = found
        try:
            body = submit_mod.parse_submit(submit_mod.read_json(await _read_body(receive), app.settings.input_max_depth))
            definition = submit_mod.target_of(app, body)
            run, created = await submit_and_show(
                app, caller, body, body.inputs, definition.version, idempotency_key,
                key_id=caller.key_id if remembered else None,
            )
        except _Disconnected:
            raise
        except Exception as exc:
            # a key remembered by this process may have been revoked since: answer as if it had
            # been looked up now (before the body was read), as the route does
            if remembered and (isinstance(exc, KeyRevoked) or await key_caller(app, credentials) is None):
                app.forget_key(credentials)
                raise ApiProblem(401, "the API key is unknown or revoked", kind="unauthenticated",
                                 headers=UNAUTHENTICATED_HEADERS) from None
            raise
        content = _RUN_DETAIL.dump_json(_RUN_DETAIL.validate_python(run), by_alias=True)
        return Response(content, status_code=201 if created else 200, media_type="application/json",
                        headers={"Location": f"{_RUNS}/{run['jobRunId']}"})


class _Disconnected(Exception):
    """The client went away before its body was read whole: nothing to answer."""


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise _Disconnected
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _webhook_params(path: str, query_string: bytes) -> tuple[str, str, str] | None:
    """(service, generation id, token) when the route would take them as they are; else None."""
    service, slash, generation_id = path[len(_WEBHOOKS):].partition("/")
    if not slash or not _SERVICE.fullmatch(service) or not _GENERATION.fullmatch(generation_id):
        return None
    query = query_string.decode("latin-1")
    if query.startswith("token=") and _PLAIN_QUERY.fullmatch(query, 6):  # one token, nothing to unquote
        tokens = [query[6:]]
    else:
        tokens = [value for name, value in parse_qsl(query, keep_blank_values=True) if name == "token"]
    if len(tokens) != 1 or not _TOKEN.fullmatch(tokens[0]):
        return None
    return service, generation_id, tokens[0]


def _submit_params(headers: list[tuple[bytes, bytes]]) -> tuple[str, str | None] | None:
    """(API key, Idempotency-Key) of a JSON submit with a bearer key that the route would read the
    same way; else None (a form, a session, an odd header: the route answers)."""
    authorization = content_type = key = None
    for name, value in headers:
        if name == b"authorization":
            authorization = value if authorization is None else authorization
        elif name == b"content-type":
            content_type = value if content_type is None else content_type
        elif name == b"idempotency-key":
            key = value if key is None else key
    if authorization is None or content_type is None:
        return None
    media_type = content_type.split(b";", 1)[0].strip().lower()
    if media_type != _JSON and not media_type.endswith(b"+json"):
        return None
    scheme, _, credentials = authorization.decode("latin-1").partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials:
        return None
    idempotency_key = key.decode("latin-1") if key is not None else None
    if idempotency_key is not None and len(idempotency_key) > 200:
        return None
    return credentials, idempotency_key or None
