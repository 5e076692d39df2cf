"""A module whose ``prepare()`` (an evaluator process's one-off work) takes ``PREPARE_SECONDS`` the
first time it runs in a process; ``echo`` returns its payload and how many times ``prepare`` ran."""

from __future__ import annotations

import time
from typing import Any

PREPARE_SECONDS = 2.0
_prepared = 0


def prepare() -> None:
    global _prepared
    if not _prepared:
        time.sleep(PREPARE_SECONDS)
    _prepared += 1


def echo(payload: Any) -> Any:
    return {"payload": payload, "prepared": _prepared}
