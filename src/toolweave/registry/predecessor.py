"""The predecessor's tool definitions → toolweave's. Pure: dicts in, definitions (as written in
files) and notes out.

The predecessor stored each tool as JSON (``reference/predecessor-tools/``): the fields of
toolweave's ``ToolDefinition`` and more — ``apiPath``, ``deliveryMode``, ``webhookStrategy``,
``humanDefaults``, ``migrations``, ``category`` and, in ``metadata``, ``costTable`` and the
adapter's parameters. ``convert`` keeps what means something here and says, in its notes, what it
changed and what it could not keep:

- inputs keyed by their id (the predecessor's ``name`` was a label: it becomes ``displayName``),
  types mapped (``checkpoint``/``lora`` → string, ``slider`` → number, ``object`` → json), with
  ``visibleIf``, ``advanced``, ``order``; ``humanDefaults`` become defaults (toolweave has one
  default for every caller);
- ``primaryInput`` given as a kind (``text``, ``image``) becomes the input of that kind;
- ``costTable`` (nested by input values) becomes ``costingModel: {rateSource: table}``, its
  levels matched to the inputs whose choices they list;
- the service: ``openai`` image tools become an OpenAI Images request on the ``openai`` service;
  ``huggingface`` tools on JoyCaption's Space become a job of two calls to the Space's Gradio API
  (its ``build_prompt`` and ``chat_joycaption``); ``string`` becomes a job of the builtin
  ``text.concat`` and ``text.replace``; a service toolweave cannot call (``vastai``) keeps its
  inputs and outputs on the ``http`` service with a request to fill in, and says so.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

TYPES = {
    "string": "string", "text": "text", "number": "number", "integer": "integer", "boolean": "boolean",
    "enum": "enum", "seed": "seed", "image": "image", "video": "video", "audio": "audio", "file": "file",
    "json": "json", "object": "json", "checkpoint": "string", "lora": "string", "slider": "number",
}
KINDS = {"text": ("text", "string"), "image": ("image",), "video": ("video",), "audio": ("audio",),
         "file": ("file",)}
DROPPED = {
    "apiPath": "its HTTP route in the predecessor's own server",
    "deliveryMode": "toolweave decides how to wait from the service (a row, never a worker)",
    "webhookStrategy": "how results are read is the service's (for http tools, `metadata.http`)",
    "migrations": "toolweave keeps versions side by side; old input names are not mapped to new ones",
}
JOYCAPTION_HOST = "fancyfeast-joy-caption-beta-one.hf.space"
JOYCAPTION_TYPES = [
    "Descriptive", "Descriptive (Casual)", "Straightforward", "Stable Diffusion Prompt", "MidJourney",
    "Danbooru tag list", "e621 tag list", "Rule34 tag list", "Booru-like tag list", "Art Critic",
    "Product Listing", "Social Media Post",
]
"""The caption types JoyCaption Beta One's Space offers (its ``build_prompt`` refuses others)."""
JOYCAPTION_LENGTHS = ["any", "very short", "short", "medium-length", "long", "very long",
                      *(str(n) for n in range(20, 261, 10))]


class ConversionError(ValueError):
    """A file that is not a predecessor tool definition (the reason says why)."""


@dataclass
class Conversion:
    source: str
    definitions: list[dict[str, Any]] = field(default_factory=list)
    """What to write: tools first, then the job that runs them (file form, camelCase)."""
    notes: list[str] = field(default_factory=list)
    """What changed and what could not be kept, one sentence each."""

    def note(self, text: str) -> None:
        self.notes.append(text)


def _command(value: Any) -> str | None:
    """``/image`` → ``image`` (Telegram's rules: ``[a-z0-9_]``, at most 32); None when nothing is left."""
    text = re.sub(r"[^a-z0-9_]+", "_", str(value or "").strip().lstrip("/").lower()).strip("_")[:32]
    return text or None


def _inputs(raw: Mapping[str, Any], conv: Conversion, human: Mapping[str, Any]) -> list[dict[str, Any]]:
    params = []
    for key, spec in raw.items():
        if not isinstance(spec, Mapping):
            conv.note(f"input {key!r} is not an object: left out")
            continue
        kind = str(spec.get("type", "string"))
        if kind not in TYPES:
            conv.note(f"input {key!r} has type {kind!r}, which toolweave does not know: it became string")
        param: dict[str, Any] = {"name": key, "type": TYPES.get(kind, "string")}
        if kind in ("checkpoint", "lora", "slider"):
            conv.note(f"input {key!r}: type {kind} became {param['type']}")
        label = spec.get("name")
        if isinstance(label, str) and label and label != key:
            param["displayName"] = label
        for name in ("required", "description", "advanced", "order", "default", "enum"):
            if spec.get(name) is not None and spec.get(name) != "":
                param[name] = spec[name]
        if key in human and human[key] is not None:
            if "default" in param and param["default"] != human[key]:
                conv.note(f"input {key!r}: its humanDefault {human[key]!r} replaced its default {param['default']!r}")
            elif "default" not in param:
                conv.note(f"input {key!r}: its humanDefault {human[key]!r} became its default")
            param["default"] = human[key]
        visible = spec.get("visibleIf")
        if isinstance(visible, Mapping) and visible.get("field"):
            values = visible.get("values", [visible["value"]] if "value" in visible else [])
            param["visibleIf"] = {"field": str(visible["field"]), "values": list(values)}
        elif visible is not None:
            conv.note(f"input {key!r}: visibleIf {visible!r} is not {{field, values}}: left out")
        params.append(param)
    params.sort(key=lambda p: (p.get("order", 1_000_000), list(raw).index(p["name"])))
    return params


def _outputs(raw: Mapping[str, Any], conv: Conversion) -> list[dict[str, Any]]:
    outs = []
    for key, spec in raw.items():
        kind = str((spec or {}).get("type", "string")) if isinstance(spec, Mapping) else "string"
        out: dict[str, Any] = {"name": key, "type": TYPES.get(kind, "string")}
        if isinstance(spec, Mapping) and spec.get("description"):
            out["description"] = spec["description"]
        if isinstance(spec, Mapping) and isinstance(spec.get("name"), str) and spec["name"] != key:
            conv.note(f"output {key!r}: its label {spec['name']!r} is not kept (outputs have no display name)")
        outs.append(out)
    return outs


def _primary(value: Any, inputs: list[dict[str, Any]], conv: Conversion) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    names = [p["name"] for p in inputs]
    if value in names:
        return value
    kinds = KINDS.get(value)
    if kinds:
        for wanted in (True, False):
            for param in inputs:
                if param["type"] in kinds and bool(param.get("required")) == wanted:
                    conv.note(f"primaryInput {value!r} (a kind) became the input {param['name']!r}")
                    return str(param["name"])
    conv.note(f"primaryInput {value!r} names no input: left out")
    return None


def _cost_table(table: Mapping[str, Any], inputs: list[dict[str, Any]], conv: Conversion) -> dict[str, Any] | None:
    """The levels of a nested price table matched to the inputs whose choices they list."""
    by: list[str] = []
    level: list[Mapping[str, Any]] = [table]
    while level and all(isinstance(node, Mapping) for node in level):
        keys = {str(k) for node in level for k in node}
        match = next(
            (p["name"] for p in inputs if p["name"] not in by and keys <= {str(c) for c in p.get("enum") or []}),
            None,
        )
        if match is None:
            conv.note(f"costTable: no input lists all of {sorted(keys)}; the table stays in metadata, unused")
            return None
        by.append(str(match))
        level = [child for node in level for child in node.values()]
    return {"rateSource": "table", "priceTable": {"by": by, "prices": dict(table)}}


def _costing(raw: Any, table: Any, inputs: list[dict[str, Any]], conv: Conversion) -> dict[str, Any] | None:
    if isinstance(table, Mapping) and table:
        converted = _cost_table(table, inputs, conv)
        if converted is not None:
            conv.note(f"costTable became costingModel rateSource table, by {', '.join(converted['priceTable']['by'])}")
            return converted
    if not isinstance(raw, Mapping):
        return None
    source = raw.get("rateSource")
    if source == "static":
        amount = (raw.get("staticCost") or {}).get("amount")
        unit = (raw.get("staticCost") or {}).get("unit")
        if unit not in (None, "USD", "run", "request"):
            conv.note(f"costingModel: the static cost is per {unit!r} in the predecessor; here it is per run")
        return {"rateSource": "static", "staticCost": {"amount": amount if amount is not None else 0, "unit": "USD"}}
    if source == "machine" and (raw.get("rate") is not None or raw.get("machineClass")):
        return {k: v for k, v in raw.items() if k in ("rateSource", "rate", "machineClass")}
    conv.note(f"costingModel {dict(raw)!r} has no rate or machine class toolweave can price: left out")
    return None


def convert(data: Any, source: str = "") -> Conversion:
    """Convert one predecessor tool definition; raises ``ConversionError`` for anything else."""
    if not isinstance(data, Mapping) or not isinstance(data.get("toolId"), str) or not data.get("toolId"):
        raise ConversionError("not a predecessor tool definition (no toolId)")
    for section in ("inputSchema", "outputSchema", "metadata", "platformHints", "humanDefaults", "costingModel"):
        if data.get(section) is not None and not isinstance(data[section], Mapping):
            kind = type(data[section]).__name__
            raise ConversionError(f"{section} must be an object keyed by name, not a JSON {kind}")
    try:
        return _convert(data, source)
    except (TypeError, AttributeError, KeyError, IndexError, ValueError, RecursionError) as exc:
        if isinstance(exc, ConversionError):
            raise
        raise ConversionError(f"a field has the wrong type ({type(exc).__name__}: {exc})") from None


def _convert(data: Mapping[str, Any], source: str) -> Conversion:
    conv = Conversion(source)
    tool_id = str(data["toolId"])
    metadata = dict(data.get("metadata") or {})
    human = data.get("humanDefaults") or {}
    inputs = _inputs(data.get("inputSchema") or {}, conv, human if isinstance(human, Mapping) else {})
    outputs = _outputs(data.get("outputSchema") or {}, conv)
    for key, why in DROPPED.items():
        if data.get(key) not in (None, {}, ""):
            conv.note(f"{key} is not kept: {why}")
    base: dict[str, Any] = {"toolId": tool_id, "version": str(data.get("version") or "1")}
    if data.get("displayName"):
        base["displayName"] = data["displayName"]
    command = _command(data.get("commandName"))
    if command:
        base["commandName"] = command
    if data.get("description"):
        base["description"] = data["description"]
    hints = dict(data.get("platformHints") or {})
    primary = _primary(hints.pop("primaryInput", None), inputs, conv)
    if primary:
        hints["primaryInput"] = primary
    if data.get("category"):
        hints["category"] = data["category"]
    if data.get("visibility"):
        base["visibility"] = data["visibility"]
    costing = _costing(data.get("costingModel"), metadata.pop("costTable", None), inputs, conv)
    service = str(data.get("service") or "")
    adapter = metadata.pop("defaultAdapterParams", None) or {}
    kept = {k: v for k, v in metadata.items() if k in ("provider", "model", "hideFromLanding")}
    dropped = sorted(set(metadata) - set(kept))
    if dropped:
        conv.note(f"metadata {', '.join(dropped)} not kept (the predecessor's adapter settings)")
    tool = {**base, "inputSchema": inputs, "outputSchema": outputs, "platformHints": hints,
            **({"costingModel": costing} if costing else {}), "metadata": kept}
    if service == "openai" and adapter.get("action") == "image":
        _openai_image(tool, conv)
    elif service == "huggingface" and JOYCAPTION_HOST in str(adapter.get("spaceUrl", "")):
        _joycaption(tool, str(adapter["spaceUrl"]).rstrip("/"), conv)
    elif service == "string":
        _string(tool, conv)
    else:
        _unknown(tool, service, conv)
    return conv


# --- per service --------------------------------------------------------------------------------


def _openai_image(tool: dict[str, Any], conv: Conversion) -> None:
    names = {p["name"] for p in tool["inputSchema"]}
    if "responseFormat" in names:
        tool["inputSchema"] = [p for p in tool["inputSchema"] if p["name"] != "responseFormat"]
        conv.note("input 'responseFormat' is not kept: the image is stored either way, and each model is "
                  "asked for what it supports (gpt-image-1 refuses response_format)")
    body: dict[str, Any] = {"prompt": {"$input": "prompt"}, "n": 1}
    for name in ("model", "size", "quality"):
        if name in names:
            body[name] = {"$input": name}
    tool["service"] = "openai"
    tool["metadata"]["http"] = {
        "request": {"path": "/images/generations", "json": body, "timeoutSeconds": 240},
        "outputs": {name: {"path": "data[0]", "mimeType": "image/png"} for name in
                    [o["name"] for o in tool["outputSchema"] if o["type"] == "image"]},
    }
    tool["timeoutSeconds"] = 300
    conv.note("service 'openai' (OpenAI Images, POST /images/generations): set OPENAI_API_KEY")
    conv.definitions.append(tool)


def _gradio_call(space: str, api: str, data: list[Any], output: str) -> dict[str, Any]:
    """A call of a Gradio app's ``api``: POST its inputs, then read the event stream its result
    ends (its first output as ``output``)."""
    return {
        "request": {"url": f"{space}/gradio_api/call/{api}", "json": {"data": data}},
        "async": {"id": "event_id", "poll": {"method": "GET", "url": f"{space}/gradio_api/call/{api}/{{{{ id }}}}"},
                  "pollFormat": "sse", "firstPollSeconds": 1},
        "outputs": {output: {"path": "[0]"}},
    }


def _joycaption(tool: dict[str, Any], space: str, conv: Conversion) -> None:
    """JoyCaption Beta One's Space: its ``build_prompt`` turns caption type, length, extra options
    and a name into the prompt; ``chat_joycaption`` captions the image with it. Two http tools on
    the Space (Gradio's ``/gradio_api/call`` API) and the job that chains them."""
    job_id = tool["toolId"]
    inputs = {p["name"]: p for p in tool["inputSchema"]}
    image = next((n for n, p in inputs.items() if p["type"] == "image"), None)
    if image is None:
        _unknown(tool, "huggingface", conv)
        return
    if "captionType" in inputs and inputs["captionType"]["type"] == "string":
        inputs["captionType"].update(type="enum", enum=JOYCAPTION_TYPES)
        conv.note("input 'captionType' became an enum of the Space's caption types")
    if "captionLength" in inputs and inputs["captionLength"]["type"] == "string":
        inputs["captionLength"].update(type="enum", enum=JOYCAPTION_LENGTHS)
        conv.note("input 'captionLength' became an enum of the Space's lengths")
    if "maxNewTokens" in inputs:
        inputs["maxNewTokens"].update(type="integer", minimum=1, maximum=2048)
    for name, low, high in (("temperature", 0, 2), ("topP", 0, 1)):
        if name in inputs:
            inputs[name].update(minimum=low, maximum=high)
    text_in = [{"name": n, "type": inputs[n]["type"], **{k: inputs[n][k] for k in ("enum", "default") if k in inputs[n]}}
               for n in ("captionType", "captionLength", "extraOptions", "personName") if n in inputs]
    prompt_tool = {
        "toolId": f"{job_id}.prompt", "service": "http", "version": tool["version"],
        "displayName": f"{tool.get('displayName', job_id)}: prompt", "visibility": "internal",
        "description": "Builds JoyCaption's instruction from a caption type, length and extra options (the Space's build_prompt).",
        "inputSchema": text_in, "outputSchema": [{"name": "prompt", "type": "text"}],
        "metadata": {"http": _gradio_call(space, "build_prompt", [
            {"$input": "captionType", "default": "Descriptive"}, {"$input": "captionLength", "default": "long"},
            {"$input": "extraOptions", "split": "\n", "default": ""}, {"$input": "personName", "default": ""},
        ], "prompt")},
    }
    caption_in = [{"name": "image", "type": "image", "required": True}, {"name": "prompt", "type": "text", "required": True}]
    for name, default in (("temperature", 0.6), ("topP", 0.9), ("maxNewTokens", 512), ("logPrompt", False)):
        param = inputs.get(name, {"type": "number"})
        caption_in.append({"name": name, "type": param["type"], "default": param.get("default", default),
                           **{k: param[k] for k in ("minimum", "maximum") if k in param}})
    output = next((o["name"] for o in tool["outputSchema"] if o["type"] in ("text", "string")), "description")
    caption_tool = {
        "toolId": f"{job_id}.caption", "service": "http", "version": tool["version"],
        "displayName": f"{tool.get('displayName', job_id)}: caption", "visibility": "internal",
        "description": "Captions an image with JoyCaption Beta One (the Space's chat_joycaption).",
        "inputSchema": caption_in, "outputSchema": [{"name": "caption", "type": "text"}],
        **({"costingModel": tool["costingModel"]} if "costingModel" in tool else {}),
        "timeoutSeconds": 300,
        "metadata": {"http": _gradio_call(space, "chat_joycaption", [
            {"path": {"$input": "image", "as": "url"}, "meta": {"_type": "gradio.FileData"}},
            {"$input": "prompt"}, {"$input": "temperature"}, {"$input": "topP"}, {"$input": "maxNewTokens"},
            {"$input": "logPrompt"},
        ], "caption")},
    }
    job: dict[str, Any] = {
        "jobId": job_id, **{k: tool[k] for k in ("version", "displayName", "commandName", "description", "visibility")
                            if k in tool},
        "inputSchema": tool["inputSchema"],
        "outputSchema": [{"name": output, "type": "text", "sourceStepId": "caption", "sourceOutputName": "caption"}],
        "platformHints": tool.get("platformHints", {}),
        "steps": [
            {"stepId": "prompt", "toolId": prompt_tool["toolId"], "inputMappings": [
                {"sourceJobInput": p["name"], "targetInputName": p["name"]} for p in text_in]},
            {"stepId": "caption", "toolId": caption_tool["toolId"], "inputMappings": [
                {"sourceJobInput": image, "targetInputName": "image"},
                {"sourceStepId": "prompt", "sourceOutputName": "prompt", "targetInputName": "prompt"},
                *({"sourceJobInput": n, "targetInputName": n} for n in ("temperature", "topP", "maxNewTokens", "logPrompt")
                  if n in inputs)]},
        ],
        "metadata": tool.get("metadata", {}),
    }
    conv.definitions.extend([prompt_tool, caption_tool, job])
    conv.note(f"became the job {job_id!r}: two calls to the Space's Gradio API (build_prompt, then "
              f"chat_joycaption) on the 'http' service; the tools {prompt_tool['toolId']!r} and "
              f"{caption_tool['toolId']!r} are internal")
    conv.note("the Space downloads the image from a URL: set public_base_url to an address it can reach")


def _string(tool: dict[str, Any], conv: Conversion) -> None:
    """The string tool's operations as builtin text tools: one step per operation, each run only
    for its operation, joined into one result."""
    names = {p["name"] for p in tool["inputSchema"]}
    wanted = {"operation", "inputText", "appendText", "searchText", "replacementText"}
    if not wanted <= names:
        _unknown(tool, "string", conv)
        return
    output = next((o["name"] for o in tool["outputSchema"]), "result")
    job: dict[str, Any] = {
        "jobId": tool["toolId"], **{k: tool[k] for k in ("version", "displayName", "commandName", "description",
                                                          "visibility", "platformHints") if k in tool},
        "inputSchema": tool["inputSchema"],
        "outputSchema": [{"name": output, "type": "text", "sourceStepId": "result", "sourceOutputName": "text"}],
        "steps": [
            {"stepId": "concat", "toolId": "text.concat", "condition": "job.operation == 'concat'",
             "inputMappings": [{"sourceJobInput": "inputText", "targetInputName": "text"},
                               {"sourceJobInput": "appendText", "targetInputName": "append"}]},
            {"stepId": "replace", "toolId": "text.replace", "condition": "job.operation == 'replace'",
             "inputMappings": [{"sourceJobInput": "inputText", "targetInputName": "text"},
                               {"sourceJobInput": "searchText", "targetInputName": "search"},
                               {"sourceJobInput": "replacementText", "targetInputName": "replacement"}]},
            {"stepId": "result", "toolId": "text.concat",
             "inputMappings": [
                 {"sourceStepId": "concat", "sourceOutputName": "text", "default": "", "targetInputName": "text"},
                 {"sourceStepId": "replace", "sourceOutputName": "text", "default": "", "targetInputName": "append"}]},
        ],
        "metadata": tool.get("metadata", {}),
    }
    conv.definitions.append(job)
    conv.note("became a job of the builtin text.concat and text.replace, each step run only for its "
              "operation (the operations are builtin text tools now)")
    if tool.get("costingModel"):
        conv.notes = [n for n in conv.notes if not n.startswith("costingModel")]
        conv.note("costingModel not kept: builtin tools cost nothing")


def _unknown(tool: dict[str, Any], service: str, conv: Conversion) -> None:
    tool["service"] = "http"
    tool["metadata"]["http"] = {"request": {"url": "https://example.invalid/fill-in", "json": {
        p["name"]: {"$input": p["name"]} for p in tool["inputSchema"]}}}
    tool["metadata"]["predecessorService"] = service
    tool["visibility"] = "hidden"
    conv.note(f"service {service!r} has no counterpart toolweave can call: the tool keeps its inputs and "
              "outputs on the 'http' service with a request to fill in (metadata.http), and is hidden until then")
    conv.definitions.append(tool)
