"""ComfyUI workflow import: UI→API conversion, External* inputs, Note descriptions, outputs.

Pure parsing (the only I/O is reading ``/object_info`` from a file or a server). The service
adapters call ``apply_inputs`` and ``extract_outputs``; the CLI calls ``tool_from_workflow``.
The names below are imported from their modules when first used (a command that runs no ComfyUI
workflow does not load the converter).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from toolweave.comfy.check import check_prompt, reachable_from_outputs
    from toolweave.comfy.convert import is_api_format, is_ui_format, parse_workflow, to_api, workflow_format
    from toolweave.comfy.errors import WorkflowImportError
    from toolweave.comfy.nodes import EXTERNAL_KINDS, OUTPUT_KINDS
    from toolweave.comfy.notes import notes_of, parse_bot_line
    from toolweave.comfy.objectinfo import InputSpec, ObjectInfo
    from toolweave.comfy.tool import apply_inputs, extract_outputs, tool_from_workflow

_MODULES = {
    "check_prompt": "check", "reachable_from_outputs": "check",
    "is_api_format": "convert", "is_ui_format": "convert", "parse_workflow": "convert", "to_api": "convert",
    "workflow_format": "convert",
    "WorkflowImportError": "errors",
    "EXTERNAL_KINDS": "nodes", "OUTPUT_KINDS": "nodes",
    "notes_of": "notes", "parse_bot_line": "notes",
    "InputSpec": "objectinfo", "ObjectInfo": "objectinfo",
    "apply_inputs": "tool", "extract_outputs": "tool", "tool_from_workflow": "tool",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "EXTERNAL_KINDS",
    "OUTPUT_KINDS",
    "InputSpec",
    "ObjectInfo",
    "WorkflowImportError",
    "apply_inputs",
    "check_prompt",
    "extract_outputs",
    "is_api_format",
    "is_ui_format",
    "notes_of",
    "parse_bot_line",
    "parse_workflow",
    "reachable_from_outputs",
    "to_api",
    "tool_from_workflow",
    "workflow_format",
]
