"""The step graph of a job: dependencies, order, sinks, where job outputs come from. Pure."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence

from toolweave.model.definitions import JobDefinition, JobOutput, Step


def dependency_graph(steps: Sequence[Step]) -> dict[str, list[str]]:
    """``step id → the step ids it waits for`` (explicit and implied by mappings), known ids only."""
    known = {s.step_id for s in steps}
    graph: dict[str, list[str]] = {}
    for step in steps:
        graph.setdefault(step.step_id, [])
        for dep in step.all_dependencies:
            if dep in known and dep not in graph[step.step_id]:
                graph[step.step_id].append(dep)
    return graph


def reachable(edges: Mapping[str, Sequence[str]], starts: Iterable[str]) -> set[str]:
    """``starts`` and every node reached from them along ``edges`` (cycle-safe)."""
    seen: set[str] = set()
    todo = list(starts)
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        todo.extend(edges.get(node, []))
    return seen


def descendants(steps: Sequence[Step], roots: Iterable[str]) -> set[str]:
    """``roots`` and every step that depends on one of them, directly or not."""
    dependents: dict[str, list[str]] = {}
    for sid, deps in dependency_graph(steps).items():
        for dep in deps:
            dependents.setdefault(dep, []).append(sid)
    return reachable(dependents, roots)


def step_order(steps: Sequence[Step]) -> list[str]:
    """Step ids so that every step comes after the steps it waits for; ties keep declaration order.

    Steps caught in a cycle (which registration refuses) are left out: compare the length with
    ``len(steps)`` to detect one.
    """
    order = [s.step_id for s in steps]
    graph = dependency_graph(steps)
    position = {sid: i for i, sid in enumerate(order)}
    waiting = {sid: len(deps) for sid, deps in graph.items()}
    dependents: dict[str, list[str]] = {sid: [] for sid in graph}
    for sid, deps in graph.items():
        for dep in deps:
            dependents[dep].append(sid)
    ready = [position[sid] for sid, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    out: list[str] = []
    while ready:
        sid = order[heapq.heappop(ready)]
        out.append(sid)
        for dependent in dependents[sid]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                heapq.heappush(ready, position[dependent])
    return out


def sink_steps(steps: Sequence[Step]) -> list[str]:
    """Steps no other step depends on, in declaration order."""
    graph = dependency_graph(steps)
    needed = {dep for deps in graph.values() for dep in deps}
    return [s.step_id for s in steps if s.step_id not in needed]


def output_source(
    job: JobDefinition, output: JobOutput, *, sinks: Sequence[str] | None = None
) -> tuple[str, str, str | None] | None:
    """``(step id, output name, path)`` a job output comes from, or None when it cannot be told.

    Without ``sourceStepId`` a job output comes from the job's single sink step (the one no other
    step depends on), from its output named ``sourceOutputName`` or else the job output's own name.
    ``sinks``: the job's ``sink_steps``, when the caller knows them.
    """
    name = output.source_output_name or output.name
    if output.source_step_id is not None:
        return output.source_step_id, name, output.path
    if sinks is None:
        sinks = sink_steps(job.steps)
    if len(sinks) == 1:
        return sinks[0], name, output.path
    return None
