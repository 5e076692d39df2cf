"""Fixtures that several test files share, loaded for every test (``pytest_plugins`` in
``tests/conftest.py``); a file that wants another kind under the same name defines its own, which
wins there (``host`` is a ``LocalHost`` in the built-in service tests, ``deploy`` a fake that
misbehaves in the hostile ones)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes.comfydeploy_server import FakeComfyDeploy
from tests.fakes.host import FakeHost


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[FakeHost]:
    """The host a service under test calls back: media in ``tmp_path``, updates recorded."""
    h = FakeHost(tmp_path)
    yield h
    await h.close()


@pytest.fixture
async def deploy() -> AsyncIterator[FakeComfyDeploy]:
    """A ComfyDeploy on loopback that answers as the real one does (no API key asked)."""
    fake = await FakeComfyDeploy().start()
    yield fake
    await fake.stop()
