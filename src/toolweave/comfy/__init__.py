"""ComfyUI workflow import: UI→API conversion, External* inputs, Note descriptions, outputs.

Pure parsing (the only I/O is reading ``/object_info`` from a file or a server). The service
adapters call ``apply_inputs`` and ``extract_outputs``; the CLI calls ``tool_from_workflow``.
"""

from toolweave.comfy.check import check_prompt, reachable_from_outputs
from toolweave.comfy.convert import is_api_format, is_ui_format, parse_workflow, to_api, workflow_format
from toolweave.comfy.errors import WorkflowImportError
from toolweave.comfy.nodes import EXTERNAL_KINDS, OUTPUT_KINDS
from toolweave.comfy.notes import notes_of, parse_bot_line
from toolweave.comfy.objectinfo import InputSpec, ObjectInfo
from toolweave.comfy.tool import apply_inputs, extract_outputs, tool_from_workflow

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
