"""Tools and jobs: list, show (with the JSON Schema of their inputs), validate and register jobs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Request

from toolweave.api.auth import Caller, require_admin, require_caller, tw
from toolweave.api.problems import ApiProblem
from toolweave.api.schemas import (
    JobDetail,
    JobSummary,
    ToolDetail,
    ToolSummary,
    ValidationResult,
    job_summary,
    tool_summary,
)
from toolweave.model.definitions import JobDefinition, ToolDefinition
from toolweave.registry import Problem

router = APIRouter(prefix="/api/v1", dependencies=[Depends(require_caller)])

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


@router.get("/tools/{tool_id}", response_model=ToolDetail, summary="Show a tool", tags=["tools"])
async def show_tool(request: Request, tool_id: str) -> dict[str, Any]:
    """One tool: its inputs as a JSON Schema, its outputs and its whole definition."""
    app = tw(request)
    tool = app.registry.get_tool(tool_id)
    if tool is None:
        raise ApiProblem(404, f"no tool named {tool_id!r}", kind="unknown-definition")
    return {**tool_summary(tool), "definition": tool.dump()}


@router.get("/jobs", response_model=list[JobSummary], summary="List the jobs", tags=["jobs"])
async def list_jobs(request: Request) -> list[dict[str, Any]]:
    """Every public job (latest version of each) with its steps and the JSON Schema of its inputs."""
    return [job_summary(j) for j in tw(request).list_jobs()]


@router.get("/jobs/{job_id}", response_model=JobDetail, summary="Show a job", tags=["jobs"])
async def show_job(request: Request, job_id: str) -> dict[str, Any]:
    """One job: its inputs as a JSON Schema, its steps (the DAG) and its whole definition."""
    job = tw(request).registry.get_job(job_id)
    if job is None:
        raise ApiProblem(404, f"no job named {job_id!r}", kind="unknown-definition")
    return {**job_summary(job), "definition": job.dump()}


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

    Always 200: ``valid`` says whether it would be accepted, ``problems`` lists every problem with
    its path inside the definition.
    """
    defn, problems = tw(request).check_definition(definition)
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
    """Register a job (admin key only). It is kept under the server's data folder and loaded again
    at start-up. Registering the same id and version again with the same content is a no-op."""
    defn, problems = tw(request).register_job(definition)
    if problems or not isinstance(defn, JobDefinition):
        from toolweave.api.problems import FieldError

        raise ApiProblem(
            422,
            "; ".join(f"{p.path or 'definition'}: {p.message}" for p in problems) or "not a job definition",
            kind="invalid-definition",
            errors=[FieldError(field=p.path or "definition", message=p.message) for p in problems],
        )
    return {**job_summary(defn), "definition": defn.dump()}
