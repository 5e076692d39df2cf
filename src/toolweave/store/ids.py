"""Identifiers: time-ordered, URL-safe, unguessable."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
"""Two characters for each 10-bit value: an id is 13 lookups, not 26 (one id per started step)."""
_SHIFTS = tuple(range(120, -1, -10))


def new_id(prefix: str = "") -> str:
    """A 26-character time-ordered id (48 bits of milliseconds, 80 random bits), Crockford base32."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    return prefix + "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])
