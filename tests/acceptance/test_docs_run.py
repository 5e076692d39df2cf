"""Docs that run: every ``console`` block of README.md and docs/*.md is run, command by command,
and a documented command that fails breaks the build.

Each document runs in a session of its own: a temporary folder as the working directory (with the
repository's ``examples/``, ``tests/`` and ``.venv`` linked in, and a ``photo.jpg``), a temporary
``TOOLWEAVE_HOME`` and ``HOME``, ``toolweave`` on the ``PATH``. Its blocks run in order in bash
with ``set -e -o pipefail``; what a block exports is there for the next one. The lines of a block
that start with ``$`` are commands (a line ending in ``\\`` and a here-document continue them); the
other lines show output and are not checked. ``$RUN`` (or ``RUN_ID``) is the newest run of the
session's store.

The fence's tag says how a block runs (docs/README explain them to the reader too):

- ``console`` — run; it must succeed.
- ``console server`` — its last command starts a server that runs until stopped (``toolweave serve``):
  it is started in the background (its ``--port`` and the ``localhost:PORT`` URLs of the document
  moved to a free loopback port), the blocks after it talk to it, and it is stopped at the end.
- ``console live`` — needs a live service outside this machine (a hosted API with a real token, a
  Telegram bot): shown, not run. Keep these few: everything that can run against loopback does.
- ``console build`` — the build itself (``make demo``, ``make test``): CI runs those directly.

Any other tag fails the test, so a typo cannot hide a block.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TAGS = {"": "run", "server": "run; the last command serves until stopped", "live": "not run: a live outside service",
        "build": "not run: the build itself"}
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})console(?P<tag>[^\n`]*)$")
PLACEHOLDERS = re.compile(r"\bRUN_ID\b")
COMMAND_TIMEOUT = 240.0


@dataclass
class Block:
    document: Path
    line: int
    tag: str
    commands: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def blocks_of(document: Path) -> list[Block]:
    """The console blocks of a Markdown file, with their commands."""
    found: list[Block] = []
    lines = document.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence = match.group("indent"), match.group("fence")
        block = Block(document, i + 1, match.group("tag").strip())
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].strip() != fence:
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        block.commands = commands_of(body)
        found.append(block)
        i += 1
    return found


def commands_of(body: list[str]) -> list[str]:
    commands: list[str] = []
    i = 0
    while i < len(body):
        line = body[i]
        if not line.startswith("$ "):
            i += 1
            continue
        command = line[2:]
        i += 1
        # a trailing backslash, or a quote still open (a JSON body over several lines), continues it
        while (command.rstrip().endswith("\\") or not _closed(command)) and i < len(body):
            command += "\n" + body[i]
            i += 1
        heredoc = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", command)
        if heredoc:
            end = heredoc.group(1)
            while i < len(body):
                command += "\n" + body[i]
                i += 1
                if body[i - 1].strip() == end:
                    break
        commands.append(command)
    return commands


def _closed(command: str) -> bool:
    """Whether every quote of a shell command is closed."""
    try:
        shlex.split(command.split("<<", 1)[0], comments=True)
    except ValueError:
        return False
    return True


ALL_BLOCKS = [block for document in DOCUMENTS for block in blocks_of(document)]


def test_every_console_block_has_a_known_tag_and_commands() -> None:
    problems = [f"{b.where}: unknown tag {b.tag!r} (known: {', '.join(repr(t) for t in TAGS)})"
                for b in ALL_BLOCKS if b.tag not in TAGS]
    problems += [f"{b.where}: a console block without a `$ ` command" for b in ALL_BLOCKS if not b.commands]
    assert problems == []
    assert sum(1 for b in ALL_BLOCKS if b.tag in ("", "server")) >= 10  # the extractor finds the blocks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Session:
    """One document's working folder, environment and background server."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        work = folder / "work"
        work.mkdir()
        (work / "examples").symlink_to(ROOT / "examples")
        (work / "tests").symlink_to(ROOT / "tests")  # its sample data (predecessor tool files)
        (work / ".venv").symlink_to(ROOT / ".venv")
        from PIL import Image

        with Image.open(ROOT / "examples" / "assets" / "sample.png") as image:
            image.convert("RGB").save(work / "photo.jpg", quality=90)
        self.work = work
        bin_dir = Path(sys.executable).parent
        keep = {k: v for k, v in os.environ.items() if not k.startswith("TOOLWEAVE_")}
        self.env = dict(keep, HOME=str(folder / "home"), TOOLWEAVE_HOME=str(folder / "toolweave-home"),
                        PATH=f"{bin_dir}{os.pathsep}{keep.get('PATH', '')}", COLUMNS="100", NO_COLOR="1")
        self.port = _free_port()
        self.server: subprocess.Popen[str] | None = None

    def localise(self, command: str) -> str:
        command = command.replace("localhost:8000", f"localhost:{self.port}")
        command = re.sub(r"--port\s+8000\b", f"--port {self.port}", command)
        return PLACEHOLDERS.sub("$RUN", command)

    def newest_run(self) -> str:
        """The newest run in the session's store, of any account."""
        script = (
            "import asyncio\nfrom toolweave.app import App\nfrom toolweave.settings import Settings\n"
            "async def main():\n    app = App(Settings.load())\n"
            "    page = await app.list_runs(None, limit=1)\n    await app.aclose()\n"
            "    print(page.items[0]['jobRunId'] if page.items else '')\nasyncio.run(main())\n"
        )
        done = subprocess.run([sys.executable, "-c", script], env=self.env, cwd=self.work, capture_output=True,
                              text=True, timeout=COMMAND_TIMEOUT)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def run(self, block: Block, command: str) -> None:
        """Run one command in bash with the session's environment; keep what it exports."""
        command = self.localise(command)
        if "$RUN" in command:
            self.env["RUN"] = self.newest_run()
        marker = "__TOOLWEAVE_DOCS_ENV__"
        script = f"set -e -o pipefail\n{command}\necho {marker}\nenv -0\n"
        done = subprocess.run(["bash", "-c", script], env=self.env, cwd=self.work, capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT)
        if done.returncode != 0:
            pytest.fail(f"{block.where}: `{command}` exited {done.returncode}\n--- stdout\n{done.stdout[-3000:]}"
                        f"\n--- stderr\n{done.stderr[-3000:]}", pytrace=False)
        environment = done.stdout.rsplit(marker + "\n", 1)[-1]
        self.env = dict(item.split("=", 1) for item in environment.split("\0") if "=" in item)

    def serve(self, block: Block, command: str) -> None:
        command = self.localise(command)
        self.server = subprocess.Popen(["bash", "-c", f"exec {command}"], env=self.env, cwd=self.work,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                       start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                pytest.fail(f"{block.where}: `{command}` ended at once:\n{self.server.stdout.read() if self.server.stdout else ''}",
                            pytrace=False)
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        pytest.fail(f"{block.where}: `{command}` did not answer on port {self.port} within 60 s", pytrace=False)

    def close(self) -> None:
        if self.server is not None and self.server.poll() is None:
            os.killpg(self.server.pid, signal.SIGTERM)
            try:
                self.server.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.server.pid, signal.SIGKILL)
                self.server.wait(10)


RUNNABLE = sorted({b.document for b in ALL_BLOCKS if b.tag in ("", "server")})


@pytest.mark.parametrize("document", RUNNABLE, ids=[str(d.relative_to(ROOT)) for d in RUNNABLE])
def test_the_documented_commands_run(document: Path, tmp_path: Path) -> None:
    session = Session(tmp_path)
    try:
        for block in (b for b in ALL_BLOCKS if b.document == document):
            if block.tag in ("live", "build"):
                continue
            commands = block.commands
            if block.tag == "server":
                for command in commands[:-1]:
                    session.run(block, command)
                session.serve(block, commands[-1])
                continue
            for command in commands:
                session.run(block, command)
    finally:
        session.close()


def test_a_failing_documented_command_fails(tmp_path: Path) -> None:
    """The runner is no rubber stamp: a command that exits non-zero fails the document."""
    doc = tmp_path / "bad.md"
    doc.write_text("```console\n$ toolweave run no_such_job\n```\n")
    (block,) = blocks_of(doc)
    block.document = ROOT / "README.md"  # for `where`
    session = Session(tmp_path)
    with pytest.raises(pytest.fail.Exception, match="no_such_job"):
        session.run(block, block.commands[0])
