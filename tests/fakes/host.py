"""A minimal ``ServiceHost`` for service tests: a real artifact store and HTTP client, and a
``report`` that collects updates (used until the shared host in ``tests/helpers`` exists)."""

from __future__ import annotations

import asyncio
import base64
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from toolweave.artifacts import ArtifactStore, sniff_mime
from toolweave.model.records import ArtifactRef, RunUpdate


class FakeHost:
    def __init__(self, root: Path, public_base_url: str | None = None) -> None:
        self.artifacts = ArtifactStore(root / "artifacts")
        self.http = httpx.AsyncClient()
        self.public_base_url = public_base_url
        self.updates: dict[str, list[RunUpdate]] = defaultdict(list)
        self._changed = asyncio.Condition()

    async def report(self, generation_id: str, update: RunUpdate) -> None:
        async with self._changed:
            self.updates[generation_id].append(update)
            self._changed.notify_all()

    async def wait_for(
        self, generation_id: str, predicate: Callable[[RunUpdate], bool], seconds: float = 20.0
    ) -> RunUpdate:
        async def find() -> RunUpdate:
            async with self._changed:
                while True:
                    for update in self.updates[generation_id]:
                        if predicate(update):
                            return update
                    await self._changed.wait()

        return await asyncio.wait_for(find(), seconds)

    async def load_media(self, value: Any) -> tuple[bytes, str]:
        ref = ArtifactRef.from_value(value)
        if ref is not None:
            return self.artifacts.read(ref), ref.mime_type
        if isinstance(value, str) and value.startswith("data:"):
            head, _, payload = value.partition(",")
            return base64.b64decode(payload), head[5:].split(";", 1)[0]
        if isinstance(value, str) and value.startswith(("http://", "https://")):
            response = await self.http.get(value)
            response.raise_for_status()
            return response.content, response.headers.get("content-type") or sniff_mime(response.content)
        raise ValueError(f"not a media value: {value!r}")

    def media_url(self, ref: ArtifactRef) -> str:
        if self.public_base_url:
            return f"{self.public_base_url}/artifacts/{ref.sha256}"
        data = base64.b64encode(self.artifacts.read(ref)).decode()
        return f"data:{ref.mime_type};base64,{data}"

    async def close(self) -> None:
        await self.http.aclose()
