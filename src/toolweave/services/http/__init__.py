"""The ``http`` service kind: hosted model APIs as tools, described declaratively.

- ``spec``: the call description in a tool's ``metadata.http`` and its checks;
- ``call``: building requests from inputs, reading responses, classifying errors;
- ``service``: ``HttpService``, the ``Service`` of one configured instance.

Instances: the bare ``http`` (tools give full URLs) and the providers below, each configured when
its environment variable is set; any of them can be changed, and more added, in settings::

    [toolweave.services.openai]            # any OpenAI-compatible server: change base_url
    base_url = "http://127.0.0.1:11434/v1"
    headers = {}                           # a local server without a key

    [toolweave.services.myapi]
    kind = "http"
    base_url = "https://api.example.com"
    headers = { Authorization = "Bearer ${MYAPI_KEY}" }
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from toolweave.model.definitions import ToolDefinition
from toolweave.services.base import Service, ServiceHost
from toolweave.services.http.call import Endpoint
from toolweave.services.http.service import HttpService
from toolweave.services.http.spec import check_call
from toolweave.services.plugins import Option, ServiceInstance
from toolweave.settings import Settings

__all__ = ["PROVIDERS", "HttpKind", "HttpService"]

PROVIDERS: dict[str, dict[str, Any]] = {
    "http": {
        "description": "any HTTP API; tools give full URLs (no base URL, no credentials)",
    },
    "openai": {
        "description": "OpenAI (or any OpenAI-compatible server: change base_url)",
        "base_url": "https://api.openai.com/v1",
        "headers": {"Authorization": "Bearer ${OPENAI_API_KEY}"},
    },
    "replicate": {
        "description": "Replicate predictions",
        "base_url": "https://api.replicate.com/v1",
        "headers": {"Authorization": "Bearer ${REPLICATE_API_TOKEN}"},
    },
    "fal": {
        "description": "fal.ai queue",
        "base_url": "https://queue.fal.run",
        "headers": {"Authorization": "Key ${FAL_KEY}"},
    },
    "huggingface": {
        "description": "Hugging Face Inference (serverless or an Inference Endpoint: change base_url)",
        "base_url": "https://router.huggingface.co/hf-inference",
        "headers": {"Authorization": "Bearer ${HF_TOKEN}"},
    },
}
"""Instances of the ``http`` kind that exist without configuration: their base URLs and how they
authenticate, from each provider's public API reference."""


class HttpKind:
    kind = "http"
    description = "a hosted API called as each tool's metadata.http describes"
    options: Mapping[str, Option] = {
        "base_url": Option(str, help="what a tool's request path is appended to"),
        "headers": Option(dict, default={}, help="sent with every request (credentials: ${ENV_VAR})"),
        "query": Option(dict, default={}, help="query parameters sent with every request"),
        "timeout_seconds": Option(float, default=120.0, help="the timeout of one request"),
        "concurrency": Option(int, default=8, help="requests of this service in flight at once"),
    }

    def create(self, instance: ServiceInstance, host: ServiceHost, settings: Settings) -> Service:
        options = instance.options
        endpoint = Endpoint(
            name=instance.name,
            base_url=options.get("base_url") or None,
            headers={str(k): str(v) for k, v in (options.get("headers") or {}).items()},
            query={str(k): str(v) for k, v in (options.get("query") or {}).items()},
            secrets=instance.secrets,
        )
        return HttpService(
            instance.name, host, settings, endpoint,
            timeout_seconds=float(options.get("timeout_seconds") or 120.0),
            concurrency=max(1, int(options.get("concurrency") or 8)),
        )

    def check_tool(self, tool: ToolDefinition, instance: ServiceInstance) -> list[tuple[str, str]]:
        return check_call(tool, has_base_url=bool(instance.options.get("base_url")))
