"""Property tests: random step graphs are accepted exactly when acyclic, and the order is sound."""

from __future__ import annotations

import graphlib

from hypothesis import given, settings
from hypothesis import strategies as st

from toolweave.model.definitions import JobDefinition, ToolDefinition
from toolweave.registry import DefinitionError, MemoryCatalog, topological_order, validate_job
from toolweave.registry.graph import find_cycles

NOOP = ToolDefinition.model_validate(
    {
        "toolId": "noop",
        "service": "builtin",
        "inputSchema": {"x": {"type": "json"}},
        "outputSchema": {"out": {"type": "json"}},
    }
)
CATALOG = MemoryCatalog(tools=[NOOP])


@st.composite
def step_graphs(draw: st.DrawFn) -> dict[str, list[str]]:
    n = draw(st.integers(min_value=1, max_value=9))
    names = [f"s{i}" for i in range(n)]
    edges = draw(st.lists(st.tuples(st.sampled_from(names), st.sampled_from(names)), max_size=n * 2))
    graph: dict[str, list[str]] = {name: [] for name in names}
    for a, b in edges:
        if b not in graph[a]:
            graph[a].append(b)
    return graph


def to_job(graph: dict[str, list[str]], *, implied: bool) -> JobDefinition:
    steps = []
    for name, deps in graph.items():
        step: dict[str, object] = {"stepId": name, "toolId": "noop"}
        if implied and deps:
            # Half of the dependencies are implied by mappings instead of being listed.
            mapped, listed = deps[::2], deps[1::2]
            step["inputMappings"] = [
                {"sourceStepId": d, "sourceOutputName": "out", "targetInputName": "x"} for d in mapped[:1]
            ]
            step["dependencies"] = listed + mapped[1:]
        else:
            step["dependencies"] = deps
        steps.append(step)
    return JobDefinition.model_validate({"jobId": "g", "steps": steps})


def is_acyclic(graph: dict[str, list[str]]) -> bool:
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(step_graphs(), st.booleans())
def test_accepted_exactly_when_acyclic(graph: dict[str, list[str]], implied: bool) -> None:
    job = to_job(graph, implied=implied)
    problems = validate_job(job, CATALOG)
    cycle_words = ("cycle", "depends on itself", "its own outputs")
    cycle_problems = [p for p in problems if any(w in p.message for w in cycle_words)]
    assert problems == cycle_problems  # nothing else is wrong with these jobs
    assert (problems == []) == is_acyclic(graph)


@settings(max_examples=300, deadline=None)
@given(step_graphs(), st.booleans())
def test_order_respects_every_dependency(graph: dict[str, list[str]], implied: bool) -> None:
    job = to_job(graph, implied=implied)
    if not is_acyclic(graph):
        try:
            topological_order(job.steps)
        except DefinitionError as exc:
            assert exc.problems
        else:  # pragma: no cover - would be a bug
            raise AssertionError("a cyclic graph was ordered")
        return
    order = topological_order(job.steps)
    assert sorted(order) == sorted(graph)
    position = {sid: i for i, sid in enumerate(order)}
    for sid, deps in graph.items():
        for dep in deps:
            assert position[dep] < position[sid]
    assert topological_order(job.steps) == order  # deterministic


@settings(max_examples=200, deadline=None)
@given(step_graphs())
def test_every_reported_cycle_is_a_real_cycle(graph: dict[str, list[str]]) -> None:
    cycles = find_cycles(graph, list(graph))
    for cycle in cycles:
        assert len(set(cycle)) == len(cycle)
        for i, node in enumerate(cycle):
            assert cycle[(i + 1) % len(cycle)] in graph[node]
    assert (cycles == []) == is_acyclic(graph)


def test_ties_keep_declaration_order() -> None:
    job = to_job({"b": [], "a": [], "c": ["a"], "d": []}, implied=False)
    assert topological_order(job.steps) == ["b", "a", "c", "d"]
