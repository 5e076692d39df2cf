"""The shared test host (tests/helpers/host.py) behaves like the engine's host."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tests.helpers import LocalHost, data_uri, decode_data_uri

from toolweave.model.records import ArtifactRef, RunUpdate
from toolweave.model.status import GenerationStatus


async def test_reports_can_be_awaited(tmp_path: Path) -> None:
    async with LocalHost(tmp_path) as host:
        async def later() -> None:
            await asyncio.sleep(0.01)
            await host.report("g1", RunUpdate(status=GenerationStatus.PROCESSING, progress=0.5))
            await host.report("g1", RunUpdate(status=GenerationStatus.COMPLETED))

        task = asyncio.create_task(later())
        gen_id, update = await host.wait_report(lambda g, u: u.status.terminal, wait_seconds=5)
        await task
        assert gen_id == "g1" and update.status is GenerationStatus.COMPLETED
        assert [u.status for u in host.reports_for("g1")] == [GenerationStatus.PROCESSING, GenerationStatus.COMPLETED]
        with pytest.raises(TimeoutError):
            await host.wait_report(lambda g, u: g == "other", wait_seconds=0.05)


async def test_media_round_trips(tmp_path: Path) -> None:
    async with LocalHost(tmp_path) as host:
        value = host.put_bytes(b"hello", "text/plain", "a.txt")
        ref = ArtifactRef.from_value(value)
        assert ref is not None
        assert await host.load_media(value) == (b"hello", "text/plain")
        assert await host.load_media(ref.uri) == (b"hello", "text/plain")
        url = host.media_url(ref)
        assert url.startswith("data:text/plain;base64,")
        assert await host.load_media(url) == (b"hello", "text/plain")
        assert decode_data_uri("data:,a%20b") == (b"a b", "text/plain")
        assert decode_data_uri(data_uri(b"\x00\x01", "application/x")) == (b"\x00\x01", "application/x")
        with pytest.raises(ValueError):
            await host.load_media("/etc/hostname")
    async with LocalHost(tmp_path, public_base_url="http://example.test/") as host:
        ref = ArtifactRef.from_value(host.put_bytes(b"x"))
        assert ref is not None
        assert host.media_url(ref) == f"http://example.test/artifacts/{ref.sha256}"
        assert (await host.load_media(host.media_url(ref)))[0] == b"x"
