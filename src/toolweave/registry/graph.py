"""The step graph of a job as validation sees it: cycles (each named once, by its steps),
the topological order, a step's ancestors; the jobs a job nests, and a chain of nested jobs that
comes back to the job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from toolweave.model.definitions import JobDefinition, Step
from toolweave.model.graph import dependency_graph, reachable, step_order
from toolweave.registry.checks import Catalog
from toolweave.registry.problems import DefinitionError, Problem


def find_cycles(graph: Mapping[str, Sequence[str]], order: Sequence[str]) -> list[list[str]]:
    """One cycle per strongly connected component that has one, each starting at its earliest step.

    ``graph`` maps a node to the nodes it depends on; ``order`` is the declaration order.
    """
    index_of = {node: i for i, node in enumerate(order)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for root in order:
        if root in index:
            continue
        # Iterative Tarjan: (node, iterator position)
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, pos = work.pop()
            if pos == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            deps = graph.get(node, [])
            recurse = False
            for i in range(pos, len(deps)):
                dep = deps[i]
                if dep not in index:
                    work.append((node, i + 1))
                    work.append((dep, 0))
                    recurse = True
                    break
                if dep in on_stack:
                    low[node] = min(low[node], index[dep])
            if recurse:
                continue
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    cycles: list[list[str]] = []
    for component in components:
        members = set(component)
        if len(component) == 1 and component[0] not in graph.get(component[0], []):
            continue
        start = min(component, key=lambda n: index_of.get(n, 0))
        cycles.append(_cycle_through(graph, start, members, index_of))
    cycles.sort(key=lambda c: index_of.get(c[0], 0))
    return cycles


def _cycle_through(
    graph: Mapping[str, Sequence[str]], start: str, members: set[str], index_of: Mapping[str, int]
) -> list[str]:
    """A shortest cycle from ``start`` back to itself inside one strongly connected component."""
    previous: dict[str, str] = {}
    frontier = [start]
    seen = {start}
    while frontier:
        following: list[str] = []
        for node in frontier:
            for dep in sorted(graph.get(node, []), key=lambda n: index_of.get(n, 0)):
                if dep not in members:
                    continue
                if dep == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return list(reversed(path))
                if dep not in seen:
                    seen.add(dep)
                    previous[dep] = node
                    following.append(dep)
        frontier = following
    return [start]  # pragma: no cover - a component with a cycle always has one through start


def topological_order(steps: Sequence[Step]) -> list[str]:
    """Step ids so that every step comes after the steps it depends on; ties keep declaration order.

    Raises ``DefinitionError`` when the steps form a cycle.
    """
    out = step_order(steps)
    if len(out) != len(steps):
        cycles = find_cycles(dependency_graph(steps), [s.step_id for s in steps])
        raise DefinitionError([Problem(None, "steps", _cycle_message(c)) for c in cycles])
    return out


def _cycle_message(cycle: list[str]) -> str:
    if len(cycle) == 1:
        return f"step {cycle[0]!r} depends on itself"
    names = ", ".join(repr(s) for s in cycle)
    chain = " → ".join([*cycle, cycle[0]])
    return f"steps {names} form a cycle ({chain}; each waits for the next)"


def ancestors(graph: Mapping[str, Sequence[str]], step_id: str) -> set[str]:
    """Every step ``step_id`` waits for, directly or not (cycle-safe)."""
    return reachable(graph, graph.get(step_id, []))


def _nested_chain(job: JobDefinition, catalog: Catalog, start: str) -> list[str] | None:
    """The chain of job ids from ``start`` back to ``job`` through nested jobs, if there is one."""
    todo: list[tuple[str, list[str]]] = [(start, [job.job_id, start])]
    seen: set[str] = set()
    while todo:
        current, chain = todo.pop()
        if current == job.job_id:
            return chain
        if current in seen:
            continue
        seen.add(current)
        nested = catalog.get_job(current)
        if nested is None:
            continue
        for step in nested.steps:
            if step.job_id is not None:
                todo.append((step.job_id, [*chain, step.job_id]))
    return None


def nested_job_ids(job: JobDefinition) -> list[str]:
    """The ids of the jobs this job's steps run, in order, without repeats."""
    out: list[str] = []
    for step in job.steps:
        if step.job_id is not None and step.job_id not in out:
            out.append(step.job_id)
    return out
