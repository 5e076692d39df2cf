"""docs/security.md stays true: every setting that limits what a request, an account or a URL can
do, or that is a secret, is in it with its default; every setting it names exists."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from toolweave.settings import Settings

DOC = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text(encoding="utf-8")
LIMIT_WORDS = ("max", "ttl", "depth", "allow_private", "timeout", "budget", "secret", "key", "token")
NOT_LIMITS = {
    "telegram_prompt_timeout_seconds",  # how long the bot waits for an answer: a conversation, not a bound on anyone
}


def test_every_limit_and_secret_setting_is_in_security_md_with_its_default() -> None:
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    limits = [name for name in fields if any(w in name for w in LIMIT_WORDS) and name not in NOT_LIMITS]
    assert "request_max_json_bytes" in limits and "secret_key" in limits  # the rule finds them
    missing = [name for name in limits if f"`{name}`" not in DOC]
    assert missing == [], f"settings missing from docs/security.md: {missing}"
    # a limit's row gives its default
    for name in limits:
        field = fields[name]
        default = field.default
        if isinstance(default, int | float) and not isinstance(default, bool):
            row = next(line for line in DOC.splitlines() if f"`{name}`" in line and line.startswith("|"))
            assert "(" in row, f"the row of {name} gives no default: {row}"


def test_every_setting_security_md_names_exists() -> None:
    fields = {f.name for f in dataclasses.fields(Settings)}
    named = set(re.findall(r"`([a-z]+(?:_[a-z0-9]+)+)` \((?:default|\d)", DOC))  # `setting` (default)
    named |= set(re.findall(r"^\| `([a-z]+(?:_[a-z0-9]+)+)`", DOC, re.MULTILINE))  # a row that starts with a setting
    assert named, "the pattern finds nothing: the test would mean nothing"
    assert sorted(named - fields) == []
