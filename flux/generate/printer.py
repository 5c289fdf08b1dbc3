"""The numba printer: SymPy matrix expressions → the source of one numba kernel.

The maths is per sample; the kernel works on batches. A batched column (or row) vector of k entries is an
(N, k) array, one sample per row; parameters are plain arrays (1-D for vectors, 2-D for matrices). Matrix
products go to BLAS through `np.dot`; runs of elementwise operations over the same shape are fused into one
loop whose intermediates live in scalars; a node is written to an array only when something needs the array
(BLAS, a reduction, a second use, or a result). Parameter gradients are per-sample expressions summed over the
batch: Σₙ δₙ xₙᵀ becomes one GEMM, δᵀX.

Each node type has one `_element_<Node>` method (its scalar code at a loop index) or one `_statement_<Node>`
method (statements that fill an array), mirroring the LaTeX printer in `flux.show.printers`.
The parts live beside this file: fused elementwise loops (loops.py), statements (statements.py), sums over the
batch (batch_sums.py), and what they share (forms.py).
"""
from __future__ import annotations

import sympy
from sympy import (
    HadamardPower, HadamardProduct, Identity, MatAdd, MatMul, MatrixSymbol, OneMatrix, Transpose, ZeroMatrix,
)
from sympy.matrices.expressions.matexpr import MatrixExpr
from collections import Counter
from dataclasses import dataclass

from .batch_sums import BatchSums
from .forms import INDENT, CodegenError, describe, form, is_scalar
from .loops import Loop, ElementwiseLoops
from .sizes import size_code, size_codes
from .statements import Statements
from ..maths.graph import Dependence, matrix_children, topological_order
from ..maths.nodes import Apply, Spread


@dataclass(frozen=True)
class Argument:
    """A kernel argument: a leaf symbol of the maths and the array that holds it."""

    symbol: MatrixSymbol
    name: str
    batched: bool


@dataclass(frozen=True)
class Result:
    """What a kernel produces from `expr`.

    mode "new": a new array, returned; "accumulate": Σ over the batch added into the argument `into`;
    "assign": Σ over the batch written into `into` (its old contents ignored); "write": the array computed
    straight into the argument `into` (e.g. a slice of a caller's buffer), nothing returned;
    "mean": the batch mean of a per-sample (1, 1) value, returned as a number.
    """

    name: str
    expr: MatrixExpr
    mode: str = "new"
    into: str | None = None


ELEMENTWISE = (MatAdd, HadamardProduct, HadamardPower, Apply, Spread, OneMatrix, ZeroMatrix, Identity, Transpose)


def generate_kernel_source(name: str, arguments: list[Argument], results: list[Result], doc: str = "", *,
                           extra_arguments: list[str] = (), epilogue: list[str] = (), per_step: bool = False) -> str:
    """The source of `def name(arguments…, extra_arguments…)`, computing `results` (see `Result`).

    `epilogue` lines run after the results are computed and, when given, end the function themselves (they must
    return). `per_step`: the kernel runs once per time step (a recurrent cell), so its batch·parameter products
    are small and go through `flux.small_products.step_product`.
    """
    return KernelWriter(arguments, results, per_step).write(name, doc, list(extra_arguments), list(epilogue))


class KernelWriter(ElementwiseLoops, Statements, BatchSums):
    """Writes one kernel: plans which nodes become arrays, then prints statements in dependency order."""

    def __init__(self, arguments: list[Argument], results: list[Result], per_step: bool = False):
        self.arguments = arguments
        self.results = results
        self.per_step = per_step  # a recurrent cell's kernel: its products are one time step's (small)
        self.batched = Dependence(a.symbol for a in arguments if a.batched)  # per sample: reads a batched argument
        self.arrays: dict[MatrixExpr, str] = {a.symbol: a.name for a in arguments}
        self.sizes = size_codes(arguments)
        self.batch = next((f"{a.name}.shape[0]" for a in arguments if a.batched), "1")
        self.blocks: list = []  # plain statement lines and fused `Loop`s, in order
        self.unwritten: set = set()  # "assign" targets no contribution has been written to yet
        self.targets: dict = {}  # node → the argument a "write" result puts it in (its loop fills it directly)
        for result in reversed(results):
            if result.mode == "write":
                self.targets[result.expr] = result.into
        self.temporaries = 0
        self.uses = Counter()
        for node in topological_order([r.expr for r in results]):
            for child in matrix_children(node):
                self.uses[child] += 1

    # ---- planning -------------------------------------------------------------------------------------

    def is_elementwise(self, node: MatrixExpr) -> bool:
        if isinstance(node, MatMul):  # a product with (1, 1) factors is a broadcast, not a GEMM
            return len([f for f in node.as_coeff_matrices()[1] if not is_scalar(f)]) <= 1
        if isinstance(node, Transpose):
            return form(node) != "mat" or not self.batched(node)
        return isinstance(node, ELEMENTWISE)

    def inlined(self, node: MatrixExpr) -> bool:
        """Computed inside its consumer's loop rather than stored."""
        if node in self.arrays or isinstance(node, MatrixSymbol) or node in self.targets:
            return False
        if isinstance(node, (OneMatrix, ZeroMatrix, Identity)):
            return True
        return self.is_elementwise(node) and self.uses[node] <= 1 and form(node) != "mat"

    # ---- writing --------------------------------------------------------------------------------------

    def write(self, name: str, doc: str, extra_arguments: list[str] = (), epilogue: list[str] = ()) -> str:
        arguments = ", ".join([a.name for a in self.arguments] + list(extra_arguments))
        self.blocks.insert(0, f"N = {self.batch}")
        returned = []
        for result in self.results:
            if result.mode in ("accumulate", "assign"):
                self.emit(f"# {result.into} {'+' if result.mode == 'accumulate' else ''}= Σₙ {describe(result.expr)}")
                if result.mode == "assign":
                    self.unwritten.add(result.into)
                self.batch_sum(result.expr, result.into, sympy.S.One)
                if result.into in self.unwritten:  # nothing contributed: the sum is zero
                    self.emit(f"{result.into}.fill(real(0))")
            elif result.mode == "write":
                array = self.array(result.expr)
                if array != result.into:  # computed elsewhere (BLAS, an argument, another target): copied in
                    self.emit(f"{result.into}[:] = {array}")
            elif result.mode == "mean":
                total = self.array(result.expr)
                self.emit(f"{result.name} = 0.0")  # Σₙ in float64 as a loop (np.sum costs numba a second to compile)
                self.emit("for n in range(N):")
                self.emit(f"{INDENT}{result.name} += {total}[n, 0]")
                self.emit(f"{result.name} /= N")
                returned.append(result.name)
            else:
                if self.batched(result.expr) and form(result.expr) == "mat":
                    raise CodegenError(f"a per-sample matrix cannot be a batched result: {result.expr}")
                array = self.array(result.expr)
                if isinstance(result.expr, MatrixSymbol) or array != self.arrays.get(result.expr):
                    array = f"{array}.copy()"  # never hand back an argument (or a view of one) as a result
                returned.append(array)
        self.blocks.extend(epilogue)
        lines = []
        for block in self.blocks:
            lines.extend(block.lines() if isinstance(block, Loop) else [block])
        body = "\n".join(INDENT + line for line in lines)
        doc_line = f'{INDENT}"""{doc}"""\n' if doc else ""
        ret = f"{INDENT}return {', '.join(returned)}{',' if len(returned) == 1 else ''}\n" if returned and not epilogue else ""
        return f"def {name}({arguments}):\n{doc_line}{body}\n{ret}"

    def emit(self, line: str) -> None:
        """Write a plain statement; it ends any fused loop before it."""
        self.blocks.append(line)

    @property
    def open_loop(self) -> Loop | None:
        return self.blocks[-1] if self.blocks and isinstance(self.blocks[-1], Loop) else None

    def temporary(self) -> str:
        self.temporaries += 1
        return f"t{self.temporaries}"

    def size(self, dim) -> str:
        """Code for a dimension, read from the argument arrays (parenthesised unless one number or one size)."""
        return size_code(dim, self.sizes)

    def number(self, value) -> str:
        """A scalar constant in the kernel's float type; sizes (1/k in a mean) are read from the arrays."""
        value = sympy.sympify(value)
        if value.free_symbols:
            return f"real({self.size(value)})"
        if value.is_Integer:
            return f"real({int(value)})"
        return f"real({float(value)!r})"

    def entries(self, node: MatrixExpr) -> str:
        """Entries per sample of a vector node (rows × cols with one of them 1)."""
        rows, cols = node.shape
        return self.size(rows * cols)

    def allocation(self, node: MatrixExpr) -> str:
        if self.batched(node):
            return f"np.empty((N, {self.entries(node)}), dtype=real)"
        if form(node) == "mat":
            return f"np.empty(({self.size(node.shape[0])}, {self.size(node.shape[1])}), dtype=real)"
        return f"np.empty({self.entries(node)}, dtype=real)"

    def array(self, node: MatrixExpr) -> str:
        """The name of an array holding `node`, writing the statements that fill it if needed."""
        if node in self.arrays:
            return self.arrays[node]
        if isinstance(node, Transpose) and not self.batched(node):
            return f"{self.array(node.arg)}.T" if form(node) == "mat" else self.array(node.arg)
        if isinstance(node, Transpose):
            return self.array(node.arg)
        if self.is_elementwise(node):
            name = self.elementwise_loop(node)
        else:
            method = getattr(self, f"_statement_{type(node).__name__}", None)
            if method is None:
                raise CodegenError(f"flux has no code for {type(node).__name__} nodes (in {node})")
            name = method(node)
        self.arrays[node] = name
        return name
