"""What a CLI run of a builtin tool loads (issue 15: ``toolweave run text.template … --wait`` answers
in well under a second on a warm home; the figures are bench/startup.py's, in docs/benchmarks.md).

No test here measures time. What it checks is what the time went to, each a regression seen once:
an evaluator process started for a straight-line template (a fresh interpreter: half a second),
SQLAlchemy imported through the store's run queries, the HTTP client's transport and TLS set-up
for a command that calls no backend, PyYAML without a YAML file to read, the ComfyUI converter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ARGV = ["run", "text.template", "-i", "template=hello {{ name | upper }}", "-i", 'variables={"name": "you"}',
        "--wait", "--json"]
NOT_LOADED = ("sqlalchemy", "alembic", "httpcore", "yaml", "toolweave.comfy.convert", "http.server")
PROBE = """
import atexit, json, subprocess, sys

started = []
_popen_init = subprocess.Popen.__init__


def recording_init(self, args, *rest, **kw):
    started.append([str(a) for a in args] if isinstance(args, (list, tuple)) else [str(args)])
    _popen_init(self, args, *rest, **kw)


subprocess.Popen.__init__ = recording_init


@atexit.register
def report():
    loaded = [m for m in {not_loaded!r} if m in sys.modules]
    sys.stderr.write("PROBE " + json.dumps({{"loaded": loaded, "started": started}}) + "\\n")


from toolweave.cli import main

sys.argv = ["toolweave", *{argv!r}]
main()
"""


def probe(home: Path) -> tuple[dict[str, object], dict[str, object]]:
    env = {**os.environ, "TOOLWEAVE_HOME": str(home)}
    env.pop("TOOLWEAVE_DATABASE_URL", None)
    code = PROBE.format(not_loaded=NOT_LOADED, argv=ARGV)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    [line] = [x for x in done.stderr.splitlines() if x.startswith("PROBE ")]
    return json.loads(done.stdout), json.loads(line.removeprefix("PROBE "))


def test_a_cli_run_of_a_straight_line_template_starts_no_evaluator_and_loads_only_what_it_uses(tmp_path: Path) -> None:
    home = tmp_path / "home"
    probe(home)  # the first run makes and migrates the store (Alembic and SQLAlchemy are its business)
    run, seen = probe(home)  # a warm home
    assert run["status"] == "completed" and run["finalOutputs"] == {"text": "hello YOU"}, run
    assert seen["started"] == [], "a process was started (an evaluator?)"
    assert seen["loaded"] == [], "a command that runs one builtin tool imported these"
