"""Settings from environment variables ``TOOLWEAVE_*`` and an optional ``toolweave.toml``.

Precedence: explicit arguments, then environment variables, then ``toolweave.toml`` (looked up
in the working directory, then in ``TOOLWEAVE_HOME``), then defaults. All state lives under one
data folder, ``TOOLWEAVE_HOME``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from decimal import Decimal
from pathlib import Path
from typing import Any

from toolweave.model.rates import DEFAULT_GPU_RATES


@dataclass
class ComfyServer:
    name: str
    base_url: str
    concurrency: int = 1


@dataclass
class Settings:
    home: Path = field(default_factory=lambda: Path.home() / ".toolweave")
    database_url: str | None = None
    """SQLAlchemy URL; None means the embedded SQLite file under ``home``."""
    definitions: list[Path] = field(default_factory=list)
    """Folders and files of tool and job definitions (``TOOLWEAVE_DEFINITIONS``, os.pathsep-separated)."""
    public_base_url: str | None = None
    """The URL at which backends can reach this server (webhooks, media URLs)."""
    secret_key: str | None = None
    """Signs webhook tokens; generated and kept under ``home`` when not set."""
    admin_key: str | None = None
    callback_signing_secret: str | None = None
    """Signs run callbacks (HMAC-SHA256); None means the app secret (``secret_key`` or the generated one)."""
    callback_allow_private_urls: bool = False
    """Let run callbacks go to loopback, private and link-local addresses (off: SSRF guard)."""
    comfyui_servers: list[ComfyServer] = field(default_factory=list)
    comfyui_default_server: str | None = None
    comfydeploy_api_key: str | None = None
    comfydeploy_base_url: str = "https://api.comfydeploy.com/api"
    telegram_token: str | None = None
    telegram_webhook_secret: str | None = None
    telegram_max_runs_in_flight: int = 3
    telegram_api_url: str = "https://api.telegram.org"
    """The Bot API server (a local Bot API server or a test double may stand in)."""
    telegram_prompt_timeout_seconds: float = 300.0
    """How long the bot waits for a missing input it asked for."""
    telegram_edit_interval_seconds: float = 2.0
    """At most one edit of a run's status message per this many seconds (Telegram's limits)."""
    notification_horizon_seconds: float = 86400.0
    """How long a notification (a chat message, a run's results, a callback) is retried before it
    is given up (logged at ERROR; ``toolweave notifications undelivered`` lists it)."""
    notification_max_backoff_seconds: float = 300.0
    """The longest wait between two attempts of a notification (the first is 2 s, then doubling)."""
    machine_rates: dict[str, Decimal] = field(default_factory=lambda: dict(DEFAULT_GPU_RATES))
    credits_by_default: bool = False
    """Whether an account pays for its runs from a credit balance unless an administrator said
    otherwise for it (off: only accounts given credits, or turned on, pay; the others run as before).
    See docs/credits.md."""
    credits_confirm_above: Decimal | None = None
    """The estimate above which the Telegram bot asks before it starts a run (none: never asks);
    accounts may have their own."""
    estimate_fallback_seconds: float = 60.0
    """The duration an estimate assumes for a machine-rate tool with no completed generations yet."""
    account_max_runs_in_flight: int = 0
    """Runs (queued or running) an account may have at once; 0: no limit. Accounts may have their own."""
    account_submits_per_minute: int = 0
    """Runs an account may submit per minute; 0: no limit. Accounts may have their own."""
    sse_max_streams_per_account: int = 32
    """Event streams (``GET /api/v1/runs/{id}/events``, the run page's live updates) an account may
    have open at once on one API process; more answer 429. 0: no limit."""
    worker_slots: int = 8
    lease_seconds: float = 30.0
    """How long a worker's claim on a task lasts without a heartbeat; a dead worker's tasks are
    taken over by others after this long."""
    sweep_seconds: float = 60.0
    """How often a worker looks for stranded runs (unfinished, with nothing that will move them)
    and repairs them; 0 turns the sweep off."""
    retention_days: float = 0.0
    """Workers prune runs that finished more than this many days ago (``toolweave prune``), with
    the artifacts nothing refers to any more; 0 turns periodic pruning off."""
    prune_every_minutes: float = 60.0
    """Periodic pruning runs at most this often, on one worker at a time."""
    condition_budget_ms: float = 100.0
    """CPU time a step's condition may take to evaluate; past it the step fails (``evaluation_budget``)."""
    template_budget_ms: float = 100.0
    """CPU time a step's templates may take to render, together; past it the step fails."""
    evaluation_processes: int = 2
    """Evaluator processes per worker: conditions and templates run there, never on the event loop."""
    test_tools: bool = False
    """Register the test-only tools (instant, sleep, fail-n-times, slow asynchronous)."""
    media_max_bytes: int = 50 * 1024 * 1024
    media_local_roots: list[Path] = field(default_factory=list)
    """Folders ``media.fetch`` may read local files from (none by default: local paths refused)."""
    media_allow_private_urls: bool = False
    """Let ``media.fetch`` reach loopback, private and link-local addresses (off: SSRF guard)."""
    media_url_ttl_seconds: float = 6 * 3600.0
    """How long a signed media URL handed to a backend (``/media/...``) stays valid."""
    input_max_depth: int = 32
    """How deeply lists and objects may nest inside one input value; deeper is refused at submit."""
    request_max_json_bytes: int = 8 * 1024 * 1024
    """The largest JSON (or form-encoded) request body the HTTP API reads; larger answers 413.
    Send bigger files as multipart uploads."""
    request_max_bytes: int = 64 * 1024 * 1024
    """The largest request body of any kind (multipart uploads); larger answers 413."""
    http_timeout_seconds: float = 30.0
    http_header_timeout_seconds: float = 10.0
    """``toolweave serve``: the time a client has to send a request's headers, from connecting or
    from the previous answer on its connection; then the connection is closed (``api.connections``)."""
    http_max_header_bytes: int = 64 * 1024
    """``toolweave serve``: the most bytes a request's headers may take; larger answers 431 and closes."""
    http_keep_alive_seconds: int = 5
    """``toolweave serve``: how long a connection may stay idle after an answer before it is closed."""
    http_max_concurrency: int = 1000
    """``toolweave serve``: connections (or requests being answered) at once past which a request
    is answered 503 (0: no limit); event streams count."""
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Service instances and plugin options by name (``[toolweave.services.NAME]`` tables in TOML,
    ``TOOLWEAVE_SERVICES__NAME__OPTION`` in the environment): ``kind`` (``http`` or a plugin's) and
    its options. Values may name environment variables as ``${VAR}`` or ``${VAR:-default}``; they
    are read when the service is built, never stored here."""

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'toolweave.db'}"

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"

    @classmethod
    def load(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        env = dict(os.environ if env is None else env)
        data: dict[str, Any] = {}
        origins: dict[str, str] = {}
        """Where each setting came from, for messages: a file's table, a variable, an argument."""
        home = Path(env.get("TOOLWEAVE_HOME", str(Path.home() / ".toolweave"))).expanduser()
        for candidate in (Path.cwd() / "toolweave.toml", home / "toolweave.toml"):
            if candidate.is_file():
                table = tomllib.loads(candidate.read_text()).get("toolweave", {}) or {}
                data.update(table)
                origins.update({key: f"[toolweave] in {candidate}" for key in table})
                break
        data["home"] = str(home)
        names = {f.name for f in fields(cls)}
        for name in names:
            key = f"TOOLWEAVE_{name.upper()}"
            if key in env:
                data[name] = env[key]
                origins[name] = f"the environment variable {key}"
        _refuse_misspelt_variables(env, names)
        from_env = _services_from_env(env)
        if from_env:
            merged = {k: dict(v) for k, v in (data.get("services") or {}).items()}
            for service, options in from_env.items():
                merged.setdefault(service, {}).update(options)
            data["services"] = merged
        data.update(overrides)
        unknown = set(data) - names
        if unknown:
            import difflib

            described = []
            for name in sorted(unknown):
                close = difflib.get_close_matches(name, names, n=1)
                described.append(f"{name}{' (' + origins[name] + ')' if name in origins else ''}"
                                 f"{'; did you mean ' + close[0] + '?' if close else ''}")
            raise ValueError(f"unknown settings: {', '.join(described)}")
        return cls._from_raw(data, origins)

    @classmethod
    def _from_raw(cls, data: dict[str, Any], origins: dict[str, str] | None = None) -> Settings:
        out: dict[str, Any] = {}
        for key, value in data.items():
            try:
                out[key] = cls._convert(key, value)
            except (ValueError, TypeError, ArithmeticError) as exc:
                where = f" ({origins[key]})" if origins and key in origins else ""
                raise ValueError(f"{key} = {value!r}{where}: {_plain(key, exc)}") from None
        return cls(**out)

    @staticmethod
    def _convert(key: str, value: Any) -> Any:
        """One setting's value from a file or the environment, in its Python type."""
        if key == "home":
            return Path(value).expanduser()
        if key in ("definitions", "media_local_roots"):
            if isinstance(value, str):
                value = [v for v in value.split(os.pathsep) if v]
            return [Path(v).expanduser() for v in value]
        if key == "comfyui_servers":
            return _parse_servers(value)
        if key == "services":
            return _parse_services(value)
        if key == "machine_rates":
            rates = dict(DEFAULT_GPU_RATES)
            rates.update({k: Decimal(str(v)) for k, v in dict(value).items()})
            return rates
        if key == "credits_confirm_above":
            return None if value in (None, "") else _amount(value)
        if key in _WHOLE:
            return int(value)
        if key in _SECONDS or key in _NOTIFY_SECONDS:
            return float(value)
        if key in ("test_tools", "media_allow_private_urls", "callback_allow_private_urls", "credits_by_default"):
            return str(value).lower() in ("1", "true", "yes", "on")
        return value


SERVICES_ENV_PREFIX = "TOOLWEAVE_SERVICES__"


def _refuse_misspelt_variables(env: dict[str, str], names: set[str]) -> None:
    """A ``TOOLWEAVE_*`` variable that is no setting but nearly one (``TOOLWEAVE_WORKER_SLOTZ``) is
    refused with the setting it resembles, instead of being ignored. Variables far from every
    setting (``TOOLWEAVE_TEST_POSTGRES``, other tools' own) are left alone."""
    import difflib

    misspelt = []
    for key in sorted(env):
        if not key.startswith("TOOLWEAVE_") or key.startswith(SERVICES_ENV_PREFIX):
            continue
        name = key[len("TOOLWEAVE_"):].lower()
        if name in names:
            continue
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.85)
        if close:
            misspelt.append(f"{key} (an environment variable); did you mean TOOLWEAVE_{close[0].upper()}?")
    if misspelt:
        raise ValueError(f"unknown settings: {', '.join(misspelt)}")


def _services_from_env(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """``TOOLWEAVE_SERVICES__OPENAI__BASE_URL=…`` → ``{"openai": {"base_url": "…"}}``. A value that
    is a JSON object (``headers``) is parsed; names are lower case."""
    import json

    found: dict[str, dict[str, Any]] = {}
    for key, value in env.items():
        if not key.startswith(SERVICES_ENV_PREFIX):
            continue
        service, sep, option = key[len(SERVICES_ENV_PREFIX) :].partition("__")
        if not sep or not service or not option:
            raise ValueError(f"{key}: write it as {SERVICES_ENV_PREFIX}<SERVICE>__<OPTION>")
        parsed: Any = value
        if value.strip().startswith("{"):
            try:
                parsed = json.loads(value)
            except ValueError:
                raise ValueError(f"{key}: the value looks like JSON but does not parse") from None
        found.setdefault(service.lower(), {})[option.lower()] = parsed
    return found


def _parse_services(value: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict):
        raise ValueError("services must be a table of tables: [toolweave.services.NAME]")
    out: dict[str, dict[str, Any]] = {}
    for name, options in value.items():
        if not isinstance(options, dict):
            raise ValueError(f"services.{name} must be a table of options, not {options!r}")
        out[str(name)] = dict(options)
    return out


def _parse_servers(value: Any) -> list[ComfyServer]:
    """``name=url[@concurrency],...`` from the environment, or a list of tables from TOML.

    Raises ``ValueError`` naming the entry that cannot be used.
    """
    servers: list[ComfyServer] = []
    if isinstance(value, str):
        for item in filter(None, (v.strip() for v in value.split(","))):
            name, sep, rest = item.partition("=")
            url, conc = rest.strip(), ""
            head, at, tail = url.rpartition("@")
            if at and tail.lstrip("-").isdigit():  # "@2" is the concurrency; "user@host" stays in the URL
                url, conc = head, tail
            servers.append(_server(name.strip() if sep else "", url, conc or 1, item))
    elif isinstance(value, list):
        for item in value:
            if not isinstance(item, dict):
                raise ValueError(f"comfyui_servers: each server is a table {{name, base_url, concurrency}}, not {item!r}")
            unknown = set(item) - {"name", "base_url", "concurrency"}
            if unknown:
                raise ValueError(f"comfyui_servers: unknown keys {', '.join(sorted(unknown))} in {item!r}")
            servers.append(
                _server(str(item.get("name", "")), str(item.get("base_url", "")), item.get("concurrency", 1), item)
            )
    else:
        raise ValueError("comfyui_servers must be 'name=url[@concurrency],...' or a list of tables")
    names = [s.name for s in servers]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"comfyui_servers: server {duplicates[0]!r} is named twice")
    return servers


def _server(name: str, url: str, concurrency: Any, entry: Any) -> ComfyServer:
    where = f"comfyui_servers entry {entry!r}"
    if not name:
        raise ValueError(f"{where}: write it as name=http://host:port[@concurrency]")
    if not url.startswith(("http://", "https://")) or len(url.split("//", 1)[1]) == 0:
        raise ValueError(f"{where}: the server's URL must start with http:// or https://")
    try:
        limit = int(concurrency)
    except (TypeError, ValueError):
        limit = 0
    if limit < 1 or isinstance(concurrency, bool):
        raise ValueError(f"{where}: the concurrency (after @) must be a whole number of at least 1")
    return ComfyServer(name=name, base_url=url, concurrency=limit)


_WHOLE = ("worker_slots", "telegram_max_runs_in_flight", "media_max_bytes", "input_max_depth",
          "request_max_json_bytes", "request_max_bytes", "evaluation_processes", "account_max_runs_in_flight",
          "account_submits_per_minute", "sse_max_streams_per_account", "http_max_header_bytes",
          "http_keep_alive_seconds", "http_max_concurrency")
_SECONDS = ("http_timeout_seconds", "http_header_timeout_seconds", "telegram_prompt_timeout_seconds",
            "telegram_edit_interval_seconds", "lease_seconds", "sweep_seconds", "media_url_ttl_seconds",
            "condition_budget_ms", "template_budget_ms", "estimate_fallback_seconds", "retention_days",
            "prune_every_minutes")


def _amount(value: Any) -> Decimal:
    from toolweave.model.credits import parse_amount

    return parse_amount(value, what="the amount")


def _plain(key: str, exc: BaseException) -> str:
    """A conversion error in words (not "invalid literal for int() with base 10")."""
    if key in _WHOLE:
        return "must be a whole number"
    if key in _SECONDS or key in _NOTIFY_SECONDS:
        return "must be a number of seconds"
    return str(exc)


_NOTIFY_SECONDS = ("notification_horizon_seconds", "notification_max_backoff_seconds")
