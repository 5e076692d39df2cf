"""Shared test helpers: a real ``ServiceHost`` (``LocalHost``) and loopback servers."""

from tests.helpers.host import LocalHost, data_uri, decode_data_uri, generation_context
from tests.helpers.loopback import serve_asgi

__all__ = ["LocalHost", "data_uri", "decode_data_uri", "generation_context", "serve_asgi"]
