"""Tools and jobs: list, show (with the JSON Schema of their inputs), validate and register jobs."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request

from toolweave.api import submit as submit_mod
from toolweave.api.auth import Caller, require_admin, require_caller, tw
from toolweave.api.problems import ApiProblem
from toolweave.api.schemas import (
    JobDetail,
    JobSummary,
    ToolDetail,
    ToolSummary,
    ValidationResult,
    VersionInfo,
    job_summary,
    tool_summary,
    version_info,
)
from toolweave.app import UnknownDefinition
from toolweave.model.definitions import JobDefinition, ToolDefinition
from toolweave.registry import Problem
from toolweave.registry.expressions import TOO_COSTLY


async def fresh_definitions(request: Request) -> None:
    """Take in jobs another process registered before answering with definitions."""
    await tw(request).sync_definitions()


router = APIRouter(prefix="/api/v1", dependencies=[Depends(require_caller), Depends(fresh_definitions)])

DEFINITION_MAX_DEPTH = 64
"""How deeply a posted definition may nest (lists and objects); deeper is a 422."""

_Version = Annotated[str | None, Query(min_length=1, max_length=64, description="A version (default: the latest)")]

_DEFINITION_BODY = Body(
    ...,
    description="A job definition (the same fields as in a YAML/JSON definition file)",
    openapi_examples={
        "job": {
            "summary": "a two-step job",
            "value": {
                "jobId": "thumbnail_with_caption",
                "inputSchema": {"image": {"type": "image", "required": True}, "caption": {"type": "string"}},
                "steps": [
                    {"stepId": "small", "toolId": "image.resize",
                     "inputMappings": [{"sourceJobInput": "image", "targetInputName": "image"},
                                       {"value": 256, "targetInputName": "width"}]},
                    {"stepId": "stamp", "toolId": "image.watermark",
                     "inputMappings": [{"sourceStepId": "small", "sourceOutputName": "image", "targetInputName": "image"},
                                       {"sourceJobInput": "caption", "targetInputName": "text"}]},
                ],
            },
        }
    },
)


@router.get("/tools", response_model=list[ToolSummary], summary="List the tools", tags=["tools"])
async def list_tools(request: Request) -> list[dict[str, Any]]:
    """Every public tool (latest version of each), with the JSON Schema of its inputs."""
    return [tool_summary(t) for t in tw(request).list_tools()]


def _found(defn: ToolDefinition | JobDefinition | None, kind: str, ident: str) -> Any:
    if defn is None:
        raise ApiProblem(404, f"no {kind} named {ident!r}", kind="unknown-definition")
    return defn


def _in_version(request: Request, defn: ToolDefinition | JobDefinition, version: str | None) -> Any:
    """``defn`` in ``version`` (404 naming the registered versions when there is no such version)."""
    if version is None:
        return defn
    ident = defn.tool_id if isinstance(defn, ToolDefinition) else defn.job_id
    try:
        return tw(request).definition(ident, version)
    except UnknownDefinition as exc:
        raise ApiProblem(404, str(exc), kind="unknown-definition") from None


def _versions(request: Request, defn: ToolDefinition | JobDefinition) -> list[dict[str, Any]]:
    ident = defn.tool_id if isinstance(defn, ToolDefinition) else defn.job_id
    return [version_info(v, defn.version) for v in tw(request).versions(ident)]


@router.get("/tools/{tool_id}", response_model=ToolDetail, summary="Show a tool", tags=["tools"],
            responses={404: {"description": "No such tool, or no such version of it"}})
async def show_tool(request: Request, tool_id: str, version: _Version = None) -> dict[str, Any]:
    """One tool (the latest version, or ``version``): its inputs as a JSON Schema, its outputs and
    its whole definition."""
    tool = _in_version(request, _found(tw(request).registry.get_tool(tool_id), "tool", tool_id), version)
    return {**tool_summary(tool), "definition": tool.dump()}


@router.get("/tools/{tool_id}/versions", response_model=list[VersionInfo], summary="List a tool's versions",
            tags=["tools"], responses={404: {"description": "No such tool"}})
async def tool_versions(request: Request, tool_id: str) -> list[dict[str, Any]]:
    """Every registered version of the tool, oldest first (natural order: 2 < 10)."""
    return _versions(request, _found(tw(request).registry.get_tool(tool_id), "tool", tool_id))


@router.get("/jobs", response_model=list[JobSummary], summary="List the jobs", tags=["jobs"])
async def list_jobs(request: Request) -> list[dict[str, Any]]:
    """Every public job (latest version of each) with its steps and the JSON Schema of its inputs."""
    return [job_summary(j) for j in tw(request).list_jobs()]


@router.get("/jobs/{job_id}", response_model=JobDetail, summary="Show a job", tags=["jobs"],
            responses={404: {"description": "No such job, or no such version of it"}})
async def show_job(request: Request, job_id: str, version: _Version = None) -> dict[str, Any]:
    """One job (the latest version, or ``version``): its inputs as a JSON Schema, its steps (the
    DAG) and its whole definition."""
    job = _in_version(request, _found(tw(request).registry.get_job(job_id), "job", job_id), version)
    return {**job_summary(job), "definition": job.dump()}


@router.get("/jobs/{job_id}/versions", response_model=list[VersionInfo], summary="List a job's versions",
            tags=["jobs"], responses={404: {"description": "No such job"}})
async def job_versions(request: Request, job_id: str) -> list[dict[str, Any]]:
    """Every registered version of the job, oldest first (natural order: 2 < 10). Submit one with
    ``version`` in ``POST /runs``."""
    return _versions(request, _found(tw(request).registry.get_job(job_id), "job", job_id))


def _problems(problems: list[Problem]) -> list[dict[str, str]]:
    return [{"path": p.path, "message": p.message} for p in problems]


def _result(defn: ToolDefinition | JobDefinition | None, problems: list[Problem]) -> dict[str, Any]:
    return {
        "valid": not problems,
        "jobId": getattr(defn, "job_id", None),
        "version": defn.version if defn is not None else None,
        "problems": _problems(problems),
    }


@router.post("/jobs/validate", response_model=ValidationResult, summary="Validate a job definition", tags=["jobs"])
async def validate_job(request: Request, definition: dict[str, Any] = _DEFINITION_BODY) -> dict[str, Any]:
    """Check a job definition against the registered tools and jobs, without registering it.

    200: ``valid`` says whether it would be accepted, ``problems`` lists every problem with its
    path inside the definition. 422 for a body that cannot be a definition (text with lone
    surrogates or NUL, NaN, nesting deeper than 64), and for one too costly to check: its templates
    and conditions hold more than 200,000 characters, or take more than 2 s of CPU to compile
    together (``registry.expressions``; kind ``definition-too-costly``, naming the problem).
    """
    submit_mod.refuse_unstorable(definition, DEFINITION_MAX_DEPTH)
    defn, problems = await asyncio.to_thread(tw(request).check_definition, definition)
    costly = [p for p in problems if p.code == TOO_COSTLY]
    if costly:
        from toolweave.api.problems import FieldError

        raise ApiProblem(422, "; ".join(f"{p.path}: {p.message}" for p in costly), kind="definition-too-costly",
                         errors=[FieldError(field=p.path or "definition", message=p.message) for p in costly])
    return _result(defn, problems)


@router.post(
    "/jobs",
    response_model=JobDetail,
    status_code=201,
    summary="Register a job definition",
    tags=["jobs"],
    responses={422: {"description": "The definition has problems (listed in `errors`)"}},
)
async def register_job(
    request: Request, definition: dict[str, Any] = _DEFINITION_BODY, caller: Caller = Depends(require_admin)
) -> dict[str, Any]:
    """Register a job (admin key only). It is kept in the store, so every server sharing it knows
    the job at once. Registering the same id and version again with the same content is a no-op."""
    submit_mod.refuse_unstorable(definition, DEFINITION_MAX_DEPTH)
    defn, problems = await tw(request).register_job(definition)
    if problems or not isinstance(defn, JobDefinition):
        from toolweave.api.problems import FieldError

        raise ApiProblem(
            422,
            "; ".join(f"{p.path or 'definition'}: {p.message}" for p in problems) or "not a job definition",
            kind="invalid-definition",
            errors=[FieldError(field=p.path or "definition", message=p.message) for p in problems],
        )
    return {**job_summary(defn), "definition": defn.dump()}
