"""Step conditions in CEL (the Common Expression Language), evaluated with cel-python.

A condition is parsed once, when its job is registered (``compile_condition``), and evaluated many
times (``evaluate_condition``). It sees two variables:

- ``job``: the run's inputs, e.g. ``job.prompt``;
- ``steps``: ``steps.<stepId>.status`` (``succeeded``, ``skipped``, ``failed`` ...) and
  ``steps.<stepId>.outputs.<name>``; media outputs are artifact objects, so
  ``steps.generate_image.outputs.image.width < 2048`` reads the image's width.

CEL is not Python: there is no ``eval``, no attribute access to Python objects, no I/O, and every
expression terminates. A missing key is an error; guard optional values with ``has(job.x)``.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import celpy
    import lark

# cel-python (and lark, its parser) are imported by the functions that use them: a process that
# meets no condition (a CLI run of one tool) does not pay the 50 ms they take to load

from toolweave.sandbox import BudgetExceeded, piece_budget

VARIABLES = frozenset({"job", "steps"})
MAX_CONDITION_CHARS = 4000
"""The longest condition a definition may hold."""
PARSE_BUDGET_SECONDS = 1.0
"""CPU time parsing one condition may take (it is parsed once per process, then cached)."""
_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_LOOPING = _MACROS | {"reduce", "min"}
"""cel-python's macros (``reduce`` and ``min`` are its extensions)."""

# cel-python logs evaluation errors it then raises; we report them ourselves.
logging.getLogger("celpy").addHandler(logging.NullHandler())


class ConditionError(ValueError):
    """A condition that does not parse, or that could not be evaluated."""


@dataclass(frozen=True)
class CompiledCondition:
    """A parsed condition, ready to evaluate many times."""

    expr: str
    program: Any = field(repr=False, compare=False)
    step_refs: frozenset[str] = frozenset()
    """The step ids the expression reads as ``steps.<id>`` or ``steps["<id>"]``."""
    dynamic_steps: bool = False
    """True when the expression reads ``steps`` other than by a fixed id (then all steps are passed)."""
    job_refs: frozenset[str] = frozenset()
    """The job inputs the expression reads as ``job.<name>`` or ``job["<name>"]``."""
    dynamic_job: bool = False
    """True when the expression reads ``job`` other than by a fixed name (it may read any input)."""
    loops: bool = False
    """True when the expression iterates (a macro: ``all``, ``exists``, ``map``…): its cost may grow
    with the product of its inputs' sizes, so it is evaluated in an evaluator process, under a
    budget (``engine.evaluate``). Without loops, evaluating it costs about what reading its values
    costs, and the planner does it directly."""


@functools.lru_cache(maxsize=1)
def _environment() -> celpy.Environment:
    import celpy

    return celpy.Environment()


def _ident(tree: Any) -> str | None:
    """The identifier of ``member -> primary -> ident``, if ``tree`` is exactly that."""
    import lark

    if isinstance(tree, lark.Tree) and tree.data == "member" and len(tree.children) == 1:
        primary = tree.children[0]
        if isinstance(primary, lark.Tree) and primary.data == "primary" and len(primary.children) == 1:
            ident = primary.children[0]
            if isinstance(ident, lark.Tree) and ident.data == "ident" and ident.children:
                return str(ident.children[0])
    return None


def _string_literal(tree: Any) -> str | None:
    """The value of an expression that is just a string literal, else None."""
    import lark

    node = tree
    while isinstance(node, lark.Tree) and len(node.children) == 1 and node.data != "literal":
        node = node.children[0]
    if isinstance(node, lark.Tree) and node.data == "literal" and node.children:
        token = str(node.children[0])
        if len(token) >= 2 and token[0] == token[-1] and token[0] in "'\"":
            return token[1:-1]
    return None


def _analyse(ast: lark.Tree[Any], expr: str) -> tuple[frozenset[str], bool, frozenset[str], bool]:
    """Check the free variables and collect what is read: ``(step ids, steps read dynamically, job
    input names, job read dynamically)``."""
    import lark

    bound: set[str] = set()
    for node in ast.iter_subtrees():
        if node.data == "member_dot_arg" and len(node.children) >= 3 and str(node.children[1]) in _MACROS:
            args = node.children[2]
            if isinstance(args, lark.Tree) and args.children:
                first = args.children[0]
                while isinstance(first, lark.Tree) and len(first.children) == 1 and first.data != "member":
                    first = first.children[0]
                name = _ident(first)
                if name:
                    bound.add(name)
    refs: set[str] = set()
    job_refs: set[str] = set()
    steps_uses = 0
    fixed_uses = 0
    job_uses = 0
    fixed_job_uses = 0
    for node in ast.iter_subtrees():
        if node.data == "primary" and node.children:
            ident = node.children[0]
            if isinstance(ident, lark.Tree) and ident.data == "ident" and ident.children:
                name = str(ident.children[0])
                if name not in VARIABLES and name not in bound:
                    raise ConditionError(
                        f"condition {expr!r} uses {name!r}; only job and steps are available"
                    )
                if name == "steps":
                    steps_uses += 1
                elif name == "job":
                    job_uses += 1
        if node.data in ("member_dot", "member_index") and len(node.children) == 2:
            root = _ident(node.children[0])
            if root == "job":
                key = str(node.children[1]) if node.data == "member_dot" else _string_literal(node.children[1])
                if key is not None:
                    job_refs.add(key)
                    fixed_job_uses += 1
            if root != "steps":
                continue
            if node.data == "member_dot":
                refs.add(str(node.children[1]))
                fixed_uses += 1
            else:
                key = _string_literal(node.children[1])
                if key is not None:
                    refs.add(key)
                    fixed_uses += 1
    return frozenset(refs), steps_uses != fixed_uses, frozenset(job_refs), job_uses != fixed_job_uses


def compile_condition(expr: str) -> CompiledCondition:
    """Parse ``expr``; raise ``ConditionError`` with a plain sentence when it does not parse."""
    if not isinstance(expr, str) or not expr.strip():
        raise ConditionError("a condition must be a non-empty expression")
    if len(expr) > MAX_CONDITION_CHARS:
        raise ConditionError(f"a condition may be at most {MAX_CONDITION_CHARS:,} characters long (this one has {len(expr):,})")
    _environment()  # built once per process, outside the budget: building the CEL grammar under a trace costs ~1 s
    try:
        with piece_budget(PARSE_BUDGET_SECONDS):
            return _compile(expr)
    except BudgetExceeded:
        raise ConditionError(f"condition {expr[:60]!r}... is too complex: parsing it {BudgetExceeded(PARSE_BUDGET_SECONDS)}") from None


@functools.lru_cache(maxsize=2048)
def _compile(expr: str) -> CompiledCondition:
    from celpy.celparser import CELParseError

    env = _environment()
    try:
        ast = env.compile(expr)
    except CELParseError as exc:
        where = ""
        column = getattr(exc, "column", None)
        if column:
            where = f" at column {column}"
        raise ConditionError(f"condition {expr!r} does not parse{where}") from None
    except Exception as exc:  # the parser may raise lark errors for odd input
        raise ConditionError(f"condition {expr!r} does not parse ({type(exc).__name__})") from None
    refs, dynamic, job_refs, dynamic_job = _analyse(ast, expr)
    loops = any(
        node.data == "member_dot_arg" and len(node.children) >= 2 and str(node.children[1]) in _LOOPING
        for node in ast.iter_subtrees()
    )
    return CompiledCondition(
        expr=expr, program=env.program(ast), step_refs=refs, dynamic_steps=dynamic, job_refs=job_refs,
        dynamic_job=dynamic_job, loops=loops,
    )


def forget_compiled() -> None:
    """Drop every compiled condition (and the environment) of this process."""
    _compile.cache_clear()
    _environment.cache_clear()


def to_cel(value: Any) -> Any:
    """Convert plain data (dicts, lists, text, numbers, booleans, null, Decimal) to CEL values."""
    from celpy import celtypes

    if value is None:
        return None
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int):
        return celtypes.IntType(value)
    if isinstance(value, float | Decimal):
        return celtypes.DoubleType(float(value))
    if isinstance(value, str):
        return celtypes.StringType(value)
    if isinstance(value, bytes):
        return celtypes.BytesType(value)
    if isinstance(value, Mapping):
        return celtypes.MapType({celtypes.StringType(str(k)): to_cel(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return celtypes.ListType([to_cel(v) for v in value])
    return celtypes.StringType(str(value))


def _first_line(exc: BaseException) -> str:
    args = getattr(exc, "args", ())
    text = str(args[0]) if args else str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


@functools.lru_cache(maxsize=1)
def _budgeted_evaluator() -> type:
    """cel-python's interpreter with a CPU budget checked as it enters each node of the expression
    (``sub_evaluator`` hands the same budget to the evaluators of macros). The budget stops the
    evaluation *between* nodes: a trace function raising anywhere inside cel-python left its state
    half-changed (one interrupted evaluation in about 25 came out as a wrong "no such overload").
    (A class made on first use: cel-python is imported lazily.)"""
    from celpy.evaluation import Evaluator

    class BudgetedEvaluator(Evaluator):
        def __init__(self, ast: Any, activation: Any, budget: list[float]) -> None:
            super().__init__(ast, activation)
            self._budget = budget  # [deadline (thread CPU time), seconds, nodes entered]

        def sub_evaluator(self, ast: Any) -> Any:
            return BudgetedEvaluator(ast, self.activation, self._budget)

        def _visit_tree(self, tree: Any) -> Any:
            budget = self._budget
            budget[2] += 1
            if budget[2] % 64 == 0 and time.thread_time() > budget[0]:
                raise BudgetExceeded(budget[1])
            return super()._visit_tree(tree)

    return BudgetedEvaluator


def evaluate_condition(
    compiled: CompiledCondition, *, job: Mapping[str, Any], steps: Mapping[str, Mapping[str, Any]],
    budget_seconds: float | None = None,
) -> bool:
    """Evaluate a compiled condition; raise ``ConditionError`` naming the expression on any error.
    With ``budget_seconds``, ``BudgetExceeded`` once it has used that much CPU time."""
    from celpy import celtypes
    from celpy.evaluation import CELEvalError

    if compiled.dynamic_steps:
        visible: Mapping[str, Any] = steps
    else:
        visible = {sid: steps[sid] for sid in compiled.step_refs if sid in steps}
    activation = {"job": to_cel(dict(job)), "steps": to_cel(visible)}
    try:
        if budget_seconds is None:
            result = compiled.program.evaluate(activation)
        else:
            runner = compiled.program
            budget = [time.thread_time() + budget_seconds, budget_seconds, 0.0]
            result = _budgeted_evaluator()(runner.ast, runner.new_activation(), budget).evaluate(activation)
    except CELEvalError as exc:
        raise ConditionError(f"condition {compiled.expr!r} could not be evaluated: {_cause(exc)}") from None
    except Exception as exc:
        raise ConditionError(
            f"condition {compiled.expr!r} could not be evaluated: {_first_line(exc)}"
        ) from None
    if isinstance(result, CELEvalError):
        raise ConditionError(f"condition {compiled.expr!r} could not be evaluated: {_cause(result)}")
    if not isinstance(result, celtypes.BoolType | bool):
        raise ConditionError(f"condition {compiled.expr!r} gave {result!r}, not true or false")
    return bool(result)


_MISSING_RE = re.compile(r"no such member in mapping: \\*'([^'\\]*)")
_OVERLOAD_RE = re.compile(
    r"no matching overload for (?:Token\('RULE', ')?([\w&|!\[\]]+)'?\)? applied to '\((.*?)\)'"
)
_CLASS_RE = re.compile(r"<class 'celpy\.celtypes\.(\w+?)(?:Type)?'>")
_OPERATORS = {
    "relation_lt": "<",
    "relation_le": "<=",
    "relation_gt": ">",
    "relation_ge": ">=",
    "relation_eq": "==",
    "relation_ne": "!=",
    "relation_in": "in",
    "addition_add": "+",
    "addition_sub": "-",
    "multiplication_mul": "*",
    "multiplication_div": "/",
    "multiplication_mod": "%",
    "_&&_": "&&",
    "_||_": "||",
    "_[_]": "indexing",
}


def _cause(exc: BaseException) -> str:
    """A plain sentence for a CEL evaluation error."""
    text = repr(exc)
    missing = _MISSING_RE.search(text)
    if missing:
        return f"there is no {missing.group(1)!r} (guard optional values with has(...))"
    overload = _OVERLOAD_RE.search(text)
    if overload:
        operator = _OPERATORS.get(overload.group(1), overload.group(1))
        kinds = [k.lower() for k in _CLASS_RE.findall(overload.group(2))]
        if kinds and "celevalerror" not in text.lower().split("applied to", 1)[1][:200]:
            return f"{operator} cannot be applied to {' and '.join(kinds)} (use int() or double() to convert)"
        return f"{operator} cannot be applied to these values"
    args = getattr(exc, "args", ())
    return str(args[0]).splitlines()[0] if args else type(exc).__name__


__all__ = ["CompiledCondition", "ConditionError", "compile_condition", "evaluate_condition", "to_cel"]
