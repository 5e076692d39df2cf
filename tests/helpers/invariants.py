"""Engine invariants that tests check after crash and chaos tests."""

from __future__ import annotations

from toolweave.engine.sweep import stranded
from toolweave.store.db import Store


def assert_no_stranded_runs(store: Store) -> None:
    """Every unfinished run has an advance task, a waiting generation or an unfinished child run."""
    found = store.read_sync(stranded, 1000)
    assert found == [], f"runs nothing will move: {found[:10]}"
