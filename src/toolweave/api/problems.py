"""One error shape for every response: RFC 9457 problem details (``application/problem+json``).

``{"type": ..., "title": ..., "status": ..., "detail": ..., "instance": ..., "errors": [{"field", "message"}]}``
``errors`` names each bad field by its path (``inputs.width``, ``query.limit``) for input errors.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from toolweave.accounting import InsufficientCredits, OverLimit
from toolweave.app import AnswerError, BadRequest, Conflict, MediaError, NotFound, UnknownDefinition
from toolweave.inputs import InputError

log = logging.getLogger("toolweave.api")

PROBLEM_MEDIA_TYPE = "application/problem+json"
_TYPE_BASE = "urn:toolweave:problem:"

_TITLES = {
    400: "Bad request",
    401: "Not authenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    402: "Payment required",
    409: "Conflict",
    413: "Content too large",
    415: "Unsupported media type",
    422: "Invalid input",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


class FieldError(BaseModel):
    field: str
    message: str


class ProblemDetails(BaseModel):
    """An error (RFC 9457)."""

    model_config = ConfigDict(extra="allow")
    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None


class ApiProblem(Exception):
    """Raise in a route to answer with a problem document."""

    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        kind: str | None = None,
        title: str | None = None,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or title or _TITLES.get(status, "Error"))
        self.status = status
        self.detail = detail
        self.kind = kind
        self.title = title or _TITLES.get(status, "Error")
        self.errors = errors
        self.headers = headers


def problem_response(
    request: Request,
    status: int,
    detail: str | None = None,
    *,
    kind: str | None = None,
    title: str | None = None,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    """A problem document; ``extra`` adds extension members (RFC 9457 §3.2)."""
    body: dict[str, Any] = {
        "type": _TYPE_BASE + kind if kind else "about:blank",
        "title": title or _TITLES.get(status, "Error"),
        "status": status,
    }
    if detail:
        body["detail"] = _text(detail)
    body["instance"] = _text(request.url.path)
    if errors is not None:
        body["errors"] = [{"field": _text(e.field), "message": _text(e.message)} for e in errors]
    body.update(extra or {})
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _text(value: str) -> str:
    """Text that can be sent as UTF-8: a lone surrogate (echoed from a bad request) is escaped."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """``("body", "inputs", 0, "x")`` → ``inputs[0].x``; the location kind (body, query) is kept
    for parameters (``query.limit``), dropped for the body."""
    parts = list(loc)
    out = ""
    if parts and parts[0] == "body":
        parts = parts[1:]
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def _validation_message(error: dict[str, Any]) -> str:
    message = str(error.get("msg", "is invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix) :]
    return message


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route answers at this path (Starlette names only the first route's)."""
    from starlette.routing import Match

    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match is Match.NONE:
            continue
        route_methods = getattr(route, "methods", None)
        if route_methods:
            methods.update(route_methods)
    return sorted(methods)


def _nested_too_deeply(request: Request) -> JSONResponse:
    errors = [FieldError(field="body", message="is nested too deeply to read")]
    return problem_response(request, 422, "body: is nested too deeply to read", kind="invalid-request", errors=errors)


def install(api: FastAPI) -> None:
    @api.exception_handler(ApiProblem)
    async def _api_problem(request: Request, exc: ApiProblem) -> JSONResponse:
        return problem_response(
            request, exc.status, exc.detail, kind=exc.kind, title=exc.title, errors=exc.errors, headers=exc.headers
        )

    @api.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        raw = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in raw):
            return problem_response(request, 400, "the request body is not valid JSON", kind="malformed-body")
        errors = [FieldError(field=field_path(tuple(e.get("loc", ()))), message=_validation_message(dict(e))) for e in raw]
        detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
        return problem_response(request, 422, detail, kind="invalid-request", errors=errors)

    @api.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and isinstance(exc.__cause__, RecursionError):
            # a body FastAPI reads (every route's but submit's) nested past what the parser reads:
            # FastAPI says 400 "There was an error parsing the body"; submit says this
            return _nested_too_deeply(request)
        detail: str | None = exc.detail if isinstance(exc.detail, str) else None
        if detail and detail.lower() == _TITLES.get(exc.status_code, "").lower():
            detail = None
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return problem_response(request, exc.status_code, detail, headers=headers or None)

    @api.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> JSONResponse:
        return problem_response(request, 404, "no such resource (or it is not yours)", kind="not-found")

    @api.exception_handler(UnknownDefinition)
    async def _unknown(request: Request, exc: UnknownDefinition) -> JSONResponse:
        return problem_response(request, 404, str(exc), kind="unknown-definition")

    @api.exception_handler(InputError)
    async def _inputs(request: Request, exc: InputError) -> JSONResponse:
        prefix = f"{exc.root}." if exc.root else ""
        errors = [FieldError(field=f"{prefix}{p.field}", message=p.message) for p in exc.problems]
        return problem_response(request, 422, str(exc), kind="invalid-inputs", errors=errors)

    @api.exception_handler(AnswerError)
    async def _answer(request: Request, exc: AnswerError) -> JSONResponse:
        errors = [FieldError(field=p.field, message=p.message) for p in exc.problems]
        return problem_response(request, 422, str(exc), kind="invalid-answer", errors=errors)

    @api.exception_handler(MediaError)
    async def _media(request: Request, exc: MediaError) -> JSONResponse:
        return problem_response(request, 422, str(exc), kind="invalid-media")

    @api.exception_handler(BadRequest)
    async def _bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        return problem_response(request, 422, exc.message, kind="invalid-request",
                                errors=[FieldError(field=exc.field, message=exc.message)])

    @api.exception_handler(Conflict)
    async def _conflict(request: Request, exc: Conflict) -> JSONResponse:
        return problem_response(request, 409, str(exc), kind="conflict")

    @api.exception_handler(InsufficientCredits)
    async def _credits(request: Request, exc: InsufficientCredits) -> JSONResponse:
        return problem_response(request, 402, exc.message, kind="insufficient-credits",
                                extra={"needed": str(exc.needed), "available": str(exc.available)})

    @api.exception_handler(OverLimit)
    async def _over_limit(request: Request, exc: OverLimit) -> JSONResponse:
        return problem_response(request, 429, exc.message, kind="over-limit", headers={"Retry-After": str(exc.retry_after)},
                                extra={"limit": exc.limit, "allowed": exc.allowed})

    @api.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # the client went away before its body was read whole (a route reading it itself: a
        # submit, a web form): nothing was stored, nobody reads the answer, nothing to log
        return problem_response(request, 400, "the client went away before its request body was read whole",
                                kind="malformed-body")

    @api.exception_handler(RecursionError)
    async def _too_deep(request: Request, exc: RecursionError) -> JSONResponse:
        return _nested_too_deeply(request)

    @api.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(request, 500, "an unexpected error happened; it has been logged", kind="internal")
