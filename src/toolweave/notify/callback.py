"""The ``callback`` channel: a signed POST of a run's final state to the URL given at submit.

The body is JSON::

    {"id": "<notification id>", "type": "run.completed", "createdAt": "...Z",
     "data": {"runId": ..., "status": ..., "jobId": ..., "outputs": {...}, "error": null}}

and the request carries ``X-Toolweave-Signature: t=<unix seconds>,v1=<hex>`` where ``v1`` is
HMAC-SHA256 with the signing secret over ``"<t>." + body`` (the raw bytes). A receiver recomputes
it, compares in constant time and refuses timestamps older than a few minutes (replays).
``X-Toolweave-Delivery`` is the notification id, the same on every retry (deduplicate on it).

Outcome: 2xx is delivered; 408, 429, 5xx, timeouts and network errors are retried by the
dispatcher with backoff (a ``Retry-After`` is honoured); any other status is final. The whole
exchange has one deadline (``timeout``: a receiver answering a byte at a time does not hold the
sender), and the answer's body is not read. Redirects are not followed. Unless ``callback_allow_private_urls`` is set, URLs whose host resolves to a
loopback, private or link-local address are refused (the server must not be usable to reach its
own network).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from toolweave import netguard
from toolweave.notify.dispatcher import DeliveryError

if TYPE_CHECKING:  # httpx itself is imported when a callback is sent (every App makes this channel)
    import httpx

SIGNATURE_HEADER = "X-Toolweave-Signature"
DELIVERY_HEADER = "X-Toolweave-Delivery"
EVENT_HEADER = "X-Toolweave-Event"
DEFAULT_TIMEOUT = 10.0
MAX_RETRY_AFTER = 3600.0


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The header value ``t=<timestamp>,v1=<hex HMAC-SHA256 of "<timestamp>." + body>``."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: bytes, header: str, body: bytes, *, tolerance: float = 300.0, now: float | None = None) -> bool:
    """Check a signature header as a receiver would (used by tests and documented in docs/api.md)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return min(MAX_RETRY_AFTER, max(0.0, float(value)))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(MAX_RETRY_AFTER, max(0.0, when.timestamp() - time.time()))


async def check_url(url: str, *, allow_private: bool) -> None:
    """Refuse (not retryable) a URL that is not http(s) or that points into a private network
    (``netguard.check_url``); a host that does not resolve is retried."""
    try:
        await netguard.check_url(url, allow_private=allow_private, setting=netguard.CALLBACK_SETTING)
    except netguard.UnresolvableHost as exc:
        raise DeliveryError(f"callback URL: {exc}", retryable=True) from None
    except netguard.ForbiddenURL as exc:
        raise DeliveryError(f"callback URL refused: {exc}", retryable=False) from None


def callback_body(notification: Mapping[str, Any], now: float | None = None) -> bytes:
    created = datetime.fromtimestamp(now if now is not None else time.time(), UTC)
    document = {
        "id": notification["notification_id"],
        "type": notification["event_type"],
        "createdAt": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "data": notification.get("payload") or {},
    }
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False, default=str).encode()


class CallbackChannel:
    """Delivers ``callback`` notifications: target ``{"url": ...}``."""

    name = "callback"

    def __init__(
        self,
        http: httpx.AsyncClient | Callable[[], httpx.AsyncClient],
        secret: bytes,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        allow_private: bool = False,
    ) -> None:
        self._http = http
        """The client, or what makes it when a callback is first sent (``App.http``)."""
        self.secret = secret
        self.timeout = timeout
        self.allow_private = allow_private

    @property
    def http(self) -> httpx.AsyncClient:
        import httpx

        return self._http if isinstance(self._http, httpx.AsyncClient) else self._http()

    async def deliver(self, notification: Mapping[str, Any]) -> None:
        import httpx

        target = notification.get("target") or {}
        url = str(target.get("url") or "")
        if not url:
            raise DeliveryError("the notification has no callback URL", retryable=False)
        await check_url(url, allow_private=self.allow_private)
        now = time.time()
        body = callback_body(notification, now)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "toolweave-callback/1",
            SIGNATURE_HEADER: sign(self.secret, int(now), body),
            DELIVERY_HEADER: str(notification["notification_id"]),
            EVENT_HEADER: str(notification["event_type"]),
        }
        try:
            # one deadline for the whole exchange (httpx's timeouts start again with every byte, so
            # a receiver that answers a byte at a time would hold the sender for ever), and the
            # answer's body is never read (its status says all: a huge body costs nothing)
            async with asyncio.timeout(self.timeout), self.http.stream(
                "POST", url, content=body, headers=headers, timeout=self.timeout, follow_redirects=False
            ) as response:
                status = response.status_code
                retry_after = response.headers.get("retry-after")
        except (httpx.TimeoutException, TimeoutError):
            raise DeliveryError(f"the callback receiver did not answer within {self.timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise DeliveryError(f"the callback could not be sent: {type(exc).__name__}: {exc}") from None
        if 200 <= status < 300:
            return
        message = f"the callback receiver answered HTTP {status}"
        if status in (408, 429) or status >= 500:
            raise DeliveryError(message, retryable=True, retry_after=_retry_after(retry_after))
        raise DeliveryError(message, retryable=False)
