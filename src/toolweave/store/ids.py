"""Identifiers: time-ordered, URL-safe, unguessable."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_PAIRS = tuple(a + b for a in _ALPHABET for b in _ALPHABET)
"""Every two characters, by the 10 bits they stand for."""


def new_id(prefix: str = "") -> str:
    """A 26-character time-ordered id (48 bits of milliseconds, 80 random bits), Crockford base32."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    pairs = _PAIRS
    return prefix + "".join((
        pairs[value >> 120], pairs[(value >> 110) & 1023], pairs[(value >> 100) & 1023], pairs[(value >> 90) & 1023],
        pairs[(value >> 80) & 1023], pairs[(value >> 70) & 1023], pairs[(value >> 60) & 1023],
        pairs[(value >> 50) & 1023], pairs[(value >> 40) & 1023], pairs[(value >> 30) & 1023],
        pairs[(value >> 20) & 1023], pairs[(value >> 10) & 1023], pairs[value & 1023],
    ))
