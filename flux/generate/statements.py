"""Statements that fill an array: matrix products through BLAS (`flux.products.dot`), reductions, softmax, slices
and blocks.

    W·x  (x batched, held as X ∈ ℝᴺˣⁿ)  →  dot(X, W.T): the batch stays in rows, one GEMM for all samples
"""
from __future__ import annotations

import sympy
from sympy import MatMul, Transpose, ZeroMatrix
from sympy.matrices.expressions.matexpr import MatrixExpr

from .forms import INDENT, CodegenError, describe, form, is_scalar


class Statements:
    """The part of `KernelWriter` that writes one `_statement_<Node>` per node filled by statements."""

    def _statement_MatMul(self, node):
        coefficient, factors = node.as_coeff_matrices()
        if any(is_scalar(f) for f in factors):  # s·(xᵀ·W·x): the product of the rest, then s times it in a loop
            product = MatMul(*[f for f in factors if not is_scalar(f)])
            return self.array(MatMul(coefficient, *[f for f in factors if is_scalar(f)], product))
        if self.batched(factors[-1]) and form(factors[-1]) == "col":
            product = factors[-1]
            code = self.array(product)
            for left in reversed(factors[:-1]):  # U·(…·x): apply from the right, batch stays in rows
                code = self.product(left, product, code)
                product = MatMul(left, product)
        else:
            product = factors[0]
            code = self.array(product)
            for right in factors[1:]:
                code = self.product_left(product, code, right)
                product = MatMul(product, right)
        name = self.temporary()
        scale = "" if coefficient == 1 else f"{self.number(coefficient)} * "
        self.emit(f"{name} = {scale}{code}  # {describe(node, self.arrays)}")
        return name

    def product(self, left: MatrixExpr, right: MatrixExpr, right_code: str) -> str:
        """Code for left·right where right is a batched column held as (N, k)."""
        if self.batched(left):
            if form(left) == "row":  # row·col per sample: a dot product each
                return self.rowwise_dot(self.array(left), right_code)
            raise CodegenError(f"a per-sample matrix product is not supported: {left} * {right}")
        if form(left) == "row":
            return f"dot({right_code}, {self.array(left)}).reshape((N, 1))"
        if self.per_step:  # h·Uᵀ or δ·U of one time step: small (np.dot or a blocked loop, by size)
            return f"step_product({right_code}, {self.transposed(left)})"
        return f"dot({right_code}, {self.transposed(left)})"

    def product_left(self, left: MatrixExpr, left_code: str, right: MatrixExpr) -> str:
        """Code for left·right, left held as an array (batched rows or unbatched)."""
        if self.batched(left) and self.batched(right):
            if form(left) == "row" and form(right) == "col":
                return self.rowwise_dot(left_code, self.array(right))
            raise CodegenError(f"a per-sample matrix product is not supported: {left} * {right}")
        if self.batched(right):
            return self.product(left, right, self.array(right))
        if self.batched(left) and form(right) == "col":
            return f"dot({left_code}, {self.array(right)}).reshape((N, 1))"
        if not self.batched(left) and form(left) == "col" and form(right) == "row":
            return f"np.outer({left_code}, {self.array(right)})"
        return f"dot({left_code}, {self.array(right)})"

    def transposed(self, node: MatrixExpr) -> str:
        return self.array(node.arg) if isinstance(node, Transpose) else f"{self.array(node)}.T"

    def rowwise_dot(self, a: str, b: str) -> str:
        name = self.temporary()
        self.emit(f"{name} = np.empty((N, 1), dtype=real)  # a row of dot products, one per sample")
        self.emit("for n in range(N):")
        self.emit(f"{INDENT}acc = real(0)")
        self.emit(f"{INDENT}for j in range({a}.shape[1]):")
        self.emit(f"{INDENT * 2}acc += {a}[n, j] * {b}[n, j]")
        self.emit(f"{INDENT}{name}[n, 0] = acc")
        return name

    def _statement_MatPow(self, node):
        return matrix_power(self, node)

    def _statement_Total(self, node):
        argument = node.argument
        self.prepare(argument)
        name = self.temporary()
        self.emit(f"{name} = {self.allocation(node)}  # {describe(node, self.arrays)}")
        if self.batched(node):
            self.emit("for n in range(N):")
            self.emit(f"{INDENT}acc = real(0)")
            self.emit(f"{INDENT}for j in range({self.entries(argument)}):")
            self.emit(f"{INDENT * 2}acc += {self.element(argument, ('n', 'j'))}")
            self.emit(f"{INDENT}{name}[n, 0] = acc")
        else:
            self.emit(f"{name}[0] = np.sum({self.array(argument)})")
        return name

    def _statement_Softmax(self, node):
        z = self.array(node.argument)
        name = self.temporary()
        self.emit(f"{name} = np.empty_like({z})  # {describe(node, self.arrays)}, max-shifted")
        self.shifted_exponential_sum(z, f"{name}[n, j]", store=True)
        self.emit(f"{INDENT}for j in range({z}.shape[1]):")
        self.emit(f"{INDENT * 2}{name}[n, j] /= acc")
        return name

    def _statement_LogSumExp(self, node):
        z = self.array(node.argument)
        name = self.temporary()
        self.emit(f"{name} = np.empty((N, 1), dtype=real)  # {describe(node, self.arrays)}, max-shifted")
        self.shifted_exponential_sum(z, f"fast_exp({z}[n, j] - shift)", store=False)
        self.emit(f"{INDENT}{name}[n, 0] = shift + np.log(acc)")
        return name

    def shifted_exponential_sum(self, z: str, term: str, store: bool) -> None:
        """For each sample n (the loop left open): shift = maxⱼ zₙⱼ, acc = Σⱼ e^(zₙⱼ − shift), each term `term`
        (with `store`, first written there: the array `term` indexes)."""
        self.emit("for n in range(N):")
        self.emit(f"{INDENT}shift = {z}[n, 0]")  # the row's maximum, as a loop (np.max costs numba a second to compile)
        self.emit(f"{INDENT}for j in range(1, {z}.shape[1]):")
        self.emit(f"{INDENT * 2}shift = max(shift, {z}[n, j])")
        if store:  # the exponentials in a loop of their own vectorise; a sum beside them kept the loop scalar
            self.emit(f"{INDENT}for j in range({z}.shape[1]):")
            self.emit(f"{INDENT * 2}{term} = fast_exp({z}[n, j] - shift)")
        self.emit(f"{INDENT}acc = real(0)")
        self.emit(f"{INDENT}for j in range({z}.shape[1]):")
        self.emit(f"{INDENT * 2}acc += {term}")

    def _statement_MatrixSlice(self, node):
        parent, (start, stop, _), _ = node.args
        array = self.array(parent)
        name = self.temporary()
        columns = f"{self.size(start)}:{self.size(stop)}"
        available = f"{array}.shape[{1 if self.batched(parent) else 0}]"
        self.emit(f"if {available} < {self.size(stop)}:")
        message = f"the slice {describe(node)} reaches past the end of its vector"
        self.emit(f"{INDENT}raise ValueError({message!r})")  # a Python literal, whatever the maths' text holds
        if self.batched(parent):
            self.emit(f"{name} = np.ascontiguousarray({array}[:, {columns}])")
        elif form(parent) == "mat" and form(node) == "row":  # one row of W is a row vector: 1-D, as bᵀ is
            self.emit(f"{name} = {array}[{self.size(start)}]")
        else:
            self.emit(f"{name} = {array}[{columns}]")
        return name

    def _statement_BlockMatrix(self, node):
        name = self.temporary()
        blocks = [(b, None if isinstance(b, ZeroMatrix) else self.array(b)) for b in node.blocks]
        self.emit(f"{name} = {self.allocation(node)}  # {describe(node, self.arrays)}")
        offset, axis = sympy.S.Zero, 0 if node.blockshape[1] == 1 else 1  # [a; b] stacks rows, [aᵀ, bᵀ] columns
        for block, array in blocks:
            stop = offset + block.shape[axis]
            span = f"{self.size(offset)}:{self.size(stop)}"
            target = f"{name}[:, {span}]" if self.batched(node) else f"{name}[{span}]"
            self.emit(f"{target} = {'real(0)' if array is None else array}")  # an unbatched block broadcasts
            offset = stop
        return name


def matrix_power(writer, node) -> str:
    """Wᵖ of a parameter matrix, once per call (not per sample): W·W·…·W as p − 1 products. Shared by the numba
    printer and the token printer (W·(W·X) folds into W²·X). Not np.linalg.matrix_power: numba types its result
    Optional (it may be None), which no product accepts, so W³ failed to compile wherever W² was also needed."""
    base, power = node.args
    if writer.batched(base) or not (power.is_Integer and power >= 1):
        raise CodegenError(f"only positive integer powers of a parameter matrix are supported: {node}")
    name = writer.temporary()
    matrix = writer.array(base)
    writer.emit(f"{name} = np.ascontiguousarray({matrix})  # {describe(node, writer.arrays)}")
    for _ in range(int(power) - 1):
        writer.emit(f"{name} = dot({name}, {matrix})")
    return name
