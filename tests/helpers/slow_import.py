"""A module that takes ``IMPORT_SECONDS`` to import (a stand-in for an evaluator process starting
and importing the engine on a busy machine); ``echo`` returns its payload."""

from __future__ import annotations

import time
from typing import Any

IMPORT_SECONDS = 2.0
time.sleep(IMPORT_SECONDS)


def echo(payload: Any) -> Any:
    return payload
