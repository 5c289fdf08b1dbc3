"""Fused elementwise loops: runs of elementwise nodes over one shape computed in one loop, intermediates in scalars.

    for n in range(N):              a batched vector: one sample per row, j over its k entries
        for j in range(k):
            t1_ = W_x[n, j] + b[j]      each node's scalar code at the loop index (`_element_<Node>`)
            t1[n, j] = t1_
            t2_ = fast_tanh(t1_)        the next node over the same shape joins the loop, reading the scalar

A node is written to an array only when something needs the array; one read once is inlined into its consumer.
"""
from __future__ import annotations

import sympy
from sympy.matrices.expressions.matexpr import MatrixExpr

from .forms import INDENT, describe, form, is_scalar
from ..maths.elementwise import FUNCTIONS, Z
from .scalars import power_code, scalar_code
from ..maths.graph import matrix_children


class ElementwiseLoops:
    """The part of `KernelWriter` that computes elementwise nodes in fused loops (see the module docstring)."""

    def space(self, node: MatrixExpr) -> tuple:
        """The loop nest an elementwise node is computed in."""
        if self.batched(node):
            return ("batch", "1" if is_scalar(node) else self.entries(node))
        if form(node) == "mat":
            return ("matrix", self.size(node.shape[0]), self.size(node.shape[1]))
        return ("vector", self.entries(node))

    def elementwise_loop(self, node: MatrixExpr) -> str:
        """Compute an elementwise node into a new array, inside the open loop when it runs over the same shape."""
        for child in matrix_children(node):  # arrays this loop reads are written before it
            self.prepare(child)
        space = self.space(node)
        loop = self.open_loop
        if loop is None or loop.space != space or space[0] == "matrix":
            loop = Loop(space)
            self.blocks.append(loop)
        name = self.targets.get(node) or self.temporary()
        if node not in self.targets:
            loop.allocations.append(f"{name} = {self.allocation(node)}  # {describe(node, self.arrays)}")
        index = loop_index(space)
        local = f"{name}_"
        loop.body.append(f"{local} = {self.expand(node, index)}")
        loop.body.append(f"{name}[{', '.join(index)}] = {local}")
        loop.locals[node] = local
        return name

    def prepare(self, node: MatrixExpr) -> None:
        """Make sure a node that will be read inside a loop is either inlinable or already an array."""
        if self.inlined(node):
            for child in matrix_children(node):
                self.prepare(child)
        elif node not in self.arrays:
            self.array(node)

    def element(self, node: MatrixExpr, index: tuple) -> str:
        """Scalar code for node[index] inside a loop."""
        if self.open_loop and node in self.open_loop.locals:
            return self.open_loop.locals[node]
        if node in self.arrays or not self.inlined(node):
            return self.read(node, index)
        return self.expand(node, index)

    def expand(self, node: MatrixExpr, index: tuple) -> str:
        """Scalar code for node[index] from its children's elements."""
        return getattr(self, f"_element_{type(node).__name__}")(node, index)

    def read(self, node: MatrixExpr, index: tuple) -> str:
        """Read an array-held node at a loop index, broadcasting scalars and bias vectors over the batch."""
        array = self.array(node)
        batched = self.batched(node)
        if form(node) == "mat" and not batched:
            return f"{array}[{index[0]}, {index[1]}]" if len(index) == 2 else f"{array}[0, 0]"
        if batched:
            return f"{array}[n, 0]" if is_scalar(node) else f"{array}[n, {index[-1]}]"
        return f"{array}[0]" if is_scalar(node) else f"{array}[{index[-1]}]"

    # ---- elementwise nodes: scalar code at an index -------------------------------------------------

    def _element_MatAdd(self, node, index):
        terms = [self.element(t, index) for t in node.args]
        terms.sort(key=lambda term: term.startswith("-"))  # 1 - y rather than -y + 1
        code = terms[0]
        for term in terms[1:]:
            code += f" - {term[1:]}" if term.startswith("-") else f" + {term}"
        return f"({code})"

    def _element_MatMul(self, node, index):
        coefficient, factors = node.as_coeff_matrices()
        scalar_index = ("n", "0") if self.batched(node) else ("0",)
        parts = [self.element(f, index if not is_scalar(f) else scalar_index) for f in factors]
        if coefficient == -1:
            return "-" + " * ".join(parts) if len(parts) == 1 else f"-({' * '.join(parts)})"
        if coefficient != 1:
            parts.insert(0, self.number(coefficient))
        return f"({' * '.join(parts)})"

    def _element_HadamardProduct(self, node, index):
        return f"({' * '.join(self.element(a, index) for a in node.args)})"

    def _element_HadamardPower(self, node, index):
        base, power = node.args
        return power_code(self.element(base, index), power, self.number)

    def _element_Apply(self, node, index):
        function, argument = FUNCTIONS[node.function], self.element(node.argument, index)
        if function.code:
            return function.code.format(z=argument)
        return scalar_code(function.definition, {Z: argument})

    def _element_Spread(self, node, index):
        return self.element(node.argument, ("n", "0") if self.batched(node) else ("0",))

    def _element_Transpose(self, node, index):
        if form(node) == "mat":
            return self.element(node.arg, tuple(reversed(index)))
        return self.element(node.arg, index)

    def _element_OneMatrix(self, node, index):
        return "real(1)"

    def _element_ZeroMatrix(self, node, index):
        return "real(0)"

    def _element_Identity(self, node, index):
        return "real(1)" if len(index) < 2 or index[0] == "n" else f"real({index[0]} == {index[1]})"


class Loop:
    """A fused loop nest: the arrays it fills (allocated above it) and one scalar statement per step."""

    def __init__(self, space: tuple):
        self.space = space
        self.allocations: list[str] = []
        self.body: list[str] = []
        self.locals: dict = {}  # node → the scalar holding it inside this loop

    def lines(self) -> list[str]:
        header = loop_header(self.space)
        depth = INDENT * len(header)
        return self.allocations + header + [depth + line for line in self.body]


def loop_header(space: tuple) -> list[str]:
    if space[0] == "batch" and space[1] == "1":
        return ["for n in range(N):"]
    if space[0] == "batch":
        return ["for n in range(N):", f"{INDENT}for j in range({space[1]}):"]
    if space[0] == "matrix":
        return [f"for r in range({space[1]}):", f"{INDENT}for c in range({space[2]}):"]
    return [f"for j in range({space[1]}):"]


def loop_index(space: tuple) -> tuple:
    if space[0] == "batch":
        return ("n", "0") if space[1] == "1" else ("n", "j")
    if space[0] == "matrix":
        return ("r", "c")
    return ("j",)
