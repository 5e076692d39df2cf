"""A service added by a plugin package, through the ``toolweave.services`` entry point group, without
editing toolweave: a real distribution (a ``dist-info`` with ``entry_points.txt``) on the
``PYTHONPATH`` of real ``toolweave`` processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PLUGIN = '''
from toolweave.model.records import RunUpdate
from toolweave.model.status import GenerationStatus
from toolweave.services.base import ServiceError, Submission, WebhookRejected
from toolweave.services.plugins import Option


class EchoService:
    def __init__(self, name, greeting):
        self.name = name
        self.greeting = greeting

    async def submit(self, gen):
        text = gen.inputs.get("text", "")
        if text == "boom":
            raise ServiceError("echo refuses boom", code="rejected")
        return Submission(update=RunUpdate(status=GenerationStatus.COMPLETED,
                                           outputs={"text": f"{self.greeting}, {text}"}))

    async def poll(self, gen):
        raise ServiceError("echo answers at once; there is nothing to poll")

    async def cancel(self, gen):
        return None

    def parse_webhook(self, headers, body):
        raise WebhookRejected("echo takes no webhooks")

    async def close(self):
        return None


class EchoKind:
    kind = "echo"
    description = "says hello"
    options = {"greeting": Option(str, required=True, help="what to say"), "shout": Option(bool, default=False)}

    def create(self, instance, host, settings):
        greeting = instance.options["greeting"]
        return EchoService(instance.name, greeting.upper() if instance.options["shout"] else greeting)

    def check_tool(self, tool, instance):
        if tool.output("text") is None:
            return [("outputSchema", "an echo tool has a text output")]
        return []
'''


def write_distribution(root: Path, name: str, module: str, source: str, entry: str) -> None:
    (root / module).mkdir(parents=True)
    (root / module / "__init__.py").write_text(source)
    info = root / f"{name.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[toolweave.services]\n{entry}\n")
    (info / "RECORD").write_text("")


@pytest.fixture
def world(tmp_path: Path) -> dict[str, str]:
    plugins = tmp_path / "site"
    write_distribution(plugins, "toolweave-echo", "toolweave_echo", PLUGIN, "echo = toolweave_echo:EchoKind")
    write_distribution(plugins, "toolweave-broken", "toolweave_broken", "raise ImportError('needs libfoo')\n",
                       "broken = toolweave_broken:Kind")
    defs = tmp_path / "defs"
    defs.mkdir()
    (defs / "echo.yaml").write_text(textwrap.dedent("""\
        toolId: echo.hello
        service: echo
        inputSchema: {text: {type: text, required: true}}
        outputSchema: {text: {type: text}}
        """))
    (defs / "loud.yaml").write_text(textwrap.dedent("""\
        toolId: echo.loud
        service: loud
        inputSchema: {text: {type: text, required: true}}
        outputSchema: {text: {type: text}}
        """))
    (tmp_path / "toolweave.toml").write_text(textwrap.dedent("""\
        [toolweave.services.loud]
        kind = "echo"
        greeting = "hey"
        shout = true
        """))
    env = {key: value for key, value in os.environ.items() if not key.startswith("TOOLWEAVE_")}
    env.update({
        "PYTHONPATH": os.pathsep.join([str(plugins), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "TOOLWEAVE_HOME": str(tmp_path / "home"),
        "TOOLWEAVE_DEFINITIONS": str(defs),
        "TOOLWEAVE_SERVICES__ECHO__GREETING": "Hello",
    })
    return {"cwd": str(tmp_path), **env}


def toolweave(world: dict[str, str], *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    cwd = world["cwd"]
    full = {k: v for k, v in world.items() if k != "cwd"}
    for key, value in env.items():
        if value == "":
            full.pop(key, None)
        else:
            full[key] = value
    return subprocess.run([sys.executable, "-m", "toolweave.cli", *args], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=120, check=False)


def test_a_plugin_service_is_listed_configured_and_runs(world: dict[str, str]) -> None:
    listed = toolweave(world, "services", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["echo"] | {"tools": 1} == {
        "name": "echo", "kind": "echo", "origin": "plugin toolweave-echo", "configured": True, "problem": None,
        "description": "says hello", "baseUrl": None, "tools": 1,
    }
    assert rows["loud"]["kind"] == "echo" and rows["loud"]["origin"] == "settings" and rows["loud"]["configured"]
    assert rows["broken"]["configured"] is False
    assert rows["broken"]["problem"] == "plugin toolweave-broken could not be loaded: ImportError: needs libfoo"
    assert toolweave(world, "validate").returncode == 0
    ran = toolweave(world, "run", "echo.hello", "-i", "text=world", "--wait", "--json")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["finalOutputs"] == {"text": "Hello, world"}
    loud = toolweave(world, "run", "echo.loud", "-i", "text=you", "--wait", "--json")
    assert json.loads(loud.stdout)["finalOutputs"] == {"text": "HEY, you"}
    refused = toolweave(world, "run", "echo.hello", "-i", "text=boom", "--wait", "--json")
    assert refused.returncode == 1 and json.loads(refused.stdout)["error"]["message"].endswith("echo refuses boom")


def test_an_unconfigured_plugin_service_is_a_validation_problem_naming_why(world: dict[str, str]) -> None:
    result = toolweave(world, "validate", TOOLWEAVE_SERVICES__ECHO__GREETING="")
    assert result.returncode == 1
    assert result.stderr.splitlines()[0].endswith(
        "echo.yaml: service: service 'echo' is not configured: option 'greeting' is required"
    )
    typo = toolweave(world, "validate", TOOLWEAVE_SERVICES__ECHO__COLOUR="red")
    assert typo.returncode == 1
    assert "service 'echo' is not configured: unknown option colour (options: greeting, shout)" in typo.stderr


def test_the_plugins_own_checks_of_a_tool_are_validation_problems(world: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "defs" / "bad.yaml").write_text("toolId: echo.bad\nservice: echo\noutputSchema: {n: {type: number}}\n")
    result = toolweave(world, "validate")
    assert result.returncode == 1
    assert result.stderr.splitlines()[0].endswith("bad.yaml: outputSchema: an echo tool has a text output")


def test_a_tool_naming_the_broken_plugin_says_why_it_cannot_run(world: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "defs" / "broken.yaml").write_text("toolId: b\nservice: broken\n")
    result = toolweave(world, "validate")
    assert result.returncode == 1
    assert ("service 'broken' is not configured: plugin toolweave-broken could not be loaded: ImportError: needs "
            "libfoo") in result.stderr
