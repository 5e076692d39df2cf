"""Help that reads like a command line's, not like Python.

Typer shows each option's Python annotation (``<list[Path]>``, ``<int range> [x>=0]``, ``<bool>``)
and a required argument as ``{name}``. ``HelpGroup`` (the root command's class) rewrites the tree
once before it runs: an option takes a word for its value (``PATH``, ``N``, ``SECONDS``, ``TEXT``,
or its choices), a flag takes none, an argument is its name in capitals, a bounded number says
``1 to 500``; and each command gets its examples (``EXAMPLES``) below its options.

Typer draws help with its ``rich_utils``, which imports Rich's Markdown renderer (markdown-it) and
its traceback renderer (Pygments) for what help in Rich markup mode never uses: Markdown help text
(``rich_markup_mode="markdown"``) and uncaught exceptions. ``rich_help_utils()`` imports it with
stand-ins for those two classes that import the real ones when first used, which took about a
sixth off the CPU time of ``toolweave --help`` (docs/benchmarks.md, *Start-up*); the help is the same.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import types
from typing import Any

from typer.core import TyperArgument, TyperGroup, TyperOption

EXAMPLES: dict[str, list[str]] = {
    "validate": ["toolweave validate examples/", "toolweave validate my-tools/ --live"],
    "run": [
        "toolweave run image.resize -i image=@photo.png -i width=512 --wait",
        "toolweave run demo_variants -d examples/demo -i image=@photo.jpg -o out/",
        "toolweave run cached_postcard -d examples/cache --batch rows.csv --wait",
    ],
    "worker": ["toolweave worker --slots 4", "toolweave worker --until-idle --timeout 60"],
    "status": ["toolweave status", "toolweave status --json"],
    "demo": ["toolweave demo", "toolweave demo --output pictures/"],
    "serve": ["toolweave serve --port 8000", "toolweave serve --no-worker --host 0.0.0.0"],
    "cluster": ["toolweave cluster --workers 3 --slots 4 --port 8000"],
    "telegram": ["toolweave telegram", "toolweave telegram --set-webhook https://bot.example.org/telegram/webhook"],
    "tools list": ["toolweave tools list", "toolweave tools list -d examples/comfyui --json"],
    "tools show": ["toolweave tools show image.resize"],
    "tools versions": ["toolweave tools versions image.resize"],
    "jobs list": ["toolweave jobs list -d examples/demo"],
    "jobs show": ["toolweave jobs show demo_variants -d examples/demo"],
    "jobs versions": ["toolweave jobs versions demo_variants -d examples/demo"],
    "runs list": ["toolweave runs list", "toolweave runs list --status failed --status cancelled --limit 5"],
    "runs show": ["toolweave runs show RUN_ID", "toolweave runs show RUN_ID --json"],
    "runs items": ["toolweave runs items RUN_ID card --status failed"],
    "runs cancel": ["toolweave runs cancel RUN_ID"],
    "runs retry": [
        "toolweave runs retry RUN_ID --wait",
        "toolweave runs retry RUN_ID --from stamped -i label=Hello --wait",
    ],
    "runs watch": ["toolweave runs watch RUN_ID", "toolweave runs watch RUN_ID --worker auto"],
    "db upgrade": ["TOOLWEAVE_DATABASE_URL=postgresql://user@db/tw toolweave db upgrade"],
    "keys create": ["toolweave keys create --account alice --name laptop"],
    "keys list": ["toolweave keys list --account alice"],
    "keys revoke": ["toolweave keys revoke tw_AbCdEf12"],
    "import comfyui": ["toolweave import comfyui workflow.json --service comfyui -o tools/upscale.yaml"],
    "import predecessor": ["toolweave import predecessor old-tools/*.json -o tools/"],
    "sync comfydeploy": ["toolweave sync comfydeploy tools/ --dry-run"],
    "services list": ["toolweave services list"],
}


def _range(low: float | None, high: float | None) -> str | None:
    if low is None and high is None:
        return None
    if high is None:
        return f"at least {low}"
    if low is None:
        return f"at most {high}"
    return f"{low} to {high}"


def _value_word(param: TyperOption) -> str:
    """The word an option's value is shown as."""
    described = param.type_descriptor
    if described.is_choice and described.choices:
        return "|".join(str(getattr(c, "value", c)) for c in described.choices)
    annotation = described.annotation
    inner = getattr(annotation, "__args__", (annotation,))[0] if described.is_list else annotation
    name = getattr(inner, "__name__", str(inner))
    if described.is_path or name == "Path":
        return "PATH"
    if name == "int":
        return "N"
    if name == "float":
        return "SECONDS" if any(w in (param.name or "") for w in ("timeout", "seconds", "interval")) else "NUMBER"
    return "TEXT"


def _humanize_param(param: Any) -> None:
    if isinstance(param, TyperOption):
        if param.is_flag:
            param.metavar = ""
        elif param.metavar is None:
            param.metavar = _value_word(param)
    elif isinstance(param, TyperArgument):
        word = param.metavar or (param.name or "value").upper()
        param.metavar = word
        more = "..." if param.nargs != 1 else ""
        usage = (word if param.required else f"[{word}]") + more
        # (instance attributes shadow Typer's methods: these objects are built for this process)
        param.__dict__.update(_usage_display_name=lambda: usage, display_type_rich=lambda ctx: None)
    else:
        return
    described = _range(getattr(param, "min", None), getattr(param, "max", None))
    param.__dict__["_get_number_range_help_str"] = lambda: described


class _Deferred(type):
    """A class standing for one of another module's, imported when it is first called or asked for
    an attribute (``Traceback.from_exception``)."""

    _where: tuple[str, str]

    def _real(cls) -> Any:
        module, name = cls._where
        return getattr(importlib.import_module(module), name)

    def __getattr__(cls, attr: str) -> Any:
        return getattr(cls._real(), attr)

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return cls._real()(*args, **kwargs)


_HEAVY = (("rich.markdown", "Markdown"), ("rich.traceback", "Traceback"))
"""What ``typer.rich_utils`` imports and help does not use (markdown-it, Pygments)."""


def rich_help_utils() -> None:
    """Import ``typer.rich_utils`` with ``_Deferred`` stand-ins for ``_HEAVY`` (once; where those
    modules are loaded already, the real ones)."""
    if "typer.rich_utils" in sys.modules:
        return
    stand_ins: dict[str, types.ModuleType] = {}
    for module, name in _HEAVY:
        if module not in sys.modules:
            stand_in = types.ModuleType(module)
            setattr(stand_in, name, _Deferred(name, (), {"_where": (module, name)}))
            stand_ins[module] = stand_in
    sys.modules.update(stand_ins)
    try:
        importlib.import_module("typer.rich_utils")
    finally:  # the stand-ins only for that import: whoever imports these modules later gets them
        for module, stand_in in stand_ins.items():
            if sys.modules.get(module) is stand_in:
                del sys.modules[module]


def humanize(command: Any, path: str = "") -> None:
    """Rewrite ``command`` and every command below it (once; later calls do nothing)."""
    if getattr(command, "_toolweave_humanized", False):
        return
    command._toolweave_humanized = True
    for param in getattr(command, "params", []):
        _humanize_param(param)
    if command.help:  # a line break inside a paragraph is the source's, not the reader's
        command.help = "\n\n".join(" ".join(p.split()) for p in inspect.cleandoc(command.help).split("\n\n"))
    original = command.get_help_option

    def help_option(ctx: Any) -> Any:
        option = original(ctx)
        if option is not None:
            _humanize_param(option)
        return option

    command.__dict__["get_help_option"] = help_option
    drawn = command.format_help

    def format_help(ctx: Any, formatter: Any) -> Any:
        rich_help_utils()
        return drawn(ctx, formatter)

    command.__dict__["format_help"] = format_help
    examples = EXAMPLES.get(path)
    if examples and not command.epilog:
        command.epilog = "Examples:\n" + "\n".join(f"  $ {line}" for line in examples)
    for name, sub in getattr(command, "commands", {}).items():
        humanize(sub, f"{path} {name}".strip())


class HelpGroup(TyperGroup):
    """The root command: humanizes the whole tree before it parses anything."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        humanize(self)
        return super().main(*args, **kwargs)
