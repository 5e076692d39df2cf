"""How long the command line takes to answer: ``toolweave --help`` and a run of a builtin tool.

    python bench/startup.py --repeat 10 --json

Runs each command ``--repeat`` times in a fresh process and reports the wall time (min, median,
max) and the CPU time of the median run. The home (``TOOLWEAVE_HOME``, a temporary folder) is made
warm first — its store created and migrated by one run — as it is for anyone who has run a
command before. Python's bytecode is compiled first too (``compileall`` of ``src``), as an install
does: with ``PYTHONDONTWRITEBYTECODE`` set and nothing compiled, every start compiles every module.

Start-up is mostly Python importing modules, so its figures are only as fast as the machine: the
result carries ``machine`` (the median of three fresh interpreters: one doing nothing, one importing
the command line's libraries typer and rich, one running a fixed loop of ten million additions) so that
figures from two machines or two days can be compared.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from procstat import positive

ROOT = Path(__file__).resolve().parent.parent
TOOLWEAVE = Path(sys.executable).parent / "toolweave"
COMMANDS = {
    "help": ["--help"],
    "run_builtin": ["run", "text.template", "-i", "template=hello {{ name }}", "-i", 'variables={"name": "you"}',
                    "--wait", "--view", "quiet"],
}


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run of ``toolweave argv``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([str(TOOLWEAVE), *argv], env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"toolweave {' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


MACHINE = {
    "bare_python_s": "pass",
    "import_typer_rich_s": "import typer, rich.console",
    "loop_10m_s": "s = 0\nfor i in range(10_000_000): s += i",
}


def machine(env: dict[str, str]) -> dict[str, float]:
    """Wall seconds (median of three fresh processes) of each of ``MACHINE``'s programs."""
    figures = {}
    for name, program in MACHINE.items():
        walls = []
        for _ in range(3):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", program], env=env, check=True)
            walls.append(time.perf_counter() - started)
        figures[name] = round(statistics.median(walls), 3)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=positive, default=10)
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()
    compileall.compile_dir(str(ROOT / "src"), quiet=1)
    home = Path(tempfile.mkdtemp(prefix="toolweave-startup-"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(TOOLWEAVE_HOME=str(home))
    timed(COMMANDS["run_builtin"], env)  # a warm home: the store exists and is migrated
    result: dict[str, Any] = {"repeat": args.repeat, "load_avg_1m": round(os.getloadavg()[0], 2)}
    for name, argv in COMMANDS.items():
        runs = sorted((timed(argv, env) for _ in range(args.repeat)), key=lambda r: r[0])
        walls = [w for w, _ in runs]
        result[name] = {
            "wall_s_min": round(walls[0], 3),
            "wall_s_median": round(statistics.median(walls), 3),
            "wall_s_max": round(walls[-1], 3),
            "cpu_s_median_run": round(runs[len(runs) // 2][1], 3),
        }
    result["machine"] = machine(env)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>12}: {value}")


if __name__ == "__main__":
    main()
