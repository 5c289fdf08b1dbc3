"""The NumPy printer's sums over the batch: a parameter's gradient Σₙ gₙ, added (or assigned) into its array.

    Σₙ U·aₙ·bₙᵀ·V = U·(AᵀB)·V      the outer products of a batch as one GEMM (A, B the batch-stacked aₙ, bₙ)
    Σₙ vₙ                          np.sum(V, axis=0)

The sibling of `flux.generate.batch_sums` (the numba printer's): the same rules, whole-array NumPy code.
"""
from __future__ import annotations

from sympy import MatAdd, MatMul, Transpose, ZeroMatrix

from .batch_sums import sum_row_blocks
from .forms import CodegenError, form, is_scalar


class VectorBatchSums:
    """The part of `VectorWriter` that writes `into += c · Σₙ expr(sample n)`."""

    def batch_sum(self, expr, into: str, coefficient, unwritten: set) -> None:
        """into += coefficient · Σₙ expr(sample n)."""
        expr = expr.doit() if isinstance(expr, Transpose) else expr
        if isinstance(expr, ZeroMatrix):
            return
        if isinstance(expr, MatAdd):
            for term in expr.args:
                self.batch_sum(term, into, coefficient, unwritten)
            return
        if sum_row_blocks(expr, self.size, lambda: into in unwritten and self.add_into(into, "0", unwritten),
                          lambda rows, block: self.batch_sum(block, f"{into}[{rows}]", coefficient, set())):
            return
        if isinstance(expr, MatMul):
            c, factors = expr.as_coeff_matrices()
            if len(factors) == 1:
                return self.batch_sum(factors[0], into, coefficient * c, unwritten)
            if not self.elementwise_product(expr) or any(self.batched(f) and is_scalar(f) for f in factors):
                return self.batch_sum_product(list(factors), into, coefficient * c, unwritten)
        if not self.batched(expr):
            self.add_into(into, f"{self.number(coefficient)} * N * {self.materialise(expr)}", unwritten)
        elif form(expr) == "mat":
            raise CodegenError(f"cannot sum this per-sample matrix over the batch: {expr}")
        else:
            self.add_into(into, self.scaled(coefficient, f"np.sum({self.materialise(expr, True)}, axis=0)"),
                          unwritten)

    def batch_sum_product(self, factors: list, into: str, coefficient, unwritten: set) -> None:
        """Σₙ U·aₙ·bₙᵀ·V = U·(AᵀB)·V; per-sample scalars sₙ are folded into A (or summed: Σₙ sₙ·M = (Σₙ sₙ)·M)."""
        per_sample = [self.materialise(f) for f in factors if is_scalar(f) and self.batched(f)]
        constants = [self.materialise(f) for f in factors if is_scalar(f) and not self.batched(f)]
        matrices = [f for f in factors if not is_scalar(f)]
        batched = [i for i, f in enumerate(matrices) if self.batched(f)]
        if not batched:
            weight = f"np.sum({' * '.join(per_sample)})" if per_sample else "N"
            product = self.materialise(MatMul(*matrices)) if len(matrices) > 1 else self.materialise(matrices[0])
            code = f"{weight} * {product}"
        else:
            prefix, suffix = matrices[:batched[0]], matrices[batched[-1] + 1:]
            middle = matrices[batched[0]:batched[-1] + 1]
            weight = "".join(f" * {s}" for s in per_sample)
            if len(middle) == 2 and form(middle[0]) == "col" and form(middle[1]) == "row":
                a, b = self.materialise(middle[0], True), self.materialise(middle[1], True)
                code = f"({a}{weight}).T @ {b}"
            elif len(middle) == 1 and form(middle[0]) != "mat":
                code = f"np.sum({self.materialise(middle[0], True)}{weight}, axis=0)"
            else:
                raise CodegenError(f"cannot sum this per-sample product over the batch: {MatMul(*factors)}")
            for left in reversed(prefix):
                code = f"{self.materialise(left)} @ ({code})"
            for right in suffix:
                code = f"({code}) @ {self.materialise(right)}"
        code = " * ".join(constants + [code])
        self.add_into(into, self.scaled(coefficient, code), unwritten)

    def scaled(self, coefficient, code: str) -> str:
        return code if coefficient == 1 else f"{self.number(coefficient)} * {code}"

    def add_into(self, into: str, code: str, unwritten: set) -> None:
        if into in unwritten:
            unwritten.discard(into)
            self.emit(f"{into}[...] = {code}")
        else:
            self.emit(f"{into} += {code}")
