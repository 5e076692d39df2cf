"""Which services exist here, whether each is configured, and what a tool naming one needs.

The catalog is built from settings and the installed plugins (entry point group
``toolweave.services``) without creating any service, so ``toolweave validate`` and
``toolweave services list`` can use it offline. ``App`` builds its services from it, and its
registry refuses a tool that names an unknown or unconfigured service, with the reason.

- ``builtin``, ``comfyui``, ``comfydeploy``: the core services, configured by their own settings;
- ``http`` instances: the bare ``http``, the providers of ``services.http.PROVIDERS`` and every
  ``[toolweave.services.NAME]`` with ``kind = "http"``;
- plugin kinds: an instance named after the kind, and every ``[toolweave.services.NAME]`` of it.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from typing import Any

from toolweave.model.definitions import RateSource, ToolDefinition
from toolweave.services.base import Service, ServiceHost
from toolweave.services.http import PROVIDERS, HttpKind
from toolweave.services.plugins import ServiceInstance, ServiceKind, load_entry_points, resolve_options
from toolweave.settings import Settings

CORE = ("builtin", "comfyui", "comfydeploy")
_INPUT_COSTS = (RateSource.TABLE, RateSource.USAGE)


class ServiceCatalog:
    def __init__(
        self,
        settings: Settings,
        *,
        env: Mapping[str, str] | None = None,
        plugins: list[tuple[str, str, Any]] | None = None,
    ) -> None:
        self.settings = settings
        self.env = os.environ if env is None else env
        self.kinds: dict[str, ServiceKind] = {"http": HttpKind()}
        self.origins: dict[str, str] = {"http": "builtin"}
        self.broken: dict[str, str] = {}
        """Plugin kinds that could not be used, with the reason."""
        for kind, dist, obj in load_entry_points() if plugins is None else plugins:
            self.origins.setdefault(kind, f"plugin {dist}")
            if isinstance(obj, BaseException):
                self.broken[kind] = f"plugin {dist} could not be loaded: {type(obj).__name__}: {obj}"
            elif kind in (*CORE, "http"):
                self.broken[kind] = f"plugin {dist} names kind {kind!r}, which is toolweave's own"
                self.origins[kind] = "builtin"
            elif not all(hasattr(obj, a) for a in ("create", "options")):
                self.broken[kind] = f"plugin {dist}: {kind} has no create() and options (see toolweave.services.plugins)"
            else:
                self.kinds[kind] = obj
        self.instances: dict[str, ServiceInstance] = {}
        self._core()
        configured = dict(settings.services)
        for name, preset in PROVIDERS.items():
            given = configured.pop(name, {})
            if given.get("kind", "http") != "http":
                self.instances[name] = ServiceInstance(name, str(given["kind"]), "settings",
                                                       problem=f"{name!r} is an http service; its kind cannot change")
                continue
            options = {k: v for k, v in preset.items() if k != "description"}
            options.update({k: v for k, v in given.items() if k != "kind"})
            self._instance(name, "http", "settings" if given else "builtin", options, str(preset.get("description", "")))
        for kind in self.kinds:
            if kind != "http" and kind not in self.instances:
                given = configured.pop(kind, {})
                self._instance(kind, kind, self.origins[kind], {k: v for k, v in given.items() if k != "kind"})
        for kind, reason in self.broken.items():
            if kind not in self.instances:
                configured.pop(kind, None)
                self.instances[kind] = ServiceInstance(kind, kind, self.origins[kind], problem=reason)
        for name, given in configured.items():
            kind = str(given.get("kind") or "")
            if name in CORE:
                self.instances[name].problem = (
                    f"[toolweave.services.{name}] is not read: {name} is configured by its own settings"
                )
            elif not kind:
                self.instances[name] = ServiceInstance(name, "?", "settings",
                                                       problem=f"[toolweave.services.{name}] needs kind = \"http\" (or a plugin's kind)")
            elif kind not in self.kinds:
                reason = self.broken.get(kind) or f"no service kind {kind!r} is installed (kinds: {', '.join(sorted(self.kinds))})"
                self.instances[name] = ServiceInstance(name, kind, "settings", problem=reason)
            else:
                self._instance(name, kind, "settings", {k: v for k, v in given.items() if k != "kind"})

    def _core(self) -> None:
        settings = self.settings
        self.instances["builtin"] = ServiceInstance("builtin", "builtin", "builtin",
                                                    description="in-process image, text and media tools")
        servers = ", ".join(f"{s.name}={s.base_url}" for s in settings.comfyui_servers)
        self.instances["comfyui"] = ServiceInstance(
            "comfyui", "comfyui", "builtin",
            problem=None if settings.comfyui_servers else
            "no ComfyUI server is configured (set comfyui_servers / TOOLWEAVE_COMFYUI_SERVERS)",
            description=f"ComfyUI servers: {servers}" if servers else "ComfyUI servers",
        )
        self.instances["comfydeploy"] = ServiceInstance(
            "comfydeploy", "comfydeploy", "builtin",
            problem=None if settings.comfydeploy_api_key else
            "no API key is configured (set comfydeploy_api_key / TOOLWEAVE_COMFYDEPLOY_API_KEY)",
            description=f"ComfyUI Deploy at {settings.comfydeploy_base_url}",
            secrets=frozenset({settings.comfydeploy_api_key} if settings.comfydeploy_api_key else ()),
        )

    def _instance(self, name: str, kind: str, origin: str, given: Mapping[str, Any], description: str = "") -> None:
        declared = self.kinds[kind].options
        options, secrets, problem = resolve_options(declared, given, self.env)
        self.instances[name] = ServiceInstance(
            name, kind, origin, options, problem, secrets,
            description or str(getattr(self.kinds[kind], "description", "")),
        )

    # --- questions ----------------------------------------------------------------------------

    def get(self, name: str) -> ServiceInstance | None:
        return self.instances.get(name)

    def check_tool(self, tool: ToolDefinition) -> list[tuple[str, str]]:
        """Problems of a tool for the service it names: unknown, not configured, or what the
        service's kind finds in its metadata."""
        name = tool.service
        instance = self.instances.get(name)
        if instance is None:
            close = difflib.get_close_matches(name, list(self.instances), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            return [("service", f"no service named {name!r} is known here{hint} (services: "
                     f"{', '.join(sorted(self.instances))}; `toolweave services list` shows them)")]
        if not instance.configured:
            return [("service", f"service {name!r} is not configured: {instance.problem}")]
        problems: list[tuple[str, str]] = []
        costing = tool.costing_model
        if costing is not None and costing.rate_source in _INPUT_COSTS and instance.kind in CORE:
            problems.append(("costingModel.rateSource", f"rateSource {costing.rate_source.value!r} is computed by "
                             f"http services; {name!r} is a {instance.kind} service"))
        if instance.kind == "comfyui":
            server = tool.metadata.get("server")
            names = [s.name for s in self.settings.comfyui_servers]
            if server is not None and server not in names:
                problems.append(("metadata.server", f"ComfyUI server {server!r} is not configured (servers: {', '.join(names)})"))
            from toolweave.services.comfy_workflows import inline_workflow_problems

            problems.extend(inline_workflow_problems(tool))
        kind = self.kinds.get(instance.kind)
        check = getattr(kind, "check_tool", None)
        if check is not None:
            try:
                problems.extend(check(tool, instance))
            except Exception as exc:  # a plugin's bug is a problem to show, not a crash
                problems.append(("service", f"service {name!r} failed to check the tool: {type(exc).__name__}: {exc}"))
        return problems

    def build(self, host: ServiceHost, *, test_tools: bool = False) -> dict[str, Service]:
        """The services of this process: the core ones always, the others when configured."""
        from toolweave.services.builtin import BuiltinService
        from toolweave.services.comfydeploy import ComfyDeployService
        from toolweave.services.comfyui import ComfyUIService

        services: dict[str, Service] = {
            "builtin": BuiltinService(host, test_tools=test_tools, settings=self.settings),
            "comfyui": ComfyUIService(host, self.settings),
            "comfydeploy": ComfyDeployService(host, self.settings),
        }
        for name, instance in self.instances.items():
            if name in CORE or not instance.configured:
                continue
            services[name] = self.kinds[instance.kind].create(instance, host, self.settings)
        return services

    def rows(self) -> list[dict[str, Any]]:
        """One row per service, for ``toolweave services list``."""
        return [
            {
                "name": i.name, "kind": i.kind, "origin": i.origin, "configured": i.configured,
                "problem": i.problem, "description": i.description,
                "baseUrl": i.options.get("base_url") if i.kind == "http" else None,
            }
            for i in sorted(self.instances.values(), key=lambda i: (i.name not in CORE, i.name))
        ]
