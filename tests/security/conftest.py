"""Fixtures of the attack tests: the real API on loopback (embedded worker) on each store, with keys
for two accounts, ``alice`` (the victim) and ``bob`` (the attacker), and the admin key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.integration.test_api import Server, running_server


@pytest.fixture
async def server(tmp_path: Path, db_url: str) -> AsyncIterator[Server]:
    """The API on SQLite and on PostgreSQL."""
    async with running_server(tmp_path / "home", database_url=db_url) as srv:
        yield srv
