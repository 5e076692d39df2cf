"""Problems found while loading or validating definitions."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One problem: the file it is in, a JSON path inside the definition, and one plain sentence."""

    file: str | None
    path: str
    message: str
    code: str | None = None
    """What kind of problem, where a caller answers it differently (``too_costly``)."""

    def __str__(self) -> str:
        parts = [p for p in (self.file, self.path) if p]
        return ": ".join([*parts, self.message])

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "path": self.path, "message": self.message}


class DefinitionError(Exception):
    """A definition (or a set of them) was refused; ``problems`` says why, every reason at once."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        head = "1 problem" if count == 1 else f"{count} problems"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in self.problems))


def join_path(prefix: str, path: str) -> str:
    """``join_path("[2]", "steps[0]") == "[2].steps[0]"``; either side may be empty."""
    if not prefix:
        return path
    if not path:
        return prefix
    return prefix + (path if path.startswith("[") else "." + path)


__all__ = ["DefinitionError", "Problem", "join_path"]
