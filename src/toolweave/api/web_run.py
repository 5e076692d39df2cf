"""The run page: the whole story of one run.

Every step with every attempt (its status, error, duration and cost), the time until a step's next
attempt, live progress, the job's graph, and the outputs as a gallery with a larger view and a
"download all" archive. ``static/run.js`` follows the run's event stream and swaps in the live part
of the page (``GET /runs/{id}/live``, the same template the page renders), so there is one way to
draw a step. Other features add per-step controls in ``_step_actions.html``. A step that asks a
person shows its question and the form that answers it (``_question.html``, ``answer_step``).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from toolweave.api.auth import Caller, changing, csrf_ok, tw
from toolweave.api.problems import ApiProblem
from toolweave.api.web import (
    STATUS_LABELS,
    _caller,
    _display_names,
    _is_artifact,
    _login_redirect,
    _LoginRequired,
    _render,
    dag_layout,
    templates,
)
from toolweave.app import AnswerError, BadRequest, Conflict, NotFound, UnknownDefinition
from toolweave.model.definitions import JobDefinition
from toolweave.model.status import RunStatus, StepStatus
from toolweave.run_views import live_progress

router = APIRouter(include_in_schema=False)

_FINISHED_STEP = ("succeeded", "failed", "skipped", "cancelled")
ITEMS_SHOWN = 60
"""Items of a map step listed on the run page; the rest are counted, and listed by the API."""


def _money(value: Any) -> Decimal:
    try:
        return Decimal(str(value)) if value is not None else Decimal(0)
    except InvalidOperation:
        return Decimal(0)


def step_views(run: dict[str, Any], step_tools: dict[str, str]) -> list[dict[str, Any]]:
    """Each step of ``run`` (an ``App.get_run`` detail) with its attempts (generations, oldest
    first) and its cost summed over them."""
    attempts: dict[str, list[dict[str, Any]]] = {}
    item_costs: dict[str, Decimal] = {}
    for gen in run.get("generations") or []:
        if gen.get("itemIndex") is not None:  # an item's attempt: shown with its item, counted in the step's cost
            item_costs[gen["stepId"]] = item_costs.get(gen["stepId"], Decimal(0)) + _money(gen.get("costUsd"))
            continue
        attempts.setdefault(gen["stepId"], []).append(gen)
    views = []
    for step in run["stepStatuses"]:
        tries = sorted(attempts.get(step["stepId"], []), key=lambda g: (g["attempt"], g["requestTimestamp"] or ""))
        cost = sum((_money(g.get("costUsd")) for g in tries), item_costs.get(step["stepId"], Decimal(0)))
        live = step["status"] in (StepStatus.RUNNING.value, StepStatus.READY.value)
        views.append(
            dict(
                step,
                tool=step.get("toolId") or step_tools.get(step["stepId"]) or "",
                attempts=tries,
                costUsd=str(cost) if tries or step["stepId"] in item_costs else None,
                live=live,
                progress=live_progress(step, tries) if live else step.get("progress"),
            )
        )
    return views


def _counts(steps: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for step in steps:
        counts[step["status"]] = counts.get(step["status"], 0) + 1
    return counts


def _progress(run: dict[str, Any], steps: list[dict[str, Any]]) -> int:
    if RunStatus(run["status"]).terminal:
        return 100
    done = sum(1.0 if s["status"] in _FINISHED_STEP else (s.get("progress") or 0.0) if s["live"] else 0.0 for s in steps)
    return int(100 * done / max(1, len(steps)))


async def _run_context(request: Request, caller: Caller, run_id: str) -> dict[str, Any]:
    app = tw(request)
    run = await app.get_run(run_id, caller.scope)
    events = await app.events(run_id, caller.scope)
    job: JobDefinition | None
    try:
        job = app.job_for(run["jobDefinitionId"], run["version"])
    except UnknownDefinition:
        job = None
    dag = dag_layout(job, [s["stepId"] for s in run["stepStatuses"]])
    steps = step_views(run, {n["id"]: n["tool"] for n in dag["nodes"]})
    for step in steps:  # a map step shows its first items (the API and `runs items` page through all)
        if step.get("items"):
            step["item_page"] = await app.step_items(run_id, step["stepId"], caller.scope, limit=ITEMS_SHOWN)
    terminal = RunStatus(run["status"]).terminal
    yours = run["masterAccountId"] == caller.account_id  # the admin reads others' runs, changes only its own
    names = _display_names(request)
    outputs = run.get("finalOutputs") or {}
    return {
        "run": run, "dag": dag, "steps": {s["stepId"]: s for s in steps}, "step_list": steps,
        "counts": _counts(steps), "progress": _progress(run, steps), "terminal": terminal,
        "last_event": events[-1]["id"] if events else 0,
        "title": names.get(run["jobDefinitionId"], run["jobDefinitionId"]),
        "yours": yours,
        "retryable": yours and run["status"] in ("failed", "partially_completed", "cancelled") and not run.get("parentRunId"),
        "forkable": yours and terminal and not run.get("parentRunId"),
        "has_files": any(_is_artifact(v) or (isinstance(v, list) and any(_is_artifact(i) for i in v))
                         for v in outputs.values()),
    }


def _not_found(request: Request, caller: Caller) -> HTMLResponse:
    return _render(request, "error.html", caller, status_code=404, title="Run not found",
                   message="There is no such run among yours.")


@router.get("/runs/{run_id}")
async def run_page(request: Request, run_id: str) -> Response:
    try:
        caller = await _caller(request)
    except _LoginRequired:
        return _login_redirect(request)
    try:
        context = await _run_context(request, caller, run_id)
    except NotFound:
        return _not_found(request, caller)
    return _render(request, "run.html", caller, **context)


@router.get("/runs/{run_id}/live")
async def run_live(request: Request, run_id: str) -> Response:
    """The live part of the run page (what ``static/run.js`` swaps in as the run moves)."""
    try:
        caller = await _caller(request)
        context = await _run_context(request, caller, run_id)
    except (_LoginRequired, NotFound):
        return Response(status_code=404)
    context.update(caller=caller, csrf=caller.csrf or "", labels=STATUS_LABELS)
    response = templates.TemplateResponse(request, "_run_live.html", context)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Run-Status"] = context["run"]["status"]
    return response


def _not_yours_to_change(request: Request, caller: Caller, exc: ApiProblem) -> HTMLResponse:
    return _render(request, "error.html", caller, status_code=exc.status, title="Not yours to change",
                   message=exc.detail or "Only the run's account changes it.")


async def _posted(request: Request) -> tuple[Caller, Any] | Response:
    """The signed-in caller and a form posted from the run page with its CSRF token; else the
    response (sign in, or the page has expired)."""
    try:
        caller = await _caller(request)
    except _LoginRequired:
        return _login_redirect(request)
    form = await request.form()
    if not csrf_ok(caller, str(form.get("csrf") or "")):
        return _render(request, "error.html", caller, status_code=403, title="Please try again",
                       message="This page has expired. Reload it and try again.")
    return caller, form


def _answer_of(form: Any) -> dict[str, Any]:
    """An answer from the run page's question form (``_question.html``): the button pressed
    (``decision``, or a candidate's ``chosen``), the boxes ticked, the fields as typed."""
    body: dict[str, Any] = {}
    if form.get("decision"):
        body["decision"] = str(form.get("decision"))
    chosen = [str(v) for v in form.getlist("chosen")]
    if chosen and body.get("decision") != "reject":
        body["chosen"] = chosen
    values = {str(k)[len("value."):]: str(v) for k, v in form.multi_items() if str(k).startswith("value.")}
    if values and body.get("decision") != "reject":
        body["values"] = values
    if str(form.get("comment") or "").strip():
        body["comment"] = str(form.get("comment"))
    return body


@router.post("/runs/{run_id}/steps/{step_id}/answer")
async def answer_step(request: Request, run_id: str, step_id: str) -> Response:
    """The run page's answer to a step that asks (its buttons, thumbnails and fields)."""
    posted = await _posted(request)
    if isinstance(posted, Response):
        return posted
    caller, form = posted
    app = tw(request)
    try:
        async with changing(app, caller, run_id) as account:
            await app.answer(run_id, step_id, account, _answer_of(form))
    except NotFound:
        return _not_found(request, caller)
    except ApiProblem as exc:
        return _not_yours_to_change(request, caller, exc)
    except Conflict as exc:
        return _render(request, "error.html", caller, status_code=409, title="Not waiting any more", message=str(exc))
    except AnswerError as exc:
        return _render(request, "error.html", caller, status_code=422, title="That answer does not fit",
                       message="; ".join(f"{p.field}: {p.message}" for p in exc.problems))
    if form.get("back") == "/questions":  # from the list of questions (where an approver answers)
        return RedirectResponse("/questions", status_code=303)
    return RedirectResponse(f"/runs/{run_id}#step-{step_id}", status_code=303)


@router.get("/questions")
async def questions_page(request: Request) -> Response:
    """The questions waiting for the signed-in account: its runs', and those naming it an approver."""
    try:
        caller = await _caller(request)
    except _LoginRequired:
        return _login_redirect(request)
    questions = await tw(request).waiting_questions(caller.scope)
    return _render(request, "questions.html", caller, questions=questions)


@router.post("/runs/{run_id}/{action}")
async def run_action(request: Request, run_id: str, action: str) -> Response:
    posted = await _posted(request)
    if isinstance(posted, Response):
        return posted
    caller, form = posted
    app = tw(request)
    target = run_id
    if action not in ("cancel", "retry", "again"):
        return _render(request, "error.html", caller, status_code=404, title="Not found", message="No such action.")
    try:
        async with changing(app, caller, run_id) as account:
            if action == "cancel":
                await app.cancel(run_id, account)
            elif action == "retry":
                await app.retry(run_id, account)
            else:  # "Run again from this step": a fork, shown at once
                step = str(form.get("step") or "") or None
                target = await app.fork(run_id, account, from_step=step, origin={"platform": "web"})
    except NotFound:
        return _not_found(request, caller)
    except ApiProblem as exc:
        return _not_yours_to_change(request, caller, exc)
    except (Conflict, BadRequest) as exc:
        return _render(request, "error.html", caller, status_code=409 if isinstance(exc, Conflict) else 422,
                       title="Cannot run it again", message=str(exc))
    return RedirectResponse(f"/runs/{target}", status_code=303)
