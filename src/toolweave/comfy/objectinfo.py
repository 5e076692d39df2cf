"""A ComfyUI server's ``/object_info``: which node classes exist and what their inputs are.

Converting a UI-format workflow needs it (``widgets_values`` are positional in the order of the
widget-typed inputs, see ``reference/comfyui.md`` 3.3), and the structural check of an API prompt
reads input types, required inputs and output types from it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from toolweave.comfy.errors import WorkflowImportError

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
"""Input types the editor shows as widgets (their values live in ``widgets_values``)."""

DEFAULT_OBJECT_INFO = "object_info_0.3.64.json"
"""The captured ``/object_info`` of a ComfyUI 0.3.64 server, shipped as package data."""

COMFYDEPLOY_NODES = "comfydeploy_nodes.json"
"""The comfyui-deploy custom nodes (v2.3.10) in ``/object_info`` form, shipped as package data."""


def _data_text(name: str) -> str:
    return resources.files("toolweave.comfy").joinpath("data").joinpath(name).read_text(encoding="utf-8")


@dataclass(frozen=True)
class InputSpec:
    """One input of a node class, as ``/object_info`` describes it."""

    name: str
    type: str
    """The input type; both combo encodings (legacy list, V3 ``"COMBO"``) read as ``"COMBO"``."""
    section: str
    """``required``, ``optional`` or ``hidden``."""
    options: Mapping[str, Any] = field(default_factory=dict)
    choices: tuple[Any, ...] | None = None
    legacy_combo: bool = False
    """The combo is declared as a list of choices (the server then accepts any linked type)."""

    @property
    def is_widget(self) -> bool:
        return self.section != "hidden" and self.type in WIDGET_TYPES and not self.options.get("forceInput")

    @property
    def has_control(self) -> bool:
        """The editor adds a control-after-generate widget (fixed/randomize/…) after this one."""
        if self.options.get("control_after_generate"):
            return True
        return self.type == "INT" and self.name in ("seed", "noise_seed")

    @property
    def upload(self) -> str | None:
        """The kind of upload widget the editor adds after this combo (``image``, ``video``…)."""
        for key in ("image_upload", "video_upload", "audio_upload", "animated_image_upload"):
            if self.options.get(key):
                return key.removesuffix("_upload")
        return None

    @property
    def default(self) -> Any:
        """The value the editor gives a widget that has no saved value."""
        if "default" in self.options:
            return self.options["default"]
        if self.type == "COMBO":
            return self.choices[0] if self.choices else None
        if self.type in ("INT", "FLOAT"):
            value: float = 0
            low, high = self.options.get("min"), self.options.get("max")
            if isinstance(low, int | float) and value < low:
                value = low
            if isinstance(high, int | float) and value > high:
                value = high
            return int(value) if self.type == "INT" else float(value)
        if self.type == "STRING":
            return ""
        if self.type == "BOOLEAN":
            return False
        return None


def _parse_spec(name: str, section: str, raw: Any) -> InputSpec:
    if isinstance(raw, str):  # hidden inputs: {"prompt": "PROMPT"}
        return InputSpec(name=name, type=raw, section=section)
    if not isinstance(raw, list | tuple) or not raw:
        return InputSpec(name=name, type="*", section=section)
    kind = raw[0]
    options = raw[1] if len(raw) > 1 and isinstance(raw[1], Mapping) else {}
    if isinstance(kind, list | tuple):
        return InputSpec(
            name=name, type="COMBO", section=section, options=options, choices=tuple(kind), legacy_combo=True
        )
    kind = str(kind)
    choices = options.get("options") if kind == "COMBO" else None
    return InputSpec(
        name=name,
        type=kind,
        section=section,
        options=options,
        choices=tuple(choices) if isinstance(choices, list | tuple) else None,
    )


class ObjectInfo:
    """Wraps an ``/object_info`` dict (class_type → node description)."""

    def __init__(self, data: Mapping[str, Any], *, source: str = "") -> None:
        if not isinstance(data, Mapping):
            raise WorkflowImportError(
                "object_info", f"object_info {source or ''} is not a JSON object".strip()
            )
        bad = [
            k
            for k, v in data.items()
            if not isinstance(v, Mapping) or not isinstance(v.get("input", {}), Mapping)
        ]
        if bad:
            raise WorkflowImportError(
                "object_info",
                f"object_info {source} has malformed entries (no 'input' mapping): {', '.join(sorted(bad)[:5])}",
            )
        self._data: dict[str, Any] = dict(data)
        self.source = source
        self._inputs: dict[str, list[InputSpec]] = {}

    # --- loading ---------------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | Path) -> ObjectInfo:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise WorkflowImportError(
                "object_info", f"cannot read object_info file {p}: {exc.strerror or exc}"
            ) from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise WorkflowImportError(
                "object_info", f"object_info file {p} is not valid JSON: {exc}"
            ) from None
        return cls(data, source=str(p))

    @classmethod
    async def from_url(cls, url: str, *, request_timeout: float = 30.0) -> ObjectInfo:
        """Fetch ``/object_info`` from a server; ``url`` may be the server's base URL or the full path."""
        import httpx  # here: the ComfyUI service imports this module on every run, most fetch nothing

        target = url if url.rstrip("/").endswith("/object_info") else url.rstrip("/") + "/object_info"
        try:
            async with httpx.AsyncClient(timeout=request_timeout) as client:
                response = await client.get(target)
        except httpx.HTTPError as exc:
            raise WorkflowImportError(
                "object_info", f"cannot fetch {shown_url(target)}: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise WorkflowImportError("object_info", f"{shown_url(target)} answered HTTP {response.status_code}")
        try:
            data = response.json()
        except ValueError:
            raise WorkflowImportError("object_info", f"{shown_url(target)} did not return JSON") from None
        return cls(data, source=shown_url(target))

    @classmethod
    def default(cls) -> ObjectInfo:
        """The captured ``/object_info`` of ComfyUI 0.3.64 (478 classes) shipped with toolweave."""
        return cls(json.loads(_data_text(DEFAULT_OBJECT_INFO)), source=f"bundled {DEFAULT_OBJECT_INFO}")

    @classmethod
    def comfydeploy_nodes(cls) -> ObjectInfo:
        """The comfyui-deploy custom nodes (External* inputs, ComfyDeploy outputs)."""
        return cls(json.loads(_data_text(COMFYDEPLOY_NODES)), source=f"bundled {COMFYDEPLOY_NODES}")

    def with_fallback(self, other: ObjectInfo) -> ObjectInfo:
        """A copy that also knows ``other``'s classes (this one wins where both know a class)."""
        merged = dict(other._data)
        merged.update(self._data)
        return ObjectInfo(merged, source=self.source)

    # --- queries ---------------------------------------------------------------------------

    def has(self, class_type: str) -> bool:
        return class_type in self._data

    def __contains__(self, class_type: object) -> bool:
        return class_type in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def get(self, class_type: str) -> Mapping[str, Any] | None:
        return self._data.get(class_type)

    def raw(self) -> dict[str, Any]:
        return dict(self._data)

    def inputs(self, class_type: str) -> list[InputSpec]:
        """All inputs in the server's order (``input_order``: required, optional, hidden)."""
        cached = self._inputs.get(class_type)
        if cached is not None:
            return cached
        info = self._data.get(class_type) or {}
        declared = info.get("input") or {}
        order = info.get("input_order") or {}
        specs: list[InputSpec] = []
        for section in ("required", "optional", "hidden"):
            entries = declared.get(section) or {}
            if not isinstance(entries, Mapping):
                continue
            names = [n for n in (order.get(section) or []) if n in entries]
            names += [n for n in entries if n not in names]
            specs.extend(_parse_spec(n, section, entries[n]) for n in names)
        self._inputs[class_type] = specs
        return specs

    def widget_inputs(self, class_type: str) -> list[InputSpec]:
        return [s for s in self.inputs(class_type) if s.is_widget]

    def input_spec(self, class_type: str, name: str) -> InputSpec | None:
        return next((s for s in self.inputs(class_type) if s.name == name), None)

    def required_inputs(self, class_type: str) -> list[InputSpec]:
        return [s for s in self.inputs(class_type) if s.section == "required"]

    def outputs(self, class_type: str) -> list[str]:
        """Output types; a combo output (a list of choices) reads as ``"COMBO"``."""
        info = self._data.get(class_type) or {}
        return [t if isinstance(t, str) else "COMBO" for t in info.get("output") or []]

    def raw_outputs(self, class_type: str) -> list[Any]:
        """Output types as declared (a combo output is a list of choices)."""
        info = self._data.get(class_type) or {}
        return list(info.get("output") or [])

    def is_output_node(self, class_type: str) -> bool:
        return bool((self._data.get(class_type) or {}).get("output_node"))

    def is_api_node(self, class_type: str) -> bool:
        return bool((self._data.get(class_type) or {}).get("api_node"))

    def display_name(self, class_type: str) -> str:
        info = self._data.get(class_type) or {}
        return str(info.get("display_name") or class_type)


def shown_url(url: str) -> str:
    """A server URL for messages, without any user or password in it."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
