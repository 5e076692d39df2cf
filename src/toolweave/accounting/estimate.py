"""What a run will cost before it runs. Pure: the history of past generations is read by the caller
(``store.credits.tool_history``) and passed in.

Each step that can run is priced once (retries and fallbacks are not counted; a step with a
condition is counted as if it runs), from its tool's costing model:

- ``static``: its amount;
- ``table``: the price of the inputs the step is given from the job's inputs and fixed values
  (and the tool's defaults); else the median cost of its past generations;
- ``machine``: the rate × the median duration of its past completed generations, or
  × ``fallback_seconds`` when it has none;
- ``output_unit``: the median cost of its past generations, or one unit;
- ``usage``: the median cost of its past generations; without history the cost is not known in
  advance (counted as 0 and flagged ``unknown``);
- no costing model: free.

A map step counts once per item when its list is a job input, else once (flagged). A nested job
counts its own steps.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from toolweave.model.costing import table_price
from toolweave.model.credits import UNIT, money_text
from toolweave.model.definitions import JobDefinition, RateSource, Step, ToolDefinition

DEFAULT_FALLBACK_SECONDS = 60.0


@dataclass(frozen=True)
class History:
    """A tool's recent completed generations: how many, their median duration and cost."""

    count: int = 0
    seconds: Decimal | None = None
    cost: Decimal | None = None

    @classmethod
    def of(cls, rows: Sequence[Mapping[str, Any]]) -> History:
        durations = [Decimal(int(r["duration_ms"])) / 1000 for r in rows if r.get("duration_ms") is not None]
        costs = [Decimal(r["cost_usd"]) for r in rows if r.get("cost_usd") is not None]
        return cls(
            count=len(rows),
            seconds=statistics.median(durations) if durations else None,
            cost=statistics.median(costs) if costs else None,
        )


@dataclass
class StepCost:
    step_id: str
    tool_id: str | None
    each: Decimal
    """One call's cost."""
    basis: str
    """How it was found, in words."""
    calls: int = 1
    known: bool = True

    @property
    def cost(self) -> Decimal:
        return self.each * self.calls

    def as_dict(self) -> dict[str, Any]:
        return {"stepId": self.step_id, "toolId": self.tool_id, "cost": money_text(self.cost),
                "each": money_text(self.each), "calls": self.calls, "basis": self.basis, "known": self.known}


@dataclass
class Estimate:
    steps: list[StepCost] = field(default_factory=list)

    @property
    def total(self) -> Decimal:
        return sum((s.cost for s in self.steps), Decimal(0)).quantize(UNIT).normalize()

    @property
    def unknown(self) -> bool:
        """Some of the cost is not known in advance."""
        return any(not s.known for s in self.steps)

    def per_step(self) -> dict[str, str]:
        """One call's estimate per top-level step (what a cost ceiling compares)."""
        found: dict[str, Decimal] = {}
        for s in self.steps:
            top = s.step_id.split("/", 1)[0]
            found[top] = found.get(top, Decimal(0)) + (s.each if "/" not in s.step_id else s.cost)
        return {k: str(v) for k, v in found.items()}

    def as_dict(self) -> dict[str, Any]:
        return {"total": money_text(self.total), "known": not self.unknown, "steps": [s.as_dict() for s in self.steps]}


def estimate(
    job: JobDefinition,
    tools: Mapping[str, ToolDefinition],
    nested: Mapping[str, JobDefinition],
    inputs: Mapping[str, Any],
    history: Mapping[str, History],
    rates: Mapping[str, Decimal],
    fallback_seconds: float = DEFAULT_FALLBACK_SECONDS,
) -> Estimate:
    """The estimate of a run of ``job`` with ``inputs`` (``tools`` and ``nested``: every tool and
    nested job it may call; ``history`` by tool id)."""
    found = Estimate()
    _job(found, job, tools, nested, inputs, history, rates, fallback_seconds, prefix="", depth=0)
    return found


def _job(
    found: Estimate, job: JobDefinition, tools: Mapping[str, ToolDefinition], nested: Mapping[str, JobDefinition],
    inputs: Mapping[str, Any], history: Mapping[str, History], rates: Mapping[str, Decimal], fallback: float,
    prefix: str, depth: int,
) -> None:
    for step in job.steps:
        given = _step_inputs(step, inputs)
        calls, calls_known = _calls(step, inputs)
        name = prefix + step.step_id
        if step.job_id is not None:
            child = nested.get(step.job_id)
            if child is None or depth >= 8:
                found.steps.append(StepCost(name, None, Decimal(0), f"nested job {step.job_id} not priced", known=False))
                continue
            inner = Estimate()
            _job(inner, child, tools, nested, given, history, rates, fallback, prefix=name + "/", depth=depth + 1)
            for part in inner.steps:
                part.calls *= calls
                part.known = part.known and calls_known
            found.steps.extend(inner.steps)
            continue
        tool = tools.get(step.tool_id or "")
        if tool is None:
            found.steps.append(StepCost(name, step.tool_id, Decimal(0), "tool not known", known=False))
            continue
        each, basis, known = tool_cost(tool, given, history.get(tool.tool_id, History()), rates, fallback)
        if step.map is not None:
            basis += f"; × {calls} items" if calls_known else "; items not known in advance, counted once"
        found.steps.append(StepCost(name, tool.tool_id, each, basis, calls=calls, known=known and calls_known))


def tool_cost(
    tool: ToolDefinition, inputs: Mapping[str, Any], history: History, rates: Mapping[str, Decimal], fallback: float
) -> tuple[Decimal, str, bool]:
    """(one call's cost, how it was found, whether it is known in advance)."""
    model = tool.costing_model
    if model is None:
        return Decimal(0), "no costing model: free", True
    past = f"median of its last {history.count} generations"
    if model.rate_source is RateSource.STATIC and model.static_cost is not None:
        return model.static_cost.amount, "static cost", True
    if model.rate_source is RateSource.TABLE and model.price_table is not None:
        given = {p.name: p.default for p in tool.input_schema if p.default is not None}
        given.update(inputs)
        price = table_price(model.price_table, given)
        if price is not None:
            return price, "price table", True
        if history.cost is not None:
            return history.cost, f"price table has no price for these inputs; {past}", True
        return Decimal(0), "price table has no price for these inputs and no history", False
    if model.rate_source is RateSource.MACHINE:
        rate = model.rate if model.rate is not None else rates.get(model.machine_class or "")
        if rate is None:
            return Decimal(0), f"no rate for machine class {model.machine_class}", False
        if history.seconds is not None:
            seconds, basis = history.seconds, f"rate × median duration {history.seconds} s of its last {history.count} generations"
        else:
            seconds, basis = Decimal(str(fallback)), f"rate × {fallback:g} s (no history: setting estimate_fallback_seconds)"
        return (rate * seconds).quantize(UNIT), basis, True
    if history.cost is not None:
        return history.cost, past, True
    if model.rate_source is RateSource.OUTPUT_UNIT and model.unit_cost is not None:
        return model.unit_cost.amount, "one output unit (no history)", True
    return Decimal(0), "reported by the service after the run (no history)", False


def _step_inputs(step: Step, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The inputs a step is given from the job's inputs and fixed values (others are not known
    before the run)."""
    given: dict[str, Any] = {}
    for mapping in step.input_mappings:
        if mapping.template is not None or mapping.collect is not None or mapping.source_step_id is not None:
            continue
        if mapping.source_job_input is not None:
            if mapping.source_job_input in inputs and mapping.path is None:
                given[mapping.target_input_name] = inputs[mapping.source_job_input]
        elif mapping.value is not None:
            given[mapping.target_input_name] = mapping.value
    return given


def _calls(step: Step, inputs: Mapping[str, Any]) -> tuple[int, bool]:
    """How many times a step calls its tool: once, or once per item of a map step whose list is a
    job input."""
    if step.map is None:
        return 1, True
    over = step.map.over
    if over.source_job_input is not None and over.path is None:
        items = inputs.get(over.source_job_input)
        if isinstance(items, list):
            return min(len(items), step.map.max_items), True
    return 1, False
