"""The HTTP API, the live progress stream and the web pages (FastAPI). ``create_app(app, ...)``."""

from toolweave.api.server import create_app

__all__ = ["create_app"]
