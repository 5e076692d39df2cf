"""What a CLI run of a builtin tool loads (issue 15: ``toolweave run text.template … --wait`` answers
in well under a second on a warm home; the figures are bench/startup.py's, in docs/benchmarks.md).

No test here measures time. What it checks is what the time went to, each a regression seen once:
an evaluator process started for a straight-line template (a fresh interpreter: half a second),
SQLAlchemy imported through the store's run queries, the HTTP client's transport and TLS set-up
for a command that calls no backend, PyYAML without a YAML file to read, the ComfyUI converter;
httpx itself (it imports its own command line: click, Pygments) and Pillow without an image.
``toolweave --help`` loads neither the app nor asyncio, nor Rich's Markdown and traceback renderers
(markdown-it, Pygments), and says the same as with them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ARGV = ["run", "text.template", "-i", "template=hello {{ name | upper }}", "-i", 'variables={"name": "you"}',
        "--wait", "--json"]
NOT_LOADED = ("sqlalchemy", "alembic", "httpcore", "yaml", "toolweave.comfy.convert", "http.server",
              "httpx", "click", "pygments", "markdown_it", "PIL")
HELP_NOT_LOADED = ("toolweave.app", "toolweave.store", "toolweave.engine", "toolweave.model.definitions", "asyncio", "httpx",
                   "jinja2", "markdown_it", "pygments", "rich.markdown", "rich.traceback")
PROBE = """
import atexit, gc, json, subprocess, sys

started = []
_popen_init = subprocess.Popen.__init__


def recording_init(self, args, *rest, **kw):
    started.append([str(a) for a in args] if isinstance(args, (list, tuple)) else [str(args)])
    _popen_init(self, args, *rest, **kw)


subprocess.Popen.__init__ = recording_init


@atexit.register
def report():
    loaded = [m for m in {not_loaded!r} if m in sys.modules]
    seen = {{"loaded": loaded, "started": started, "frozen": gc.get_freeze_count(), "collecting": gc.isenabled()}}
    sys.stderr.write("PROBE " + json.dumps(seen) + "\\n")


from toolweave.cli import main

sys.argv = ["toolweave", *{argv!r}]
main()
"""


def run_probe(home: Path, argv: list[str], not_loaded: tuple[str, ...], first: str = "") -> tuple[str, dict[str, object]]:
    """(standard output, what the probe saw) of ``toolweave argv`` in a fresh interpreter, which
    runs ``first`` before importing the command line."""
    env = {**os.environ, "TOOLWEAVE_HOME": str(home), "COLUMNS": "80"}
    env.pop("TOOLWEAVE_DATABASE_URL", None)
    code = first + "\n" + PROBE.format(not_loaded=not_loaded, argv=argv)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    [line] = [x for x in done.stderr.splitlines() if x.startswith("PROBE ")]
    return done.stdout, json.loads(line.removeprefix("PROBE "))


def probe(home: Path) -> tuple[dict[str, object], dict[str, object]]:
    out, seen = run_probe(home, ARGV, NOT_LOADED)
    return json.loads(out), seen


def test_a_cli_run_of_a_straight_line_template_starts_no_evaluator_and_loads_only_what_it_uses(tmp_path: Path) -> None:
    home = tmp_path / "home"
    probe(home)  # the first run makes and migrates the store (Alembic and SQLAlchemy are its business)
    run, seen = probe(home)  # a warm home
    assert run["status"] == "completed" and run["finalOutputs"] == {"text": "hello YOU"}, run
    assert seen["started"] == [], "a process was started (an evaluator?)"
    assert seen["loaded"] == [], "a command that runs one builtin tool imported these"
    # main() froze what the imports made (no collection walks it again, the one at exit included),
    # and the collector still runs for what the command makes
    assert seen["frozen"] > 10_000 and seen["collecting"] is True, seen


def test_help_loads_neither_the_app_nor_asyncio_nor_the_markdown_and_traceback_renderers(tmp_path: Path) -> None:
    for argv in (["--help"], ["run", "--help"], ["runs", "retry", "--help"]):
        text, seen = run_probe(tmp_path, argv, HELP_NOT_LOADED)
        assert seen["loaded"] == [], f"toolweave {' '.join(argv)} imported these"
        assert seen["started"] == []
        # the same help as Typer draws with the real renderers loaded
        real, _ = run_probe(tmp_path, argv, (), first="import rich.markdown, rich.traceback")
        assert text == real
        assert "Usage: toolweave" in text and ("Commands" in text or "Options" in text), text


STAND_INS = """
import sys
from toolweave.cli.helptext import rich_help_utils

rich_help_utils()
from typer import rich_utils

assert "rich.markdown" not in sys.modules and "rich.traceback" not in sys.modules
markdown = rich_utils.Markdown("*hello*")  # what help in Markdown mode would draw
from rich.markdown import Markdown
from rich.traceback import Traceback

assert type(markdown) is Markdown, type(markdown)
try:
    raise ValueError("boom")
except ValueError as exc:
    shown = rich_utils.Traceback.from_exception(type(exc), exc, exc.__traceback__)
assert type(shown) is Traceback, type(shown)
import rich

assert rich.markdown is sys.modules["rich.markdown"]
print("ok")
"""


def test_the_stand_ins_for_the_renderers_help_does_not_use_become_the_real_ones_when_used() -> None:
    done = subprocess.run([sys.executable, "-c", STAND_INS], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"
