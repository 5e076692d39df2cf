"""What the attack tests share: a second account's view of the API (uploads, sign-in, listings, waiting
for a run's status)."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import httpx
from PIL import Image


def png(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (32, 24)) -> bytes:
    """A small PNG; different colours give different bytes (and artifact ids)."""
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


async def upload(client: httpx.AsyncClient, data: bytes, filename: str) -> dict[str, Any]:
    """Upload a file as the input of an ``image.resize`` run; returns the stored artifact value (the
    account's own upload)."""
    response = await client.post(
        "/api/v1/runs", data={"toolId": "image.resize", "width": "16"}, files={"image": (filename, data, "image/png")}
    )
    assert response.status_code == 201, response.text
    value: dict[str, Any] = response.json()["jobInputs"]["image"]
    return value


async def web_login(client: httpx.AsyncClient, key: str) -> None:
    """Sign in on the web pages as a browser does: the login form's CSRF token, then the key."""
    page = (await client.get("/login")).text
    csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    response = await client.post("/login", data={"api_key": key, "csrf": csrf})
    assert response.status_code == 303, response.text


async def runs_of(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await client.get("/api/v1/runs", params={"limit": 200})).json()["items"]
    return items


async def run_with_status(client: httpx.AsyncClient, run_id: str, status: str) -> dict[str, Any]:
    """The run as the client reads it, once it has ``status`` (asked every 50 ms, for up to 20 s)."""
    for _ in range(400):
        run: dict[str, Any] = (await client.get(f"/api/v1/runs/{run_id}")).json()
        if run["status"] == status:
            return run
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} is {run['status']}, not {status}")
