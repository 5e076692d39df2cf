"""Property-based tests of the HTTP API against its own OpenAPI document (schemathesis).

The server runs for real on loopback (uvicorn, embedded worker, SQLite) in a thread of its own;
schemathesis generates requests from the spec, sends them with an API key, and checks every
response: no 5xx, statuses, content types, headers and bodies as documented.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks
from tests.integration.test_api import running_server

from toolweave.api import create_app
from toolweave.app import App

MAX_EXAMPLES = 25


class _ServerThread(threading.Thread):
    def __init__(self, home: Path) -> None:
        super().__init__(daemon=True, name="schemathesis-server")
        self.home = home
        self.ready = threading.Event()
        self.info: dict[str, Any] = {}
        self.error: BaseException | None = None
        self._stopping: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to the fixture
            self.error = exc
            self.ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        async with running_server(self.home) as server:
            self.info = {"url": server.url, "key": server.alice}
            self.ready.set()
            await self._stopping.wait()

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self.join(30)


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    thread = _ServerThread(tmp_path_factory.mktemp("schemathesis") / "home")
    thread.start()
    assert thread.ready.wait(60), "the server did not start"
    if thread.error is not None:
        raise thread.error
    try:
        yield thread.info
    finally:
        thread.stop()


# The document does not depend on any data: build it from the routes, without a store.
schema = schemathesis.openapi.from_dict(create_app(cast(App, None), run_worker=False).openapi())


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_conforms_to_its_spec(case: Any, live_api: dict[str, Any]) -> None:
    headers = {"Authorization": f"Bearer {live_api['key']}"}
    if case.path.endswith("/events"):
        headers["Accept"] = "text/event-stream"
    # positive_data_acceptance is left out: whether a run's `inputs` are valid depends on the
    # chosen tool's own input schema (served by GET /tools/{id}), which the static document cannot
    # express; such requests get a 422 problem naming each field, as they should.
    case.call_and_validate(
        base_url=live_api["url"], headers=headers, timeout=20, excluded_checks=[checks.positive_data_acceptance]
    )
