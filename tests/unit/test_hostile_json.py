"""A backend's answer nested deeper than Python's JSON reader goes (``RecursionError``, not a
``ValueError``) is a ``bad_response`` like any other answer that is not JSON."""

from __future__ import annotations

import httpx
import pytest

from toolweave.services.base import ServiceError
from toolweave.services.http.call import read_body

DEEP = b"[" * 100_000


def test_read_body_names_deep_json_a_bad_response() -> None:
    response = httpx.Response(200, content=DEEP, headers={"content-type": "application/json"})
    with pytest.raises(ServiceError) as raised:
        read_body(response, "json", "the API")
    assert raised.value.code == "bad_response" and raised.value.retryable
