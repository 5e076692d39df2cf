"""Turning a request (JSON, or multipart with files) into a call to ``App.submit``."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile

from toolweave.api.problems import ApiProblem, FieldError, field_path
from toolweave.api.schemas import SubmitRunRequest
from toolweave.app import App, UnknownDefinition
from toolweave.inputs import Upload, field_name, storable_problems
from toolweave.model.definitions import JobDefinition, ToolDefinition

_RESERVED = {"toolId", "jobId", "version", "inputs", "callbackUrl", "priority", "csrf", "costCeiling"}


def read_json(raw: bytes, max_depth: int) -> Any:
    """A JSON request body, or a 4xx problem: 400 when it is not JSON, 422 naming each field that
    holds something that cannot be stored (lone surrogates, NUL, NaN, Infinity, nesting deeper
    than ``max_depth`` inside an input)."""
    try:
        data = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        raise ApiProblem(400, "the request body is not valid JSON", kind="malformed-body") from None
    except RecursionError:  # deeper than the parser goes (about 1,000 levels): found by a scan
        where = nested_too_deep_at(raw, max_depth) or "body"
        errors = [FieldError(field=where, message=f"is nested deeper than {max_depth} levels (setting input_max_depth)")]
        raise ApiProblem(422, f"{where}: {errors[0].message}", kind="invalid-request", errors=errors) from None
    if isinstance(data, dict):
        inputs = data.get("inputs")
        if isinstance(inputs, dict):  # the limit counts inside each input value
            refuse_unstorable({k: v for k, v in data.items() if k != "inputs"}, max_depth, inputs=inputs)
        else:
            refuse_unstorable(data, max_depth)
    return data


_JSON_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]', re.DOTALL)
"""The tokens of JSON text that say where a value sits: strings (keys among them), brackets, commas."""
_SCAN_TOKENS = 200_000
"""Tokens ``nested_too_deep_at`` reads at most (about 0.05 s)."""


def nested_too_deep_at(raw: bytes, max_depth: int) -> str | None:
    """Where JSON text nests past ``max_depth``, without parsing it (for text too deep to parse):
    the path of the first list or object past the limit (``inputs.images[0][0]…``), counted as
    ``storable_problems`` counts (inside each input value, or each top-level value); None when the
    text is not an object, or the place is not within its first ``_SCAN_TOKENS`` tokens."""
    stack: list[list[Any]] = []  # per open container: [its bracket, the key or index now, a key is next]
    for count, match in enumerate(_JSON_TOKENS.finditer(raw)):
        if count == _SCAN_TOKENS:
            return None  # not worth the time: the caller names the body
        token = match.group()
        first = token[:1]
        if first == b'"':
            if stack and stack[-1][0] == b"{" and stack[-1][2]:
                try:
                    stack[-1][1] = json.loads(token)
                except (ValueError, UnicodeDecodeError):
                    stack[-1][1] = "?"
                stack[-1][2] = False
        elif first in (b"[", b"{"):
            if stack and stack[0][0] != b"{":
                return None  # not a request's body: no field to name
            inside_inputs = len(stack) >= 2 and stack[0][0] == b"{" and stack[0][1] == "inputs"
            depth = len(stack) - (2 if inside_inputs else 1)  # containers around it inside its value
            if stack and depth >= max_depth:
                return field_path(("body", *(field_name(e[1]) if isinstance(e[1], str) else e[1] for e in stack)))
            stack.append([first, 0 if first == b"[" else None, first == b"{"])
        elif first in (b"]", b"}"):
            if stack:
                stack.pop()
        elif stack:  # a comma
            if stack[-1][0] == b"[":
                stack[-1][1] += 1
            else:
                stack[-1][2] = True
    return None


def refuse_unstorable(data: dict[str, Any], max_depth: int, *, inputs: dict[str, Any] | None = None) -> None:
    """A 422 problem naming each field of a JSON body (and of its ``inputs``) that cannot be stored
    and read back."""
    problems = storable_problems(data, max_depth=max_depth)
    if inputs is not None:
        problems += storable_problems(inputs, max_depth=max_depth, prefix="inputs.")
    if problems:
        errors = [FieldError(field=p.field, message=p.message) for p in problems]
        raise ApiProblem(422, "; ".join(str(p) for p in problems), kind="invalid-request", errors=errors)


def parse_submit(data: Any) -> SubmitRunRequest:
    """Validate the JSON body; every problem named by its field path."""
    if not isinstance(data, dict):
        raise ApiProblem(422, "the body must be a JSON object", kind="invalid-request",
                         errors=[FieldError(field="body", message="must be a JSON object")])
    try:
        request = SubmitRunRequest.model_validate(data)
    except ValidationError as exc:
        errors = [FieldError(field=field_path(tuple(e["loc"])), message=str(e["msg"]).removeprefix("Value error, "))
                  for e in exc.errors()]
        raise ApiProblem(422, "; ".join(f"{e.field}: {e.message}" for e in errors), kind="invalid-request",
                         errors=errors) from None
    if (request.toolId is None) == (request.jobId is None):
        raise ApiProblem(422, "give exactly one of toolId and jobId", kind="invalid-request",
                         errors=[FieldError(field="toolId", message="give exactly one of toolId and jobId")])
    return request


def target_of(app: App, request: SubmitRunRequest) -> ToolDefinition | JobDefinition:
    """The definition a request names, in the version it asks for (default: the latest)."""
    if request.toolId is not None:
        if app.registry.get_tool(request.toolId) is None:
            raise UnknownDefinition(f"no tool named {request.toolId!r}")
    elif app.registry.get_job(request.jobId or "") is None:
        raise UnknownDefinition(f"no job named {request.jobId!r}")
    return app.definition(request.toolId or request.jobId or "", request.version)


async def form_inputs(form: FormData, definition: ToolDefinition | JobDefinition, *, max_bytes: int) -> dict[str, Any]:
    """Inputs from form fields and uploaded files.

    A field named like an input gives its value (text, coerced by the schema); a file field gives
    an ``Upload`` (``App.submit`` stores it as an artifact of the account once every input is
    accepted). For media inputs a text field ``<name>__url`` may give a URL instead of a file, and
    ``<name>__artifact`` the sha256 of an artifact of the account's (the form of "Run again" sends
    the earlier run's file back this way; ``App.submit`` checks that the account holds it). A field
    ``inputs`` may hold a JSON object of further values.
    """
    params = {p.name: p for p in definition.input_schema}
    inputs: dict[str, Any] = {}
    kept: dict[str, Any] = {}  # earlier files sent back: a new file or URL for the same input wins
    raw_json = form.get("inputs")
    if isinstance(raw_json, str) and raw_json.strip():
        try:
            parsed = json.loads(raw_json)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise ApiProblem(422, "the field `inputs` must hold a JSON object", kind="invalid-request",
                             errors=[FieldError(field="inputs", message="must hold a JSON object")])
        inputs.update(parsed)
    for key in {k for k in form.keys() if k not in _RESERVED}:
        values = form.getlist(key)
        name = key.removesuffix("__url")
        param = params.get(name)
        value = values[-1]
        if isinstance(value, UploadFile):
            if param is None:
                inputs[name] = "(an uploaded file)"  # reported as an unknown input by validation
                continue
            if not value.filename:
                continue  # an empty file field of a browser form
            data = await value.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise ApiProblem(413, f"the file for {name!r} is larger than {max_bytes} bytes", kind="too-large")
            if not data:
                continue
            inputs[name] = Upload(data, filename=value.filename, mime_type=value.content_type or None)
            continue
        if key.endswith("__url"):
            if param is not None and param.type.is_media and name not in inputs and value.strip():
                inputs[name] = value.strip()
            continue
        if key.endswith("__artifact"):
            name = key.removesuffix("__artifact")
            param = params.get(name)
            if param is not None and param.type.is_media and value.strip():
                kept[name] = {"kind": "artifact", "sha256": value.strip()}
            continue
        if param is not None and param.type.is_media and not value.strip():
            continue
        inputs[name] = value
    for name, value in kept.items():
        inputs.setdefault(name, value)
    return inputs
