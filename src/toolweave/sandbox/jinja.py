"""The Jinja environment templates run in: jinja2's sandbox, no constant folding at compile time,
and a bound on what ``*`` and ``**`` may build (``"x" * 10**9`` or ``9 ** 9 ** 9`` is one C call
that no CPU budget interrupts)."""

from __future__ import annotations

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
