"""The planner's rules that stand apart from its walk over the steps: the order of a job's steps,
the backoff of a retry (deterministic jitter), the seeds an attempt draws, a run's final outputs,
the shape of an error. Pure: no I/O."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from toolweave.engine.actions import StepView
from toolweave.engine.mapping import MappingError, follow_path
from toolweave.model.definitions import JobDefinition, Step
from toolweave.model.graph import output_source, sink_steps, step_order
from toolweave.model.status import GenerationStatus, StepStatus


def topological_order(job: JobDefinition) -> list[str]:
    """Step ids in dependency order; ties keep the order of the file (a validated job has no cycle)."""
    return step_order(job.steps)


@dataclass(frozen=True, slots=True)
class Graph:
    """What the planner needs of a job's step graph to decide only the steps a transition touches:
    each step's place in the order, its dependencies (explicit and implied by its sources) and the
    steps that depend on it; the steps that map, nest a job or ask."""

    order: tuple[str, ...]
    steps: Mapping[str, Step]
    index: Mapping[str, int]
    dependencies: Mapping[str, frozenset[str]]
    dependents: Mapping[str, tuple[str, ...]]
    maps: tuple[str, ...]
    nested: tuple[str, ...]
    asks: tuple[str, ...]
    sinks: tuple[str, ...]
    """Steps no other step depends on, in declaration order (``model.graph.sink_steps``)."""


_GRAPHS: dict[int, tuple[JobDefinition, Graph]] = {}
_GRAPHS_KEPT = 512


def graph_of(job: JobDefinition) -> Graph:
    """The job's ``Graph``, made once per definition object (definitions are immutable snapshots,
    kept by the engine; a few hundred graphs are kept)."""
    found = _GRAPHS.get(id(job))
    if found is not None and found[0] is job:
        return found[1]
    order = tuple(topological_order(job))
    dependencies = {s.step_id: frozenset(s.all_dependencies) for s in job.steps}
    dependents: dict[str, list[str]] = {sid: [] for sid in order}
    for sid in order:
        for dep in dependencies.get(sid, ()):
            if dep in dependents:
                dependents[dep].append(sid)
    graph = Graph(
        order=order, steps={s.step_id: s for s in job.steps}, index={sid: i for i, sid in enumerate(order)}, dependencies=dependencies,
        dependents={sid: tuple(after) for sid, after in dependents.items()},
        maps=tuple(s.step_id for s in job.steps if s.map is not None),
        nested=tuple(s.step_id for s in job.steps if s.job_id),
        asks=tuple(s.step_id for s in job.steps if s.ask is not None),
        sinks=tuple(sink_steps(job.steps)),
    )
    if len(_GRAPHS) >= _GRAPHS_KEPT:
        try:  # the oldest goes (another thread may be changing the dict: then nothing goes)
            del _GRAPHS[next(iter(_GRAPHS))]
        except (StopIteration, RuntimeError, KeyError):
            pass
    _GRAPHS[id(job)] = (job, graph)
    return graph


def retry_delay(run_id: str, step_id: str, attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with equal jitter, derived deterministically from the attempt."""
    delay = min(cap, base * 2.0 ** max(0, attempt - 1))
    digest = hashlib.blake2b(f"{run_id}:{step_id}:{attempt}".encode(), digest_size=8).digest()
    fraction = int.from_bytes(digest, "big") / 2**64
    return delay / 2 + fraction * delay / 2


MAX_RETRY_AFTER_SECONDS = 3600.0
"""A backend's ``Retry-After`` is honoured up to this (a hostile or broken header cannot park a
step for days; the run's deadline still applies)."""


def seeded(run_id: str, step_id: str, attempt: int) -> random.Random:
    """The random source of one attempt's unmapped seeds: random-looking, and the same every time
    the planner decides that attempt (``decide`` stays deterministic)."""
    digest = hashlib.blake2b(f"seed:{run_id}:{step_id}:{attempt}".encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


def retry_after(error: dict[str, Any]) -> float:
    value = error.get("retry_after_seconds")
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        return 0.0
    return min(float(value), MAX_RETRY_AFTER_SECONDS)


def _follow_path(value: Any, path: str | None) -> Any:
    return follow_path(value, path) if path else value


def resolve_job_outputs(job: JobDefinition, steps: Mapping[str, StepView]) -> dict[str, Any]:
    """The run's final outputs from the succeeded steps.

    Declared outputs name their source step (or resolve to the single sink step that has an
    output of that name). Without an ``outputSchema``, the outputs of the sink steps are merged
    (prefixed ``stepId.`` where two sinks share a name).
    """
    result: dict[str, Any] = {}
    sinks = graph_of(job).sinks
    if job.output_schema:
        for out in job.output_schema:
            found = output_source(job, out, sinks=sinks)
            if found is None:
                continue
            source, name, path = found
            view = steps.get(source)
            if view is None or view.status is not StepStatus.SUCCEEDED or name not in (view.outputs or {}):
                continue
            try:
                result[out.name] = _follow_path((view.outputs or {})[name], path)
            except (KeyError, IndexError, TypeError, MappingError):
                continue
        return result
    counts: dict[str, int] = {}
    for sid in sinks:
        for name in steps[sid].outputs or {}:
            counts[name] = counts.get(name, 0) + 1
    for sid in sinks:
        view = steps[sid]
        if view.status is not StepStatus.SUCCEEDED:
            continue
        for name, value in (view.outputs or {}).items():
            result[name if counts[name] == 1 else f"{sid}.{name}"] = value
    return result


def error(message: str, *, retryable: bool = False, code: str | None = None) -> dict[str, Any]:
    return {"message": message, "retryable": retryable, "code": code}


SENT_GRACE_SECONDS = 120.0
"""How long past its step's deadline a generation whose submit was sent (marked, no platform id
yet) is left to the worker submitting it, which records what became of it: its own deadline, a
look-up (``service_calls.LOOKUP_SECONDS``) and, if it died, another worker's recovery. The step's
deadline does not make it a retryable timeout meanwhile: a retry would send it again."""


def work_sending(status: str, sent_at: float | None, platform_run_id: str | None) -> bool:
    """A generation's submit was sent (marked) and has not recorded what became of it: no platform
    run id yet, not ended (a service's stream may have reported progress meanwhile)."""
    return sent_at is not None and platform_run_id is None and not GenerationStatus(status).terminal


def deadline_error(timeout: float, work_error: dict[str, Any] | None, *, sending: bool) -> dict[str, Any]:
    """The failure of work past its step's deadline (``timeout``): a retryable timeout, unless its
    submit was sent and never recorded what became of it (``sending``, past ``SENT_GRACE_SECONDS``):
    then it may have been taken, and paid for, and is not sent again."""
    if sending:
        found = error(f"timed out after {timeout:g} s with its request sent and no outcome recorded "
                      f"{SENT_GRACE_SECONDS:g} s later (it may have been taken and paid for): not sent again",
                      code="unknown_outcome")
        return {**found, "details": {"cause": "timeout", "maybePaid": True}}
    return error(with_last_poll(f"timed out after {timeout:g} s", work_error), retryable=True, code="timeout")


def with_last_poll(message: str, work_error: dict[str, Any] | None) -> str:
    """A timeout's message with what the generation's last poll met, when it failed (a running
    generation's ``error`` is its last poll's failure: ``Engine.reschedule_poll_tx``)."""
    last = work_error.get("message") if isinstance(work_error, dict) else None
    return f"{message}; last poll: {last}" if last else message

