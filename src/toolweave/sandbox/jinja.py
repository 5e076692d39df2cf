"""The Jinja environment templates run in: jinja2's sandbox, no constant folding at compile time,
and a bound on what ``*`` and ``**`` may build (``"x" * 10**9`` or ``9 ** 9 ** 9`` is one C call
that no CPU budget interrupts). And what tells a straight-line template from one that may loop
(``straight_line``), how much a straight-line one may build at most (``work_bound``), and whether
that stays within a fixed multiple of what it reads whatever the values (``bounded_growth``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jinja2 import Environment, meta, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment

MAX_BUILT = 1_000_000
"""The longest text or list ``*`` may build, in characters or items."""
MAX_POWER_BITS = 100_000
"""The largest number ``**`` may build, in bits."""


class _NoFolding(CodeGenerator):
    def _output_child_to_const(self, node: nodes.Expr, frame: Frame, finalize: Any) -> str:
        raise nodes.Impossible()


class _TrackingNoFolding(meta.TrackingCodeGenerator):
    def __init__(self, environment: Environment) -> None:
        CodeGenerator.__init__(self, environment, "<introspection>", "<introspection>", optimized=False)
        self.undeclared_identifiers: set[str] = set()

    def _output_child_to_const(self, node: nodes.Expr, frame: Frame, finalize: Any) -> str:
        raise nodes.Impossible()


def undeclared_variables(ast: nodes.Template, environment: Environment) -> set[str]:
    """``jinja2.meta.find_undeclared_variables`` without its constant folding (which computes
    ``{{ '%*d' % (2000000000, 1) }}`` while merely looking at the template)."""
    codegen = _TrackingNoFolding(environment)
    codegen.visit(ast)
    return set(codegen.undeclared_identifiers)


class BoundedEnvironment(SandboxedEnvironment):
    """No constant folding (``optimized=False``, and none of ``{{ … }}`` output either): Jinja would
    compute a constant expression — ``'x'|center(2000000000)`` — while *compiling*, in the process
    that registers the definition; unfolded, it is computed when rendering, in an evaluator process
    with a memory limit and a CPU budget."""

    intercepted_binops = frozenset({"*", "**"})
    code_generator_class = _NoFolding

    def __init__(self, **options: Any) -> None:
        super().__init__(optimized=False, **options)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int) and len(seq) * times > MAX_BUILT:
                    raise SecurityError(f"'*' would build more than {MAX_BUILT:,} characters or items")
        elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
            if abs(left) > 1 and max(1, abs(left).bit_length()) * right > MAX_POWER_BITS:
                raise SecurityError(f"'**' would build a number of more than {MAX_POWER_BITS:,} bits")
        return super().call_binop(context, operator, left, right)


_STRAIGHT_NODES = (
    nodes.Template, nodes.Output, nodes.TemplateData, nodes.Name, nodes.Getattr, nodes.Getitem, nodes.Const,
    nodes.Concat, nodes.Compare, nodes.Operand, nodes.And, nodes.Or, nodes.Not, nodes.CondExpr, nodes.Add,
    nodes.Sub, nodes.Neg, nodes.Pos, nodes.List, nodes.Tuple, nodes.Filter, nodes.Test, nodes.If,
)
STRAIGHT_FILTERS = frozenset({
    "default", "d", "string", "lower", "upper", "trim", "capitalize", "title", "tojson", "int", "float", "abs",
    "round", "length", "count", "first", "last", "join", "e", "escape", "safe", "list",
})
"""Filters whose cost grows only with the size of their input (no width or count argument)."""


def straight_line(ast: nodes.Template) -> bool:
    """Whether a parsed template is straight-line: no loop, call, macro, ``*``, ``**`` or ``%``, no
    filter outside ``STRAIGHT_FILTERS`` — its work grows with the size of what it reads, not beyond.
    A template that is not may loop: it is rendered in an evaluator process."""
    for node in ast.find_all(nodes.Node):
        if not isinstance(node, _STRAIGHT_NODES):
            return False
        if isinstance(node, nodes.Filter) and (node.name not in STRAIGHT_FILTERS or node.dyn_args or node.dyn_kwargs):
            return False
    return True


GROWTH = 16
"""How many characters one character of a value may become in its text form or through one filter
(``repr`` of ``'\\U000e0001'`` is 12 characters, ``tojson`` of it 12, ``escape`` of ``'`` 5)."""
_SAME_SIZE_FILTERS = frozenset({"trim", "safe", "first", "last"})
_NUMBER_FILTERS = frozenset({"length", "count", "int", "float", "abs", "round"})
_CONST_ARGS = {"join": 2, "round": 2, "int": 2, "float": 1, "trim": 1}
"""Filters that may take arguments (at most this many), given as literals only."""


class _Unbounded(Exception):
    pass


def work_bound(ast: nodes.Template, value_chars: Callable[[str], int], limit: int) -> int | None:
    """An upper bound of the characters a straight-line template builds while it renders — every
    intermediate value counted — when the value of each name it reads is ``value_chars(name)``
    characters of JSON at most (0 for a name it is not given); ``None`` when it may exceed ``limit``
    or cannot be bounded (a filter given a width or a precision from a value, ``tojson`` with an
    indent, a chain of filters each of which may multiply its input). What renders within the bound
    costs a few milliseconds and memory of the same order, whatever a user wrote: it may render
    where it stands, under its CPU budget. (``straight_line`` first: nodes it refuses are not
    bounded here.)"""
    total = 0
    values: dict[str, int] = {}

    def size(node: nodes.Node) -> int:
        nonlocal total
        built = _size(node)
        total += built
        if total > limit:
            raise _Unbounded
        return built

    def _size(node: nodes.Node) -> int:
        if isinstance(node, nodes.TemplateData):
            return len(node.data)
        if isinstance(node, nodes.Const):
            return GROWTH * len(repr(node.value))
        if isinstance(node, nodes.Name):
            if node.name not in values:
                values[node.name] = GROWTH * value_chars(node.name) + 64
            return values[node.name]
        if isinstance(node, nodes.Getattr):
            return size(node.node) + 64
        if isinstance(node, nodes.Getitem):
            size(node.arg)
            return size(node.node) + 64
        if isinstance(node, nodes.Filter):
            return _filter(node)
        if isinstance(node, nodes.Test):
            for arg in [node.node, *node.args, *(kw.value for kw in node.kwargs)]:
                size(arg)
            return 5
        if isinstance(node, nodes.And | nodes.Or | nodes.CondExpr):
            return max(size(child) for child in node.iter_child_nodes())
        if isinstance(node, nodes.Compare | nodes.Not):
            for child in node.iter_child_nodes():
                size(child)
            return 5
        if isinstance(node, nodes.Template | nodes.Output | nodes.If | nodes.Operand | nodes.Concat | nodes.Add
                      | nodes.Sub | nodes.Neg | nodes.Pos | nodes.List | nodes.Tuple):
            return sum(size(child) + 2 for child in node.iter_child_nodes())
        raise _Unbounded

    def _filter(node: nodes.Filter) -> int:
        args = [*node.args, *(kw.value for kw in node.kwargs)]
        base = size(node.node) if node.node is not None else 0
        if node.name in ("default", "d"):
            return max([base, *(size(arg) for arg in args)])
        if args:
            if len(args) > _CONST_ARGS.get(node.name, 0) or not all(isinstance(a, nodes.Const) for a in args):
                raise _Unbounded
            consts = [a.value for a in args if isinstance(a, nodes.Const)]
            if node.name == "round" and any(isinstance(c, int) and not -20 <= c <= 20 for c in consts):
                raise _Unbounded  # (ceil and floor compute 10 ** precision)
            if node.name == "trim" and any(len(str(c)) > 64 for c in consts):
                raise _Unbounded  # (stripping costs the text's length times the characters')
            if node.name == "join":
                return GROWTH * base * (1 + max(len(str(c)) for c in consts))
        if node.name in _SAME_SIZE_FILTERS:
            return base
        if node.name in _NUMBER_FILTERS:
            return base + 400
        return GROWTH * base

    try:
        size(ast)
    except (_Unbounded, RecursionError):
        return None
    return total


MAX_GROWTH = 1 << 16
"""The most characters a template rendered where it stands (by the planner) may build, by
``work_bound``'s reckoning, per character of the values it reads: two or three filters that may
multiply their input in a row (``| tojson | tojson``, ``| list | join(', ')``), not a chain of them."""
MAX_CONSTANT_WORK = 1 << 24
"""The most characters such a template may build from its own text, its values empty."""
_PROBE = 1 << 24


def bounded_growth(ast: nodes.Template) -> bool:
    """Whether what a straight-line template builds is bounded whatever the values it reads are: no
    filter given a width, a precision or a separator from a value (``round(job.p, 'floor')`` computes
    ``10 ** p``, ``join(job.v)`` is quadratic), no chain of filters each of which may multiply its
    input (``| tojson`` doubles what it is given), and at most ``MAX_GROWTH`` characters built per
    character read. Its work then grows linearly with the size of its values, which are stored
    already and capped: the planner may render it where it stands, inside its transaction. It is
    ``work_bound`` with no values and with large ones (a value-independent use of its rules)."""
    empty = work_bound(ast, lambda _: 0, MAX_CONSTANT_WORK)
    if empty is None:
        return False
    large = work_bound(ast, lambda _: _PROBE, MAX_CONSTANT_WORK + MAX_GROWTH * _PROBE)
    return large is not None and large - empty <= MAX_GROWTH * _PROBE
