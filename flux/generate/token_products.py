"""Matrix products over token arrays, and the sums over the batch that parameter gradients are.

A batched operand is a C-contiguous (N, c, r) array holding Vᵀ for each sample (flux.generate.token_printer), or
its transpose (a view: the operand is Vᵀ, the array holds V). With store(M) = Mᵀ per sample:

    W·V   (W a parameter)      store = V_storeᵀ-rows · Wᵀ: ONE GEMM over all N·c rows, (N·c, r)·(r, m)
    A·B   (both per sample)    store(A·B)ₙ = store(B)ₙ · store(A)ₙ: a loop over n of np.dot into a preallocated array
    Σₙ Lₙ·Gₙᵀ                  = flat(store L)ᵀ · flat(store G): ONE GEMM over all N·T rows (∂L/∂W = Σₙ δₙ Xₙᵀ)
    Σₙ Mₙ (other)              a loop over n adding each sample's matrix
"""
from __future__ import annotations

from dataclasses import dataclass

from sympy import BlockMatrix, MatAdd, MatMul, Transpose, ZeroMatrix

from .forms import INDENT, describe


@dataclass(frozen=True)
class Operand:
    """A factor of a product: unbatched, `code` is its 2-D value; batched, `code` names an (N, c, r) array of the
    samples' Vᵀ and the operand is V (or Vᵀ when `transposed`). `shape` is the operand's per-sample maths shape."""

    code: str
    shape: tuple
    batched: bool
    transposed: bool = False

    def stored(self) -> str:
        """Sample n's operandᵀ (2-D), inside a loop over n; for an unbatched operand, its transpose."""
        if not self.batched:
            return f"{self.code}.T"
        return f"{self.code}[n].T" if self.transposed else f"{self.code}[n]"


class TokenProducts:
    """The part of `TokenKernelWriter` that writes products and batch sums (see the module docstring)."""

    def operand(self, factor) -> Operand:
        if self.batched(factor):
            if isinstance(factor, Transpose):
                return Operand(self.array(factor.arg), factor.shape, True, True)
            return Operand(self.array(factor), factor.shape, True)
        if isinstance(factor, Transpose):
            inner = self.operand(factor.arg)
            return Operand(f"{inner.code}.T", factor.shape, False)
        if factor in self.leaves and factor.shape[1] == 1:  # a vector parameter is 1-D
            return Operand(f"{self.array(factor)}.reshape(({self.size(factor.shape[0])}, 1))", factor.shape, False)
        return Operand(self.array(factor), factor.shape, False)

    def chain(self, factors: list) -> Operand:
        """The product of `factors` into a new array: parameters first multiplied together, each run of them then
        applied to the per-sample factor on its right in one GEMM over all tokens, the rest per sample."""
        merged: list[Operand] = []
        for factor in factors:
            op = self.operand(factor)
            if merged and not merged[-1].batched and not op.batched:
                merged[-1] = self.shared(("U", merged[-1], op), lambda left=merged[-1], right=op: self.unbatched(left, right))
            else:
                merged.append(op)
        hoisted: list[Operand] = []
        k = 0
        while k < len(merged):
            op = merged[k]
            if not op.batched and k + 1 < len(merged) and merged[k + 1].batched and not merged[k + 1].transposed:
                hoisted.append(self.shared(("W", op, merged[k + 1]),
                                           lambda W=op, V=merged[k + 1]: self.over_all_tokens(W, V)))
                k += 2
            else:
                hoisted.append(op)
                k += 1
        result = hoisted[0]
        for right in hoisted[1:]:
            result = self.shared(("P", result, right), lambda left=result, right=right: self.per_sample(left, right))
        return result

    def shared(self, key: tuple, make) -> Operand:
        """A product computed once per kernel: the gradients of attention repeat sub-products (Wvᵀ·Δ, W·X, …).
        Arrays are never written after their statement, so reading one twice is safe."""
        if key not in self.products:
            self.products[key] = make()
        return self.products[key]

    def unbatched(self, left: Operand, right: Operand) -> Operand:
        name = self.temporary()
        self.emit(f"{name} = np.dot({left.code}, {right.code})")
        return Operand(name, (left.shape[0], right.shape[1]), False)

    def over_all_tokens(self, W: Operand, V: Operand) -> Operand:
        """W·V for every sample at once: (N·c, r)·Wᵀ, one GEMM."""
        rows, cols = V.shape
        name = self.temporary()
        flat = f"{V.code}.reshape((N * {self.size(cols)}, {self.size(rows)}))"
        self.emit(f"{name} = np.dot({flat}, {W.code}.T).reshape((N, {self.size(cols)}, {self.size(W.shape[0])}))")
        return Operand(name, (W.shape[0], cols), True)

    def per_sample(self, left: Operand, right: Operand) -> Operand:
        """left·right sample by sample: store(L·R)ₙ = store(R)ₙ·store(L)ₙ, into one preallocated array."""
        shape = (left.shape[0], right.shape[1])
        name = self.temporary()
        self.emit(f"{name} = np.empty((N, {self.size(shape[1])}, {self.size(shape[0])}), dtype=real)")
        self.emit("for n in range(N):")
        self.emit(f"{INDENT}np.dot({right.stored()}, {left.stored()}, {name}[n])")
        return Operand(name, shape, True)

    def _statement_MatMul(self, node):
        coefficient, factors = node.as_coeff_matrices()
        result = self.chain(list(factors))
        name = result.code
        if coefficient != 1:  # a new array: the product itself may be shared (never scaled in place)
            name = self.temporary()
            self.emit(f"{name} = {self.number(coefficient)} * {result.code}")
        self.emit(f"# {name} = {describe(node, self.arrays)}")
        return name

    # ---- Σₙ over the batch: parameter gradients ----------------------------------------------------------

    def batch_sum(self, expr, into: str, coefficient) -> None:
        """into += coefficient · Σₙ expr(sample n)."""
        expr = expr.doit() if isinstance(expr, Transpose) else expr
        if isinstance(expr, ZeroMatrix):
            return
        if isinstance(expr, MatAdd):
            for term in expr.args:
                self.batch_sum(term, into, coefficient)
            return
        if isinstance(expr, BlockMatrix) and expr.blocks.shape[1] == 1:  # [0; G; 0] (W[a:b, :]'s): rows a..b
            offset = 0
            for block in expr.blocks:
                rows = f"{self.size(offset)}:{self.size(offset + block.shape[0])}"
                self.batch_sum(block, f"{into}[{rows}]", coefficient)
                offset += block.shape[0]
            return
        if isinstance(expr, MatMul):
            c, factors = expr.as_coeff_matrices()
            if len(factors) == 1:
                return self.batch_sum(factors[0], into, coefficient * c)
            if any(self.batched(f) for f in factors):
                return self.batch_sum_product(list(factors), into, coefficient * c)
        if not self.batched(expr):
            self.add_into(into, f"N * {self.operand(expr).code}", coefficient)
            return
        self.add_into(into, self.summed(Operand(self.array(expr), expr.shape, True)), coefficient)

    def batch_sum_product(self, factors: list, into: str, coefficient) -> None:
        """Σₙ U·Mₙ·V = U·(Σₙ Mₙ)·V; Σₙ Lₙ·Gₙᵀ as one GEMM over every token."""
        batched = [k for k, f in enumerate(factors) if self.batched(f)]
        prefix, suffix = factors[:batched[0]], factors[batched[-1] + 1:]
        middle = factors[batched[0]:batched[-1] + 1]
        last = middle[-1]
        code = None
        if len(middle) >= 2 and isinstance(last, Transpose) and self.batched(last.arg):
            left = self.chain(middle[:-1]) if len(middle) > 2 else self.operand(middle[0])
            if left.batched and not left.transposed:
                rows, tokens = left.shape
                other = self.array(last.arg)
                code = (f"np.dot({left.code}.reshape((N * {self.size(tokens)}, {self.size(rows)})).T, "
                        f"{other}.reshape((N * {self.size(tokens)}, {self.size(last.shape[1])})))")
        if code is None:
            code = self.summed(self.chain(middle) if len(middle) > 1 else self.operand(middle[0]))
        for left in reversed(prefix):
            code = f"np.dot({self.operand(left).code}, {code})"
        for right in suffix:
            code = f"np.dot({code}, {self.operand(right).code})"
        self.add_into(into, code, coefficient)

    def summed(self, op: Operand) -> str:
        """Code for Σₙ of a batched operand, in maths orientation."""
        name = self.temporary()
        rows, cols = op.shape
        shape = (rows, cols) if op.transposed else (cols, rows)
        self.emit(f"{name} = np.zeros(({self.size(shape[0])}, {self.size(shape[1])}), dtype=real)")
        self.emit("for n in range(N):")
        self.emit(f"{INDENT}{name} += {op.code}[n]")
        return name if op.transposed else f"{name}.T"

    def add_into(self, into: str, code: str, coefficient) -> None:
        """into += coefficient·code, a vector gradient (1-D) taking the matrix's only column."""
        vector = any(a.name == into and a.symbol.shape[1] == 1 for a in self.arguments)
        value = f"({code})[:, 0]" if vector else code
        scale = "" if coefficient == 1 else f"{self.number(coefficient)} * "
        self.emit(f"{into} += {scale}{value}")
