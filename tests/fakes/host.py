"""The shared test host (``tests/helpers/host.LocalHost``) with the two conveniences the
ComfyUI service tests use: updates grouped by generation, and waiting for one generation's."""

from __future__ import annotations

from collections.abc import Callable

from tests.helpers.host import LocalHost
from toolweave.model.records import RunUpdate


class FakeHost(LocalHost):
    @property
    def updates(self) -> dict[str, list[RunUpdate]]:
        grouped: dict[str, list[RunUpdate]] = {}
        for generation_id, update in self.reports:
            grouped.setdefault(generation_id, []).append(update)
        return _Grouped(grouped)

    async def wait_for(
        self, generation_id: str, predicate: Callable[[RunUpdate], bool], seconds: float = 20.0
    ) -> RunUpdate:
        _, update = await self.wait_report(
            lambda g, u: g == generation_id and predicate(u), wait_seconds=seconds
        )
        return update

    async def close(self) -> None:
        await self.aclose()


class _Grouped(dict[str, list[RunUpdate]]):
    def __missing__(self, key: str) -> list[RunUpdate]:
        return []
