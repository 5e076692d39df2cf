"""CPU time of checking one hostile job definition, as ``POST /jobs/validate`` checks it.

    python bench/validate_cost.py

The definition: 60 steps, each with a condition that is a list literal of 1,641 numbers (3,300
characters; 198,000 together, inside the 200,000-character cap), each different so none is
cached. It prints the CPU and wall time of ``App.check_definition`` and its problems.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from toolweave.app import App
from toolweave.engine import conditions
from toolweave.settings import Settings


def main() -> None:
    ones = ",".join(["1"] * 1640)
    steps = [{"stepId": f"s{i}", "toolId": "test.instant", "condition": f"[{i},{ones}].size() > 0",
              "inputMappings": [{"value": 1, "targetInputName": "value"}]} for i in range(60)]
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        app = App(Settings(home=home, database_url=f"sqlite:///{home / 'bench.db'}", test_tools=True))
        conditions.compile_condition("1 == 1")  # CEL's grammar is built once per process, before
        cpu, wall = time.process_time(), time.perf_counter()
        _, problems = app.check_definition({"jobId": "many_conditions", "steps": steps})
        print(json.dumps({"cpu_s": round(time.process_time() - cpu, 2), "wall_s": round(time.perf_counter() - wall, 2),
                          "problems": len(problems), "first": problems[0].message[:120] if problems else None}))


if __name__ == "__main__":
    main()
