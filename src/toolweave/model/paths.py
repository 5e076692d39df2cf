"""Path expressions into JSON values: ``a.b[0]``, ``["key with spaces"]``, ``[-1]``.

Job mappings read earlier outputs with them (``engine/mapping.py``) and the ``http`` service reads
API responses with them. Pure: no I/O.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

_PATH_TOKEN = re.compile(r"""\.?([A-Za-z_][\w-]*)|\[(\d+)\]|\[(-\d+)\]|\[(['"])(.*?)\4\]""")
_MISSING = object()


class PathError(ValueError):
    """A path that does not parse, or that does not lead anywhere in the value it follows."""


@functools.lru_cache(maxsize=2048)
def parse_path(path: str) -> tuple[str | int, ...]:
    """``a.b[0]["c d"]`` → ``("a", "b", 0, "c d")``; raise ``PathError`` on a malformed path."""
    if not isinstance(path, str) or not path.strip():
        raise PathError("a path must be non-empty, like a.b[0]")
    parts: list[str | int] = []
    pos = 0
    while pos < len(path):
        match = _PATH_TOKEN.match(path, pos)
        if not match or match.end() == pos or (pos == 0 and path.startswith(".")):
            raise PathError(f"path {path!r} is malformed at character {pos + 1}; write it like a.b[0]")
        name, index, negative, _, quoted = match.groups()
        if name is not None:
            parts.append(name)
        elif index is not None:
            parts.append(int(index))
        elif negative is not None:
            parts.append(int(negative))
        else:
            parts.append(quoted)
        pos = match.end()
    return tuple(parts)


def follow_path(value: Any, path: str) -> Any:
    """The part of ``value`` at ``path``; raise ``PathError`` naming the first missing part."""
    current = value
    for part in parse_path(path):
        if isinstance(part, int) and isinstance(current, list):
            if -len(current) <= part < len(current):
                current = current[part]
                continue
            raise PathError(f"path {path!r}: index {part} is out of range (the list has {len(current)})")
        if isinstance(part, str) and isinstance(current, Mapping):
            found = current.get(part, _MISSING)
            if found is _MISSING:
                raise PathError(f"path {path!r}: there is no key {part!r}")
            current = found
            continue
        raise PathError(f"path {path!r}: cannot take {part!r} of {type(current).__name__}")
    return current
