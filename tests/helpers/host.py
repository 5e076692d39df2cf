"""A real ``ServiceHost`` for tests of service adapters.

``LocalHost`` keeps artifacts in a real ``ArtifactStore`` under a temporary folder, fetches URLs
with a real ``httpx.AsyncClient``, decodes data: URIs, and records every ``report`` so a test can
wait for the updates a streaming adapter pushes::

    async with LocalHost(tmp_path) as host:
        service = BuiltinService(host)
        ref = host.put_image(Image.new("RGB", (64, 48), "red"))
        sub = await service.submit(generation_context(tool, {"image": ref}))
        gen_id, update = await host.wait_report(lambda g, u: u.status.terminal)

Nothing here is a mock: only the backends on the other side of the network are stand-ins.
"""

from __future__ import annotations

import asyncio
import base64
import io
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx

from toolweave.artifacts import ArtifactStore, sniff_mime
from toolweave.model.definitions import ToolDefinition
from toolweave.model.records import ArtifactRef, RunUpdate
from toolweave.sandbox import EvaluationPool
from toolweave.services.base import GenerationContext

ReportPredicate = Callable[[str, RunUpdate], bool]


def decode_data_uri(uri: str) -> tuple[bytes, str]:
    """``data:[<mime>][;base64],<payload>`` → bytes and mime type (``ValueError`` when malformed)."""
    if not uri.startswith("data:"):
        raise ValueError("not a data: URI")
    header, sep, payload = uri[5:].partition(",")
    if not sep:
        raise ValueError("a data: URI needs a comma before its payload")
    parts = header.split(";")
    mime = parts[0] or "text/plain"
    if "base64" in parts[1:]:
        try:
            return base64.b64decode(payload, validate=True), mime
        except ValueError as exc:
            raise ValueError("a data: URI with invalid base64") from exc
    return unquote(payload).encode(), mime


def data_uri(data: bytes, mime_type: str) -> str:
    return f"data:{mime_type};base64,{base64.b64encode(data).decode()}"


class LocalHost:
    """What the engine gives a service, built from real parts in a folder of its own."""

    def __init__(
        self,
        root: Path,
        *,
        http: httpx.AsyncClient | None = None,
        public_base_url: str | None = None,
        http_timeout: float = 10.0,
    ) -> None:
        self.root = Path(root)
        self.artifacts = ArtifactStore(self.root / "artifacts")
        self._own_http = http is None
        self.http = http if http is not None else httpx.AsyncClient(timeout=http_timeout)
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None
        self.reports: list[tuple[str, RunUpdate]] = []
        self._changed = asyncio.Event()
        self.loaded: list[Any] = []
        """Every value passed to ``load_media``, in order (to check what an adapter asked for)."""
        self.evaluator = EvaluationPool(1)

    # --- ServiceHost -----------------------------------------------------------------------

    async def report(self, generation_id: str, update: RunUpdate) -> None:
        self.reports.append((generation_id, update))
        self._changed.set()

    async def load_media(self, value: Any) -> tuple[bytes, str]:
        self.loaded.append(value)
        ref = ArtifactRef.from_value(value)
        if ref is not None:
            return self.artifacts.read(ref), ref.mime_type
        if not isinstance(value, str):
            raise ValueError(f"not a media value: {type(value).__name__}")
        if value.startswith("artifact:"):
            sha = value.removeprefix("artifact:")
            return self.artifacts.read(sha), self.artifacts.ref(sha).mime_type
        if value.startswith("data:"):
            return decode_data_uri(value)
        if value.startswith(("http://", "https://")):
            if self.public_base_url and value.startswith(self.public_base_url + "/artifacts/"):
                sha = value.rsplit("/", 1)[1]
                return self.artifacts.read(sha), self.artifacts.ref(sha).mime_type
            response = await self.http.get(value, follow_redirects=True)
            response.raise_for_status()
            mime = response.headers.get("content-type", "").split(";", 1)[0].strip()
            data = response.content
            return data, mime or sniff_mime(data, value.rsplit("/", 1)[-1])
        raise ValueError(f"not a media value: {value[:60]!r} (expected an artifact, a URL or a data: URI)")

    def media_url(self, ref: ArtifactRef) -> str:
        if self.public_base_url:
            return f"{self.public_base_url}/artifacts/{ref.sha256}"
        return data_uri(self.artifacts.read(ref), ref.mime_type)

    # --- conveniences for tests -------------------------------------------------------------

    def put_bytes(self, data: bytes, mime_type: str | None = None, filename: str | None = None) -> dict[str, Any]:
        """Store bytes; returns the artifact value a service receives as input."""
        return self.artifacts.put_bytes(data, mime_type, filename).as_value()

    def put_image(self, image: Any, fmt: str = "PNG", **save_options: Any) -> dict[str, Any]:
        """Store a Pillow image (encoded as ``fmt``); returns its artifact value."""
        buf = io.BytesIO()
        image.save(buf, fmt, **save_options)
        return self.put_bytes(buf.getvalue(), filename=f"input.{fmt.lower()}")

    def read(self, value: dict[str, Any]) -> bytes:
        """The bytes of an artifact value (e.g. a service output)."""
        ref = ArtifactRef.from_value(value)
        if ref is None:
            raise ValueError(f"not an artifact value: {value!r}")
        return self.artifacts.read(ref)

    def open_image(self, value: dict[str, Any]) -> Any:
        """A loaded Pillow image of an artifact value."""
        from PIL import Image

        img = Image.open(io.BytesIO(self.read(value)))
        img.load()
        return img

    def reports_for(self, generation_id: str) -> list[RunUpdate]:
        return [u for g, u in self.reports if g == generation_id]

    async def wait_report(
        self, predicate: ReportPredicate | None = None, *, wait_seconds: float = 10.0, start: int = 0
    ) -> tuple[str, RunUpdate]:
        """The first report (from index ``start``) that matches ``predicate``; waits for it."""
        deadline = time.monotonic() + wait_seconds
        index = start
        while True:
            while index < len(self.reports):
                gen_id, update = self.reports[index]
                index += 1
                if predicate is None or predicate(gen_id, update):
                    return gen_id, update
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no matching report within {wait_seconds:g}s ({len(self.reports)} reports seen)")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                continue

    async def aclose(self) -> None:
        self.evaluator.close()
        if self._own_http:
            await self.http.aclose()

    async def __aenter__(self) -> LocalHost:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def generation_context(
    tool: ToolDefinition,
    inputs: dict[str, Any] | None = None,
    *,
    generation_id: str | None = None,
    run_id: str = "run-1",
    step_id: str = "step-1",
    attempt: int = 1,
    account_id: str = "account-1",
    platform_run_id: str | None = None,
    webhook_url: str | None = None,
    timeout_seconds: float = 60.0,
    recovering: bool = False,
) -> GenerationContext:
    """A ``GenerationContext`` with sensible test values (a fresh generation id unless given)."""
    return GenerationContext(
        generation_id=generation_id or f"gen-{uuid.uuid4().hex[:12]}",
        run_id=run_id,
        step_id=step_id,
        attempt=attempt,
        account_id=account_id,
        tool=tool,
        inputs=dict(inputs or {}),
        platform_run_id=platform_run_id,
        webhook_url=webhook_url,
        timeout_seconds=timeout_seconds,
        recovering=recovering,
    )
