"""What a service plugin provides: a kind of service, its declared options, a factory.

A Python package adds a service to toolweave without editing it, through the entry point group
``toolweave.services``; the entry point's name is the kind and its object (or a class, which is
instantiated without arguments) satisfies ``ServiceKind``::

    # pyproject.toml of the plugin
    [project.entry-points."toolweave.services"]
    echo = "toolweave_echo:EchoKind"

An instance named after the kind exists by itself; more instances are configured as
``[toolweave.services.NAME]`` tables with ``kind = "echo"``. Options are declared (``Option``) and
checked when the instance is built: an unknown option, a missing required one or a value of the
wrong type makes the instance "not configured", with the reason, and tools naming it do not
validate. Option values may name environment variables as ``${VAR}``; those values are secrets
(``ServiceInstance.secrets``) that the plugin must keep out of messages and stored payloads.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from toolweave.model.definitions import ToolDefinition
from toolweave.services.base import Service, ServiceHost
from toolweave.settings import Settings

ENTRY_POINT_GROUP = "toolweave.services"

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


@dataclass(frozen=True)
class Option:
    """One setting of a service kind."""

    type: type = str
    """``str``, ``int``, ``float``, ``bool``, ``dict`` (a table) or ``list``."""
    default: Any = None
    required: bool = False
    help: str = ""


@runtime_checkable
class ServiceKind(Protocol):
    """A kind of service (``http``, or a plugin's)."""

    kind: str
    description: str
    options: Mapping[str, Option]

    def create(self, instance: ServiceInstance, host: ServiceHost, settings: Settings) -> Service:
        """The service for one configured instance (called once per process)."""
        ...

    def check_tool(self, tool: ToolDefinition, instance: ServiceInstance) -> list[tuple[str, str]]:
        """Problems of a tool naming this service, as ``(JSON path, sentence)``; ``[]`` when none."""
        ...


@dataclass
class ServiceInstance:
    """A named service of some kind, with its options resolved (or the reason it cannot run)."""

    name: str
    kind: str
    origin: str
    """Where it comes from: ``builtin``, ``settings``, or ``plugin <distribution>``."""
    options: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None
    """Why it is not configured (None: ready)."""
    secrets: frozenset[str] = frozenset()
    """Values taken from environment variables (never to be shown or stored)."""
    description: str = ""

    @property
    def configured(self) -> bool:
        return self.problem is None


class MissingVariables(ValueError):
    def __init__(self, names: list[str]) -> None:
        super().__init__(", ".join(names))
        self.names = names


def expand(value: Any, env: Mapping[str, str], secrets: set[str], missing: list[str]) -> Any:
    """``${VAR}`` and ``${VAR:-default}`` replaced from ``env`` inside strings (recursively in
    tables and lists); the values taken are added to ``secrets``, unset names to ``missing``."""
    if isinstance(value, str):

        def one(match: re.Match[str]) -> str:
            name, fallback = match.group(1), match.group(2)
            found = env.get(name)
            if found is None or found == "":
                if fallback is not None:
                    return fallback
                if name not in missing:
                    missing.append(name)
                return ""
            secrets.add(found)
            return found

        return _VARIABLE.sub(one, value)
    if isinstance(value, Mapping):
        return {str(k): expand(v, env, secrets, missing) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v, env, secrets, missing) for v in value]
    return value


def _coerce(name: str, option: Option, value: Any) -> Any:
    kind = option.type
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
    elif kind in (int, float):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return kind(value)
        if isinstance(value, str):
            try:
                return kind(value.strip())
            except ValueError:
                pass
    elif kind is dict:
        if isinstance(value, Mapping):
            return dict(value)
    elif kind is list:
        if isinstance(value, list):
            return value
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"option {name!r} must be {kind.__name__}, not {value!r}")


def resolve_options(
    declared: Mapping[str, Option], given: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], frozenset[str], str | None]:
    """Options checked against their declaration and expanded from the environment.

    Returns ``(options, secrets, problem)``; ``problem`` names every unknown, missing or ill-typed
    option and every unset environment variable, in one sentence."""
    env = os.environ if env is None else env
    problems: list[str] = []
    unknown = sorted(set(given) - set(declared) - {"kind"})
    if unknown:
        known = ", ".join(sorted(declared)) or "none"
        problems.append(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} (options: {known})")
    secrets: set[str] = set()
    missing: list[str] = []
    out: dict[str, Any] = {}
    for name, option in declared.items():
        value = given.get(name, option.default)
        value = expand(value, env, secrets, missing)
        if value is None or value == "":
            if option.required:
                problems.append(f"option {name!r} is required")
            out[name] = option.default
            continue
        try:
            out[name] = _coerce(name, option, value)
        except ValueError as exc:
            problems.append(str(exc))
    if missing:
        problems.append(
            f"environment variable{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"{'are' if len(missing) > 1 else 'is'} not set"
        )
    return out, frozenset(s for s in secrets if s), "; ".join(problems) or None


def load_entry_points() -> list[tuple[str, str, Any]]:
    """``(kind, distribution, loaded object or the exception)`` for every installed plugin."""
    from importlib.metadata import entry_points

    found: list[tuple[str, str, Any]] = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        dist = point.dist.name if point.dist is not None else "?"
        try:
            obj = point.load()
            if isinstance(obj, type):
                obj = obj()
        except Exception as exc:  # a broken plugin must not stop toolweave
            found.append((point.name, dist, exc))
            continue
        found.append((point.name, dist, obj))
    return found
