"""The web pages: log in with an API key, the catalog, a run form built from the input schema
and the list of runs; the run page is in ``web_run``. Shared here: the templates, their filters
(times as ``<time>`` elements that ``static/common.js`` shows in the viewer's time zone, Markdown
descriptions), who is calling, and the DAG layout.

Server-rendered with Jinja2 and a little plain JavaScript. Every page fits a 390 px wide phone
screen (tests/acceptance/test_web_browser.py measures it). Pages read and write through the App
facade with the caller's account, like the API.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markdown_it import MarkdownIt
from markupsafe import Markup
from starlette.formparsers import MultiPartException

from toolweave.accounting import InsufficientCredits, Refused
from toolweave.api import submit as submit_mod
from toolweave.api.auth import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    SESSION_TTL,
    Caller,
    create_session,
    csrf_ok,
    end_session,
    key_caller,
    session_caller,
    tokens_match,
    tw,
)
from toolweave.api.problems import ApiProblem
from toolweave.api.routes_definitions import fresh_definitions
from toolweave.app import MediaError, NotFound, UnknownDefinition
from toolweave.inputs import FieldProblem, InputError
from toolweave.model.credits import parse_amount
from toolweave.model.definitions import InputParam, JobDefinition, ParamType, ToolDefinition
from toolweave.model.status import RunStatus

log = logging.getLogger("toolweave.api")
router = APIRouter(include_in_schema=False, dependencies=[Depends(fresh_definitions)])
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))

LOGIN_CSRF_TTL = 3600
"""How long a login form may stay open before it must be reloaded (seconds)."""
_ACCEPT = {ParamType.IMAGE: "image/*", ParamType.VIDEO: "video/*", ParamType.AUDIO: "audio/*"}
STATUS_LABELS = {
    "pending": "Waiting", "queued": "Queued", "ready": "Ready", "running": "Running", "waiting_retry": "Retrying",
    "waiting_input": "Needs you",
    "succeeded": "Done", "completed": "Completed", "partially_completed": "Partly completed",
    "failed": "Failed", "skipped": "Skipped", "cancelled": "Cancelled",
    "processing": "Running", "timeout": "Timed out",
}


class _LoginRequired(Exception):
    pass


async def _caller(request: Request) -> Caller:
    caller = await session_caller(tw(request), request.cookies.get(SESSION_COOKIE))
    if caller is None:
        raise _LoginRequired
    return caller


def _login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target)}", status_code=303)


def _render(request: Request, name: str, caller: Caller | None, status_code: int = 200, **context: Any) -> HTMLResponse:
    context.update(caller=caller, csrf=caller.csrf if caller else "", labels=STATUS_LABELS)
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def _safe_next(value: str | None) -> str:
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


# --- formatting helpers for templates ---------------------------------------------------------


def _when(value: str | None, style: str = "datetime") -> Markup | str:
    """A ``<time>`` element: UTC in the page as sent, the viewer's own time zone once
    ``static/common.js`` has run (``style``: ``datetime`` or ``time``)."""
    if not value:
        return "—"
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    shown = at.strftime("%H:%M:%S UTC" if style == "time" else "%Y-%m-%d %H:%M:%S UTC")
    return Markup('<time datetime="{}" data-style="{}">{}</time>').format(value, style, shown)


_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


def _markdown(text: str | None) -> Markup:
    """A definition's description (Markdown; raw HTML in it is shown as text)."""
    if not text:
        return Markup("")
    return Markup(_MARKDOWN.render(str(text)))


def _duration(ms: int | None) -> str:
    if ms is None:
        return "—"
    if ms < 1000:
        return f"{ms} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest} s"


def _cost(value: str | None) -> str:
    try:
        amount = float(value or 0)
    except ValueError:
        return str(value)
    return "free" if amount == 0 else f"${amount:.4f}"


def _is_artifact(value: Any) -> bool:
    return isinstance(value, dict) and value.get("kind") == "artifact" and isinstance(value.get("sha256"), str)


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 400 else text[:400] + "…"


templates.env.filters.update(when=_when, duration=_duration, cost=_cost, short=_short, markdown=_markdown)
templates.env.tests["artifact"] = _is_artifact


# --- the DAG ----------------------------------------------------------------------------------

NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 190, 70, 70, 22, 16


def dag_layout(job: JobDefinition | None, step_ids: list[str]) -> dict[str, Any]:
    """Columns by dependency depth; edges as curves from a step to those that depend on it."""
    deps: dict[str, list[str]] = {}
    tools: dict[str, str] = {}
    fanout: set[str] = set()
    if job is not None:
        for step in job.steps:
            deps[step.step_id] = [d for d in step.all_dependencies if d in step_ids]
            tools[step.step_id] = (step.tool_id or f"job {step.job_id}") + (" × each item" if step.map else "")
            if step.map is not None:
                fanout.add(step.step_id)
    for sid in step_ids:
        deps.setdefault(sid, [])
    depth: dict[str, int] = {}

    def depth_of(sid: str, seen: frozenset[str] = frozenset()) -> int:
        if sid in depth:
            return depth[sid]
        if sid in seen:
            return 0
        value = 1 + max((depth_of(d, seen | {sid}) for d in deps[sid]), default=-1)
        depth[sid] = value
        return value

    columns: dict[int, list[str]] = {}
    for sid in step_ids:
        columns.setdefault(depth_of(sid), []).append(sid)
    tallest = max((len(c) for c in columns.values()), default=1)
    height = PAD * 2 + tallest * NODE_H + (tallest - 1) * GAP_Y
    nodes: dict[str, dict[str, Any]] = {}
    for col, members in columns.items():
        block = len(members) * NODE_H + (len(members) - 1) * GAP_Y
        top = (height - block) / 2
        for row, sid in enumerate(members):
            nodes[sid] = {"id": sid, "tool": tools.get(sid, ""), "fanout": sid in fanout, "x": PAD + col * (NODE_W + GAP_X),
                          "y": top + row * (NODE_H + GAP_Y)}
    edges = []
    for sid, ds in deps.items():
        for d in ds:
            a, b = nodes[d], nodes[sid]
            x1, y1 = a["x"] + NODE_W, a["y"] + NODE_H / 2
            x2, y2 = b["x"], b["y"] + NODE_H / 2
            mid = (x1 + x2) / 2
            edges.append({"from": d, "to": sid, "d": f"M{x1},{y1} C{mid},{y1} {mid},{y2} {x2 - 6},{y2}"})
    width = PAD * 2 + max(len(columns), 1) * NODE_W + (max(len(columns), 1) - 1) * GAP_X
    return {"nodes": [nodes[s] for s in step_ids], "edges": edges, "width": width, "height": height,
            "w": NODE_W, "h": NODE_H}


# --- form fields ------------------------------------------------------------------------------


def _field(param: InputParam) -> dict[str, Any]:
    kind = param.type
    widget = "text"
    if kind is ParamType.TEXT or kind is ParamType.JSON:
        widget = "textarea"
    elif kind in (ParamType.INTEGER, ParamType.NUMBER, ParamType.SEED):
        widget = "number"
    elif kind is ParamType.BOOLEAN:
        widget = "checkbox"
    elif kind is ParamType.ENUM or param.enum:
        widget = "select"
    elif kind.is_media:
        widget = "media"
    default = param.default
    if kind is ParamType.JSON and default is not None and not isinstance(default, str):
        default = json.dumps(default)
    step = "1" if kind in (ParamType.INTEGER, ParamType.SEED) else "any"
    return {
        "name": param.name,
        "label": param.display_name or param.name.replace("_", " ").capitalize(),
        "type": kind.value,
        "widget": widget,
        "required": param.required and param.default is None and kind is not ParamType.SEED,
        "default": default,
        "description": param.description + (" Leave empty for a random seed." if kind is ParamType.SEED else ""),
        "choices": list(param.enum or []),
        "min": None if param.minimum is None or not math.isfinite(param.minimum) else param.minimum,
        "max": None if param.maximum is None or not math.isfinite(param.maximum) else param.maximum,
        "step": step,
        "accept": _ACCEPT.get(kind, ""),
        "advanced": param.advanced,
        "visible_if": param.visible_if.model_dump() if param.visible_if is not None else None,
    }


def _fields(definition: ToolDefinition | JobDefinition) -> list[dict[str, Any]]:
    params = sorted(definition.input_schema, key=lambda p: (p.order if p.order is not None else 10_000))
    return [_field(p) for p in params]


def _definition(request: Request, target_id: str, version: str | None = None) -> ToolDefinition | JobDefinition:
    try:
        return tw(request).definition(target_id, version or None)
    except UnknownDefinition:
        raise NotFound(target_id) from None


def _prefill(definition: ToolDefinition | JobDefinition, inputs: dict[str, Any]) -> dict[str, Any]:
    """Form values from an earlier run's inputs: text as typed, json as JSON, an artifact as a
    reference the form sends back (``<name>__artifact``), so the same file is used again."""
    values: dict[str, Any] = {}
    params = {p.name: p for p in definition.input_schema}
    for name, value in inputs.items():
        param = params.get(name)
        if param is None or value is None:
            continue
        if param.type.is_media:
            if _is_artifact(value):
                values[f"{name}__artifact"] = value
            elif isinstance(value, str):
                values[f"{name}__url"] = value
        elif param.type is ParamType.JSON:
            values[name] = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        elif param.type is ParamType.BOOLEAN:
            values[name] = "true" if value else "false"
        else:
            values[name] = str(value)
    return values


# --- routes -----------------------------------------------------------------------------------


def _login_form(request: Request, target: str, error: str | None, status_code: int = 200) -> Response:
    """The login form with a fresh CSRF token, also set as a cookie that only this form's POST sends."""
    token = secrets.token_urlsafe(24)
    response = _render(request, "login.html", None, status_code=status_code, next=target, error=error, login_csrf=token)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, max_age=LOGIN_CSRF_TTL, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/login")
    return response


@router.get("/login")
async def login_page(request: Request, next: str | None = None) -> Response:
    return _login_form(request, _safe_next(next), None)


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form()
    key = str(form.get("api_key") or "").strip()
    target = _safe_next(str(form.get("next") or "/"))
    if not tokens_match(request.cookies.get(LOGIN_CSRF_COOKIE), str(form.get("csrf") or "")):
        return _login_form(request, target, "This sign-in form has expired. Please sign in again.", 403)
    caller = await key_caller(tw(request), key) if key else None
    if caller is None:
        return _login_form(request, target, "That key is not valid. Check it, or ask for a new one (toolweave keys create).", 401)
    token, _csrf = await create_session(tw(request), caller)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(SESSION_COOKIE, token, max_age=int(SESSION_TTL), httponly=True, samesite="lax",
                        secure=request.url.scheme == "https", path="/")
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        caller = await session_caller(tw(request), token)
        form = await request.form()
        if caller is not None and csrf_ok(caller, str(form.get("csrf") or "")):
            await end_session(tw(request), token)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/")
async def catalog(request: Request) -> Response:
    try:
        caller = await _caller(request)
    except _LoginRequired:
        return _login_redirect(request)
    app = tw(request)
    jobs = app.list_jobs()
    tools = [t for t in app.list_tools() if not t.tool_id.startswith("test.")]
    return _render(request, "catalog.html", caller, jobs=jobs, tools=tools)


@router.get("/new/{target_id}")
async def run_form(request: Request, target_id: str, version: str | None = None, again: str | None = None) -> Response:
    """The run form; ``version`` picks a registered version, ``again`` (a run id of the caller's)
    prefills the form with that run's inputs and version."""
    try:
        caller = await _caller(request)
        values: dict[str, Any] = {}
        origin: dict[str, Any] | None = None
        if again:
            origin = await tw(request).get_run(again, caller.scope)
            version = version or origin["version"]
        definition = _definition(request, target_id, version)
        if origin is not None:
            values = _prefill(definition, origin.get("jobInputs") or {})
    except _LoginRequired:
        return _login_redirect(request)
    except NotFound:
        return _render(request, "error.html", await session_caller(tw(request), request.cookies.get(SESSION_COOKIE)),
                       status_code=404, title="Not found",
                       message=f"There is no tool or job named “{target_id}”" + (f" in version {version}" if version else "")
                       + (" or no such run among yours" if again else "") + ".")
    return await _form(request, caller, definition, values, [], again=origin)


async def _estimate(request: Request, caller: Caller, definition: ToolDefinition | JobDefinition,
                    values: dict[str, Any]) -> dict[str, Any] | None:
    """The run's estimate with the form's values (what is missing or wrong is left out), or None
    when it cannot be made."""
    target_id = definition.job_id if isinstance(definition, JobDefinition) else definition.tool_id
    inputs = {k: v for k, v in values.items() if isinstance(v, str | int | float | bool) and not k.endswith("__url")}
    try:
        found: dict[str, Any] = await tw(request).estimate(target_id, inputs, account_id=caller.account_id,
                                                          version=definition.version, strict=False)
    except Exception:  # an estimate is a courtesy: the form works without it
        log.warning("no estimate for the form of %s", target_id, exc_info=True)
        return None
    return found


async def _form(request: Request, caller: Caller, definition: ToolDefinition | JobDefinition, values: dict[str, Any],
                errors: list[tuple[str, str]], status_code: int = 200, again: dict[str, Any] | None = None) -> HTMLResponse:
    is_job = isinstance(definition, JobDefinition)
    dag = dag_layout(definition, [s.step_id for s in definition.steps]) if isinstance(definition, JobDefinition) else None
    target_id = definition.job_id if isinstance(definition, JobDefinition) else definition.tool_id
    versions = tw(request).registry.versions(target_id)
    return _render(
        request, "form.html", caller, status_code=status_code, definition=definition, is_job=is_job,
        target_id=target_id, fields=_fields(definition), values=values, errors=errors,
        error_fields={f for f, _ in errors}, dag=dag, versions=versions, latest=versions[-1] if versions else None,
        again=again, estimate=await _estimate(request, caller, definition, values),
    )


@router.post("/new/{target_id}")
async def submit_form(request: Request, target_id: str) -> Response:
    try:
        caller = await _caller(request)
        definition = _definition(request, target_id)
    except _LoginRequired:
        return _login_redirect(request)
    except NotFound:
        return _render(request, "error.html", None, status_code=404, title="Not found",
                       message=f"There is no tool or job named “{target_id}”.")
    app = tw(request)
    try:
        form = await request.form(max_files=32, max_fields=200)
    except (MultiPartException, ValueError, KeyError, AssertionError) as exc:
        return await _form(request, caller, definition, {}, [("form", f"the form could not be read: {exc}")], 400)
    if not csrf_ok(caller, str(form.get("csrf") or "")):
        return _render(request, "error.html", caller, status_code=403, title="Please try again",
                       message="This form has expired. Reload the page and submit it again.")
    version = form.get("version")
    if isinstance(version, str) and version and version != definition.version:
        try:
            definition = _definition(request, target_id, version)
        except NotFound:
            return await _form(request, caller, definition, {}, [("version", f"there is no version {version!r}")], 422)
    values: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str)}
    for key, value in values.items():
        if key.endswith("__artifact") and value:
            values[key] = {"kind": "artifact", "sha256": value}
    try:
        ceiling = _ceiling(form.get("costCeiling"))
        inputs = await submit_mod.form_inputs(form, definition, max_bytes=app.settings.media_max_bytes)
        run_id = await app.submit(target_id, inputs, account_id=caller.account_id, origin={"platform": "web"},
                                  coerce_text=True, allow_local_paths=False, version=definition.version,
                                  cost_ceiling=ceiling)
    except Refused as exc:
        status = 402 if isinstance(exc, InsufficientCredits) else 429
        return await _form(request, caller, definition, values, [("form", exc.message)], status)
    except InputError as exc:
        return await _form(request, caller, definition, values, [(p.field, p.message) for p in exc.problems], 422)
    except (MediaError, UnknownDefinition) as exc:
        return await _form(request, caller, definition, values, [("form", str(exc))], 422)
    except ApiProblem as exc:
        return await _form(request, caller, definition, values, [("form", exc.detail or exc.title)], exc.status)
    return RedirectResponse(f"/runs/{run_id}", status_code=303)


def _ceiling(value: Any) -> Decimal | None:
    """The form's cost ceiling (empty: none); a bad one is an input error naming the field."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return parse_amount(value, what="the cost ceiling")
    except ValueError as exc:
        raise InputError([FieldProblem("costCeiling", str(exc))], root="") from None


@router.get("/runs")
async def runs_page(request: Request, status: str | None = None, cursor: str | None = None) -> Response:
    try:
        caller = await _caller(request)
    except _LoginRequired:
        return _login_redirect(request)
    statuses = [status] if status in {s.value for s in RunStatus} else None
    try:
        page = await tw(request).list_runs(caller.scope, status=statuses, cursor=cursor or None, limit=25)
    except ValueError:
        page = await tw(request).list_runs(caller.scope, status=statuses, limit=25)
    names = _display_names(request)
    return _render(request, "runs.html", caller, runs=page.items, next_cursor=page.next_cursor,
                   status=statuses[0] if statuses else None, names=names,
                   statuses=[s.value for s in RunStatus])


def _display_names(request: Request) -> dict[str, str]:
    app = tw(request)
    names = {t.tool_id: t.display_name or t.tool_id for t in app.list_tools(include_hidden=True)}
    names.update({j.job_id: j.display_name or j.job_id for j in app.list_jobs(include_hidden=True)})
    return names


@router.get("/status")
async def status_page(request: Request) -> Response:
    """Queue and workers: who is working and what waits for them."""
    try:
        caller = await _caller(request)
    except _LoginRequired:
        return _login_redirect(request)
    return _render(request, "status.html", caller, status=await tw(request).queue_status(caller.scope))
