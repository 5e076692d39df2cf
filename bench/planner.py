"""The planner's work per transition of a wide fan-out: does it depend on the steps already finished?

    python bench/planner.py --widths 4 32 256 1024 --json

For a 1 → W → 1 fan-out of ``test.instant`` (the join reads every branch's output), ``decide`` alone
(no store), in µs per call, for one transition each:

- ``first``: the first branch ends (W - 1 still running);
- ``half``: a branch ends with half of them finished before;
- ``last_but_one``: a branch ends with all but one finished before;
- ``join``: the last branch ends and the join starts.

``touched`` is the planner as the engine calls it after a step's work ended (``RunView.touched``:
it decides that step and what follows); ``full`` decides every step of the run, as it did before
(and still does on a timer, an answer, a cancel).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from toolweave.engine import plan  # noqa: E402
from toolweave.model.definitions import JobDefinition, ToolDefinition  # noqa: E402
from toolweave.model.status import GenerationStatus, RunStatus, StepStatus  # noqa: E402

TOOL = ToolDefinition.model_validate({
    "toolId": "t", "service": "builtin",
    "inputSchema": {"value": {"type": "integer", "default": 0}, "note": {"type": "text", "default": ""}},
})


def fan(width: int) -> JobDefinition:
    """As ``bench/engine.py --variant fanoutW``: the join maps the root's output and waits for every branch."""
    return JobDefinition.model_validate({
        "jobId": f"fan{width}",
        "steps": [
            {"stepId": "root", "toolId": "t", "inputMappings": [{"value": 0, "targetInputName": "value"}]},
            *({"stepId": f"b{i}", "toolId": "t", "dependencies": ["root"],
               "inputMappings": [{"sourceStepId": "root", "sourceOutputName": "value", "targetInputName": "value"}]}
              for i in range(width)),
            {"stepId": "join", "toolId": "t", "dependencies": [f"b{i}" for i in range(width)],
             "inputMappings": [{"sourceStepId": "root", "sourceOutputName": "value", "targetInputName": "value"}]},
        ],
    })


def view(job: JobDefinition, width: int, finished: int, touched: bool) -> plan.RunView:
    """Branches ``0 .. finished-1`` succeeded, branch ``finished`` just ended, the rest running."""
    steps: dict[str, plan.StepView] = {"root": plan.StepView("root", StepStatus.SUCCEEDED, attempt=1, outputs={"value": 1})}
    for i in range(width):
        sid = f"b{i}"
        if i < finished:
            steps[sid] = plan.StepView(sid, StepStatus.SUCCEEDED, attempt=1, tool_id="t", outputs={"value": i})
        else:
            ended = i == finished
            steps[sid] = plan.StepView(
                sid, StepStatus.RUNNING, attempt=1, tool_id="t", started_at=0.0,
                work_status=GenerationStatus.COMPLETED if ended else GenerationStatus.PROCESSING,
                work_outputs={"value": i} if ended else None,
            )
    steps["join"] = plan.StepView("join")
    unfinished = frozenset(sid for sid, v in steps.items() if not v.status.terminal)
    return plan.RunView(
        run_id="run_bench", status=RunStatus.RUNNING, job=job, inputs={}, steps=steps, tools={"t": TOOL},
        order=tuple(plan.topological_order(job)), touched=frozenset({f"b{finished}"}) if touched else None,
        unfinished=unfinished if touched else None,
    )


def per_call_us(run: plan.RunView, budget_s: float = 0.3) -> float:
    """The best of five rounds, each as many calls as fit in ``budget_s / 5``."""
    best = float("inf")
    for _ in range(5):
        calls, started = 0, time.perf_counter()
        while True:
            plan.decide(run, 1.0)
            calls += 1
            elapsed = time.perf_counter() - started
            if elapsed >= budget_s / 5:
                break
        best = min(best, elapsed / calls)
    return round(best * 1e6, 1)


def measure(width: int) -> dict[str, Any]:
    job = fan(width)
    cases = {"first": 0, "half": width // 2, "last_but_one": width - 2, "join": width - 1}
    result: dict[str, Any] = {"width": width}
    for mode in ("touched", "full"):
        result[mode] = {name: per_call_us(view(job, width, finished, mode == "touched"))
                        for name, finished in cases.items()}
    actions = plan.decide(view(job, width, width - 1, True), 1.0)
    kinds = [type(a).__name__ for a in actions]
    assert kinds == ["CompleteStep", "StartStep"], kinds
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=int, nargs="+", default=[4, 32, 256, 1024])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = [measure(width) for width in args.widths]
    if args.json:
        print(json.dumps(results))
        return
    print(f"{'width':>6} {'mode':>8} {'first':>9} {'half':>9} {'last-1':>9} {'join':>9}  (µs per decide)")
    for r in results:
        for mode in ("touched", "full"):
            c = r[mode]
            print(f"{r['width']:>6} {mode:>8} {c['first']:>9} {c['half']:>9} {c['last_but_one']:>9} {c['join']:>9}")


if __name__ == "__main__":
    main()
