"""The one protocol every backend adapter implements, and what the engine gives it.

A service turns a prepared generation into a platform run and reports back one normalised
``RunUpdate``. Synchronous services (``builtin``) return the final update from ``submit``;
asynchronous ones return their platform run id, which the engine stores before anything waits.
Later updates come from ``poll`` (the engine schedules poll tasks with backoff) or from webhooks
that the engine hands to ``parse_webhook``; long-lived streams (ComfyUI's websocket) push
updates through ``ServiceHost.report``. All three paths end in the same engine entry point.

Foreign errors are converted here, at the boundary, into ``ServiceError`` — retryable or not.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from toolweave.artifacts import ArtifactStore
from toolweave.model.definitions import ToolDefinition
from toolweave.model.records import ArtifactRef, RunUpdate, ServiceErrorInfo
from toolweave.sandbox import EvaluationPool

if TYPE_CHECKING:
    import httpx


def retry_after_header(header: str | None, now: float) -> float | None:
    """Seconds to wait from an HTTP ``Retry-After`` value (seconds, or an HTTP date), or None when
    there is none that makes sense (not a number nor a date, infinite, NaN). Never below 0."""
    import email.utils
    import math

    if not header:
        return None
    text = str(header).strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - now
    return max(0.0, seconds) if math.isfinite(seconds) else None


async def read_at_most(chunks: AsyncIterable[bytes], limit: int, too_large: Callable[[], Exception]) -> bytes:
    """A streamed body (``response.aiter_bytes()``) read whole, up to ``limit`` bytes: past it,
    ``too_large()`` is raised and the rest is not read."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise too_large()
        parts.append(chunk)
    return b"".join(parts)


class ServiceError(Exception):
    """A failure at a backend, classified: ``retryable`` errors may succeed if tried again.

    Raised from ``poll``, a retryable error means "no answer this time, poll again" — except
    with ``code="lost"``: the backend no longer knows the run, and the generation fails
    (retryably, so a retry policy may submit it again). ``retry_after`` is the backend's own word
    on when to try again (HTTP ``Retry-After``): a step retry and the next poll wait at least that.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        code: str | None = None,
        node: str | None = None,
        details: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.code = code
        self.node = node
        self.details = details
        self.retry_after = retry_after

    def info(self) -> ServiceErrorInfo:
        return ServiceErrorInfo(
            message=self.message, retryable=self.retryable, code=self.code, node=self.node, details=self.details,
            retry_after_seconds=self.retry_after,
        )


class NotHeld(Exception):
    """Raised by ``GenerationContext.sending``: this worker no longer holds the generation's dispatch
    (its lease ran out and another worker took it over). The service must send nothing; the
    engine records nothing for this call (the dispatch is the other worker's now)."""


class WebhookRejected(Exception):
    """A webhook body that is not a valid update (garbage, wrong shape). Nothing is changed."""


@dataclass(frozen=True)
class GenerationContext:
    """Everything a service needs about one generation (one attempt of one tool)."""

    generation_id: str
    run_id: str
    step_id: str
    attempt: int
    account_id: str
    tool: ToolDefinition
    inputs: dict[str, Any]
    """Resolved inputs; media values are ``ArtifactRef.as_value()`` dicts or http(s) URLs."""
    platform_run_id: str | None = None
    """Set when polling, cancelling or re-attaching to a submitted run."""
    webhook_url: str | None = None
    """Where the backend should send updates about this generation (None: no public URL)."""
    timeout_seconds: float = 600.0
    recovering: bool = False
    """True when an earlier submit of this generation may have reached the backend (a worker died
    between recording the intent and recording the platform run id). A service that accepts
    client-chosen ids must re-attach instead of submitting again. For a service that marks before
    sending (``marks_sending``), only when an earlier submit got as far as its mark (``sending``);
    for any other, whenever an earlier lease of the dispatch ended without a record."""
    on_sending: Callable[[], Awaitable[bool]] | None = field(default=None, repr=False, compare=False)
    """What ``sending`` calls (the worker's mark; None: nothing to mark, e.g. a direct call)."""

    async def sending(self) -> None:
        """Call right before the request that makes the backend act (and may cost money) goes on
        the network, after everything that can fail without sending: the engine durably marks the
        generation as possibly sent, so that after a crash a dispatch that never got here is sent
        normally instead of being taken for one that may have reached the backend. Only services
        whose class says ``marks_sending = True`` are trusted to call it. Raises ``NotHeld`` when
        this worker no longer holds the dispatch: then send nothing."""
        if self.on_sending is not None and not await self.on_sending():
            raise NotHeld(f"generation {self.generation_id}: the dispatch is no longer this worker's")


@dataclass
class Submission:
    platform_run_id: str | None = None
    update: RunUpdate | None = None
    """A synchronous service's final update; None means: wait for poll, webhook or stream."""
    poll_after_seconds: float | None = None
    """When to poll first (None: the engine's default)."""


@dataclass
class WebhookUpdate:
    """What a webhook says, once parsed: which platform run, and the update."""

    platform_run_id: str
    update: RunUpdate
    event_key: str | None = None
    """A key that identifies this exact event, for deduplication (None: derived from the body)."""


class ServiceHost(Protocol):
    """What the engine gives a service."""

    artifacts: ArtifactStore
    evaluator: EvaluationPool
    """Evaluator processes for what users write (templates that may loop): bounded, and off the
    event loop. Started on their first call."""

    @property
    def http(self) -> httpx.AsyncClient:
        """The HTTP client for backends (the engine makes it when first asked for)."""

    async def report(self, generation_id: str, update: RunUpdate) -> None:
        """Hand an update about a generation to the engine (same entry point as webhooks)."""

    async def load_media(self, value: Any) -> tuple[bytes, str]:
        """Bytes and mime type of a media input: an artifact ref, an http(s) URL, a data: URI."""

    def media_url(self, ref: ArtifactRef) -> str:
        """A URL a remote backend can fetch the artifact from (public URL, else a data: URI)."""


@runtime_checkable
class Service(Protocol):
    name: str
    """A service may also say ``marks_sending = True`` (a class attribute): its ``submit`` awaits
    ``gen.sending()`` right before it sends (``GenerationContext.sending``), so its ``recovering``
    is true only when an earlier submit got that far. A service without it (builtins, plugins that
    never mark) is told ``recovering`` whenever an earlier lease of the dispatch ended unrecorded."""

    async def submit(self, gen: GenerationContext) -> Submission: ...

    async def poll(self, gen: GenerationContext) -> RunUpdate: ...

    async def cancel(self, gen: GenerationContext) -> None: ...

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookUpdate: ...

    async def close(self) -> None: ...


@dataclass
class ServiceConfig:
    """Options of one configured service instance (from settings)."""

    name: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)
