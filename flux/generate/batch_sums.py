"""Sums over the batch: a parameter's gradient Σₙ gₙ, added (or assigned) into its gradient array.

    Σₙ U·aₙ·bₙᵀ·V = U·(AᵀB)·V      the outer products of a batch as one GEMM (A, B the batch-stacked aₙ, bₙ)
    Σₙ vₙ                          a column sum, one loop over the batch

This stays a printing decision, not a rewrite in `flux.derive.simplify`: the maths is per sample, so AᵀB (A the
batch stacked in rows) has no per-sample expression to rewrite into, and whether the GEMM writes straight into
the gradient array (dot_into(A.T, B, grad)) depends on what was already printed into it.
"""
from __future__ import annotations

import sympy
from sympy import BlockMatrix, MatAdd, MatMul, Transpose, ZeroMatrix
from sympy.matrices.expressions.matexpr import MatrixExpr

from .forms import INDENT, CodegenError, form


class BatchSums:
    """The part of `KernelWriter` that writes `into += c · Σₙ expr(sample n)`."""

    def batch_sum(self, expr: MatrixExpr, into: str, coefficient) -> None:
        """into += coefficient · Σₙ expr(sample n)."""
        expr = expr.doit() if isinstance(expr, Transpose) else expr
        if isinstance(expr, ZeroMatrix):
            return
        if isinstance(expr, MatAdd):
            for term in expr.args:
                self.batch_sum(term, into, coefficient)
            return
        if sum_row_blocks(expr, self.size, lambda: self.start_writing(into),
                          lambda rows, block: self.batch_sum(block, self.rows_of(into, rows, block), coefficient)):
            return
        if isinstance(expr, MatMul):
            c, factors = expr.as_coeff_matrices()
            if len(factors) == 1:
                return self.batch_sum(factors[0], into, coefficient * c)
            if not self.is_elementwise(expr):
                return self.batch_sum_product(list(factors), into, coefficient * c)
        if not self.batched(expr):
            value = self.array(expr)
            self.start_writing(into)
            self.emit(f"{into} += {self.number(coefficient)} * N * {value}")
            return
        if form(expr) == "mat":
            raise CodegenError(f"cannot sum this per-sample matrix over the batch: {expr}")
        self.prepare(expr)
        self.start_writing(into)
        scale = "" if coefficient == 1 else f"{self.number(coefficient)} * "
        self.emit("for n in range(N):")
        self.emit(f"{INDENT}for j in range({self.entries(expr)}):")
        self.emit(f"{INDENT * 2}{into}[j] += {scale}{self.element(expr, ('n', 'j'))}")

    def rows_of(self, into: str, rows: str, block: MatrixExpr) -> str:
        """The rows `rows` ("a:b") of a gradient array, as the target of `block`'s batch sum: one row summed entry by
        entry is its 1-D view into[a] (the loop indexes entries, and into[a:a+1][j] would index rows past it)."""
        if form(block) == "row" and not (isinstance(block, MatMul) and not self.is_elementwise(block)):
            return f"{into}[{rows.partition(':')[0]}]"
        return f"{into}[{rows}]"

    def batch_sum_product(self, factors: list, into: str, coefficient) -> None:
        """Σₙ U·aₙ·bₙᵀ·V = U·(AᵀB)·V: the outer products of a batch as one GEMM."""
        batched = [i for i, f in enumerate(factors) if self.batched(f)]
        prefix, suffix = factors[:batched[0]], factors[batched[-1] + 1:]
        middle = factors[batched[0]:batched[-1] + 1]
        if len(middle) == 2 and form(middle[0]) == "col" and form(middle[1]) == "row":
            a, b = self.array(middle[0]), self.array(middle[1])
            if into in self.unwritten and coefficient == 1 and not prefix and not suffix:
                self.unwritten.discard(into)
                self.emit(f"dot_into({a}.T, {b}, {into})")  # written straight into the gradient: no temporary
                return
            code = f"dot({a}.T, {b})"
        elif len(middle) == 1:
            summed = self.temporary()
            self.emit(f"{summed} = np.zeros({self.entries(middle[0])}, dtype=real)")
            self.batch_sum(middle[0], summed, sympy.S.One)
            code = summed
        else:
            raise CodegenError(f"cannot sum this per-sample product over the batch: {MatMul(*factors)}")
        for left in reversed(prefix):
            code = f"dot({self.array(left)}, {code})"
        for right in suffix:
            code = f"dot({code}, {self.array(right)})"
        self.start_writing(into)
        self.emit(f"add_into({into}, {code}, {self.number(coefficient)})")  # no array statement: see flux.products

    def start_writing(self, into: str) -> None:
        """Before the first `+=` into an "assign" target, clear it."""
        if into in self.unwritten:
            self.unwritten.discard(into)
            self.emit(f"{into}.fill(real(0))")


def sum_row_blocks(expr: MatrixExpr, size, clear, sum_rows) -> bool:
    """Σₙ [B₁; B₂; …] (the gradient of a parameter used in row slices, W[a:b, :]): `clear()` the target, then
    `sum_rows("a:b", Bᵢ)` for each block that is not zero (sizes as code through `size`). False, doing nothing, for
    any other expression. Shared by the numba and NumPy printers."""
    if not isinstance(expr, BlockMatrix) or expr.blockshape[1] != 1:
        return False
    clear()
    start = sympy.S.Zero
    for block in expr.blocks[:, 0]:
        end = start + block.shape[0]
        if not isinstance(block, ZeroMatrix):
            sum_rows(f"int({size(start)}):int({size(end)})", block)  # k/2 is a float in Python (whole: pipeline)
        start = end
    return True
