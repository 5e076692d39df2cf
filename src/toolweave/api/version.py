"""The installed package version (for the OpenAPI document)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("toolweave")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"
