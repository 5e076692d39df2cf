"""What the workflow importer knows of ComfyUI nodes: the ComfyUI Deploy ``External*`` input
classes (``EXTERNAL_KINDS``), the native loaders and primitives that become inputs of a tool for the
native server, the output kinds (``OUTPUT_KINDS``); and the reading of an API prompt's nodes (links,
literals, ids, titles) and the names made from them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from toolweave.comfy.objectinfo import ObjectInfo
from toolweave.model.definitions import ParamType

EXTERNAL_PREFIX = "ComfyUIDeployExternal"


# --- External* input nodes ------------------------------------------------------------------------


@dataclass(frozen=True)
class ExternalKind:
    """How one ComfyUI Deploy External* class becomes a tool input."""

    type: ParamType
    target: str
    """The node input a value is written into on a native server (the node's ``run()`` reads it)."""
    default_from: str | None = "default_value"
    bounds: bool = False
    encode: str | None = None
    accepts_url: bool = False


EXTERNAL_KINDS: dict[str, ExternalKind] = {
    # run() returns default_value (Text, TextAny, Enum, Boolean, Seed, Checkpoint), or parses
    # input_id and falls back to default_value (the Number family): writing default_value leaves
    # input_id — the input's name — intact and works for both.
    "ComfyUIDeployExternalText": ExternalKind(ParamType.TEXT, "default_value"),
    "ComfyUIDeployExternalTextAny": ExternalKind(ParamType.TEXT, "default_value"),
    "ComfyUIDeployExternalEnum": ExternalKind(ParamType.ENUM, "default_value"),
    "ComfyUIDeployExternalBoolean": ExternalKind(ParamType.BOOLEAN, "default_value"),
    "ComfyUIDeployExternalSeed": ExternalKind(ParamType.SEED, "default_value", bounds=True),
    "ComfyUIDeployExternalCheckpoint": ExternalKind(ParamType.STRING, "default_value"),
    "ComfyUIDeployExternalNumber": ExternalKind(ParamType.NUMBER, "default_value"),
    "ComfyUIDeployExternalNumberInt": ExternalKind(ParamType.INTEGER, "default_value"),
    "ComfyUIDeployExternalNumberSlider": ExternalKind(ParamType.NUMBER, "default_value", bounds=True),
    "ComfyUIDeployExternalNumberSliderInt": ExternalKind(ParamType.INTEGER, "default_value", bounds=True),
    # Media: the value is a URL (http(s) or data:) the node downloads.
    "ComfyUIDeployExternalImage": ExternalKind(ParamType.IMAGE, "input_id", default_from="default_value_url"),
    "ComfyUIDeployExternalImageAlpha": ExternalKind(ParamType.IMAGE, "input_id", default_from=None),
    "ComfyUIDeployExternalVideo": ExternalKind(ParamType.VIDEO, "input_id", default_from=None),
    "ComfyUIDeployExternalAudio": ExternalKind(ParamType.AUDIO, "audio_file", default_from=None),
    "ComfyUIDeployExternalFile": ExternalKind(ParamType.FILE, "file_url", default_from=None),
    "ComfyUIDeployExternalEXR": ExternalKind(ParamType.FILE, "exr_file", default_from=None),
    "ComfyUIDeployExternalImageBatch": ExternalKind(
        ParamType.JSON, "images", default_from="images", encode="json"
    ),
    "ComfyUIDeployExternalLora": ExternalKind(
        ParamType.STRING, "lora_url", default_from=None, accepts_url=True
    ),
    "ComfyUIDeployExternalFaceModel": ExternalKind(
        ParamType.STRING, "face_model_url", default_from=None, accepts_url=True
    ),
}

# --- native loaders and primitives (tools for the native server built from plain workflows) --------

LOADER_INPUTS: dict[str, tuple[str, ParamType]] = {
    "LoadImage": ("image", ParamType.IMAGE),
    "LoadImageMask": ("image", ParamType.IMAGE),
    "LoadVideo": ("file", ParamType.VIDEO),
    "LoadAudio": ("audio", ParamType.AUDIO),
}
PRIMITIVE_INPUTS: dict[str, ParamType] = {
    "PrimitiveString": ParamType.STRING,
    "PrimitiveStringMultiline": ParamType.TEXT,
    "PrimitiveInt": ParamType.INTEGER,
    "PrimitiveFloat": ParamType.NUMBER,
    "PrimitiveBoolean": ParamType.BOOLEAN,
}
PROMPT_ENCODERS = frozenset({"CLIPTextEncode"})

# --- outputs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputKind:
    kind: str
    """The key of the node's entry in ComfyUI history ``outputs`` (``images``, ``gifs``…; ``*`` = all)."""
    type: ParamType
    preview: bool = False


OUTPUT_KINDS: dict[str, OutputKind | None] = {
    "SaveImage": OutputKind("images", ParamType.IMAGE),
    "SaveAnimatedWEBP": OutputKind("images", ParamType.IMAGE),
    "SaveAnimatedPNG": OutputKind("images", ParamType.IMAGE),
    "ComfyDeployOutputImage": OutputKind("images", ParamType.IMAGE),
    "ComfyDeployOutputEXR": OutputKind("images", ParamType.IMAGE),
    "PreviewImage": OutputKind("images", ParamType.IMAGE, preview=True),
    "MaskPreview": OutputKind("images", ParamType.IMAGE, preview=True),
    "SaveVideo": OutputKind("images", ParamType.VIDEO),
    "SaveWEBM": OutputKind("images", ParamType.VIDEO),
    "VHS_VideoCombine": OutputKind("gifs", ParamType.VIDEO),
    "SaveAudio": OutputKind("audio", ParamType.AUDIO),
    "SaveAudioMP3": OutputKind("audio", ParamType.AUDIO),
    "SaveAudioOpus": OutputKind("audio", ParamType.AUDIO),
    "PreviewAudio": OutputKind("audio", ParamType.AUDIO, preview=True),
    "PreviewAny": OutputKind("text", ParamType.TEXT),
    "ComfyDeployOutputText": OutputKind("text_file", ParamType.FILE),
    "ComfyDeployOutputFile": OutputKind("*", ParamType.FILE),
    "Preview3D": OutputKind("*", ParamType.FILE, preview=True),
    "Preview3DAnimation": OutputKind("*", ParamType.FILE, preview=True),
    # Nodes that report nothing in history (they stream over the websocket).
    "SaveImageWebsocket": None,
    "ComfyDeployWebscoketImageOutput": None,
}


def _guess_output(class_type: str) -> OutputKind:
    lowered = class_type.lower()
    preview = lowered.startswith("preview")
    for word, kind in (("video", ParamType.VIDEO), ("audio", ParamType.AUDIO), ("image", ParamType.IMAGE)):
        if word in lowered:
            return OutputKind("*", kind, preview=preview)
    if "text" in lowered or "string" in lowered:
        return OutputKind("*", ParamType.TEXT, preview=preview)
    return OutputKind("*", ParamType.FILE, preview=preview)


# --- helpers -------------------------------------------------------------------------------------


def _slug(text: str, sep: str = "_") -> str:
    return re.sub(r"[^a-z0-9]+", sep, text.lower()).strip(sep)


def _id_key(node_id: str) -> tuple[int | str, ...]:
    return tuple(int(p) if p.isdigit() else p for p in node_id.split(":"))


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)


def _literal(value: Any) -> Any:
    if isinstance(value, Mapping) and set(value) == {"__value__"}:
        return value["__value__"]
    return value


def _unique(name: str, taken: set[str], node_id: str) -> str:
    if name not in taken:
        return name
    candidate = f"{name}_{_slug(node_id)}"
    n = 2
    while candidate in taken:
        candidate = f"{name}_{_slug(node_id)}_{n}"
        n += 1
    return candidate


def _custom_title(node: Mapping[str, Any], object_info: ObjectInfo) -> str | None:
    title = (node.get("_meta") or {}).get("title")
    kind = str(node.get("class_type"))
    if isinstance(title, str) and title.strip() and title not in (kind, object_info.display_name(kind)):
        return title.strip()
    return None
