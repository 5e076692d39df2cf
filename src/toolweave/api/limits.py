"""Limits on requests: bodies (413 before they are read whole), query parameters given twice, and NUL
characters in path and query parameters.

Multipart bodies (file uploads) may be up to ``request_max_bytes``; every other body (JSON, form
fields, webhooks) up to ``request_max_json_bytes``. A declared ``Content-Length`` over the limit
is answered at once, without reading the body (the connection is then closed); a body sent in
chunks is cut off as soon as it passes the limit (``BodyTooLarge``, answered by the exception
handlers like any ``HTTPException``).
"""

from __future__ import annotations

from typing import Any, get_args, get_origin

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from toolweave.api.problems import ApiProblem, FieldError, problem_response


class BodyTooLarge(HTTPException):
    """A request body past its limit (raised from ``receive`` while a route reads it)."""

    def __init__(self, limit: int, setting: str) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes (setting {setting})")


class BodyLimit:
    def __init__(self, app: ASGIApp, *, json_bytes: int, any_bytes: int) -> None:
        self.app = app
        self.json_bytes = json_bytes
        self.any_bytes = any_bytes

    def _limit(self, scope: Scope) -> tuple[int, str]:
        content_type = b""
        for name, value in scope.get("headers", ()):
            if name == b"content-type":
                content_type = value.split(b";", 1)[0].strip().lower()
        if content_type == b"multipart/form-data":
            return self.any_bytes, "request_max_bytes"
        return self.json_bytes, "request_max_json_bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self._limit(scope)
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0:
                    await problem_response(Request(scope), 400, "the Content-Length header is not a number",
                                           kind="malformed-body")(scope, receive, send)
                    return
                if declared > limit:
                    await problem_response(Request(scope), 413, str(BodyTooLarge(limit, setting).detail),
                                           kind="too-large", headers={"Connection": "close"})(scope, receive, send)
                    return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message: Message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit, setting)
            return message

        await self.app(scope, limited, send)


NUL_MESSAGE = "holds a NUL character (U+0000), which no id or name holds"


async def checked_parameters(request: Request) -> None:
    """A dependency of every route: a query parameter that takes one value given more than once is
    a 422 (instead of the last one silently winning); so is a path or query parameter holding a NUL
    character (``%00``), which PostgreSQL cannot even compare with stored text (a 500 there)."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    if dependant is None:
        return
    for param in dependant.query_params:
        name = param.alias
        given = request.query_params.getlist(name)
        if len(given) > 1 and not _takes_many(param.field_info.annotation):
            _refuse(f"query.{name}", "is given more than once; it takes one value")
        if any("\x00" in value for value in given):
            _refuse(f"query.{name}", NUL_MESSAGE)
    for param in dependant.path_params:
        value = request.path_params.get(param.alias)
        if isinstance(value, str) and "\x00" in value:
            _refuse(f"path.{param.alias}", NUL_MESSAGE)


def _refuse(field: str, message: str) -> None:
    raise ApiProblem(422, f"{field}: {message}", kind="invalid-request", errors=[FieldError(field=field, message=message)])


def _takes_many(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin in (list, tuple, set, frozenset):
        return True
    return any(_takes_many(arg) for arg in get_args(annotation)) if origin is not None else False
