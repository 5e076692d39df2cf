"""Identifiers: 26 characters of Crockford base32 after the prefix, the first 48 bits the time in
milliseconds (ids sort by when they were made), the other 80 random."""

from __future__ import annotations

import time

from toolweave.store.ids import _ALPHABET, new_id


def _value(text: str) -> int:
    value = 0
    for char in text:
        value = value * 32 + _ALPHABET.index(char)
    return value


def test_an_id_is_its_prefix_and_26_characters_holding_the_time_and_80_random_bits() -> None:
    before = int(time.time() * 1000)
    made = [new_id("run_") for _ in range(2000)]
    after = int(time.time() * 1000)
    assert all(m.startswith("run_") and len(m) == 30 and set(m[4:]) <= set(_ALPHABET) for m in made)
    values = [_value(m[4:]) for m in made]
    assert all(v < 1 << 128 for v in values)
    assert all(before <= v >> 80 <= after for v in values)
    assert len({v & ((1 << 80) - 1) for v in values}) == len(values)  # the random part differs
    assert sorted(made, key=lambda m: _value(m[4:]) >> 80) == sorted(made, key=lambda m: m[4:14])


def test_every_character_place_is_used() -> None:
    """Each of the 26 places takes every character (no place is stuck, e.g. by a wrong shift)."""
    seen: list[set[str]] = [set() for _ in range(26)]
    for _ in range(4000):
        for place, char in enumerate(new_id()):
            seen[place].add(char)
    assert seen[0] == {"0"}  # the time's top bits (and two more: 26 characters hold 130 bits)
    assert all(len(chars) == 32 for chars in seen[-16:])  # the 80 random bits: the last 16 places
