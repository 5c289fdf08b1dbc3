"""Matrix products over token arrays, and the sums over the batch that parameter gradients are.

A batched operand is a C-contiguous (N, c, r) array holding Vᵀ for each sample (flux.generate.token_printer), or
its transpose (a view: the operand is Vᵀ, the array holds V). With store(M) = Mᵀ per sample:

    W·V   (W a parameter)      store = V_storeᵀ-rows · Wᵀ: ONE GEMM over all N·c rows, (N·c, r)·(r, m)
    A·B   (both per sample)    store(A·B)ₙ = store(B)ₙ · store(A)ₙ: a loop over n of np.dot into a preallocated array
    Σₙ Lₙ·Gₙᵀ                  = flat(store L)ᵀ · flat(store G): ONE GEMM over all N·T rows (∂L/∂W = Σₙ δₙ Xₙᵀ)
    Σₙ Mₙ (other)              a loop over n adding each sample's matrix
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import sympy

from sympy import BlockMatrix, HadamardProduct, MatAdd, MatMul, Transpose, ZeroMatrix

from .forms import INDENT, describe
from .product_plans import NOMINAL_SIZE, plan_products, token_sum_cost, transpose_cost


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
            return transposed_code(self.code)
        return f"{self.code}[n].T" if self.transposed else f"{self.code}[n]"

    def sample(self) -> str:
        """Sample n's operand itself (2-D), inside a loop over n."""
        if not self.batched:
            return self.code
        return f"{self.code}[n]" if self.transposed else f"{self.code}[n].T"


class TokenProducts:
    """The part of `TokenKernelWriter` that writes products and batch sums (see the module docstring)."""

    def operand(self, factor) -> Operand:
        if factor in self.held and factor not in self.arrays:
            return Operand(self.held[factor], factor.shape, True, True)
        if self.batched(factor):
            if isinstance(factor, Transpose):
                return Operand(self.array(factor.arg), factor.shape, True, True)
            flipped = transposed_form(factor)
            if flipped is not None and (flipped in self.arrays or factor not in self.arrays):
                return Operand(self.array(flipped), factor.shape, True, True)
            return Operand(self.array(factor), factor.shape, True)
        if isinstance(factor, Transpose):
            inner = self.operand(factor.arg)
            return Operand(transposed_code(inner.code), factor.shape, False)
        if factor in self.leaves and factor.shape[1] == 1:  # a vector parameter is 1-D
            return Operand(f"{self.array(factor)}.reshape(({self.size(factor.shape[0])}, 1))", factor.shape, False)
        return Operand(self.array(factor), factor.shape, False)

    def chain(self, factors: list, kind: str = "batched") -> Operand:
        """The product of `factors` into a new array, in the cheapest order (plan_products): parameters applied to
        every token in one GEMM, the rest per sample. `kind` asks for a batched result as the node's own layout
        ("batched"), or as the samples themselves ("transposed", for a GEMM over every token), or either ("any")."""
        known = self.runs.get(tuple(factors))
        if known is not None and kind != "transposed" and not known.transposed:
            return known  # computed within an earlier chain (Q = W_q·X̂ inside Wᵥ·X̂·A's, …)
        operands = [self.operand(f) for f in factors]
        plans = plan_products(operands, self.estimate)
        if kind == "any":
            return self.emit_plan(min(plans[0, len(operands)].values(), key=lambda p: p.cost), operands, factors)
        best = plans[0, len(operands)]
        if kind == "transposed" or "unbatched" in best:
            return self.emit_plan(best.get(kind) or best["unbatched"], operands, factors)
        flipped = best.get("transposed")
        if flipped is not None and (kind not in best or flipped.cost + transpose_cost(flipped, self.estimate)
                                    < best[kind].cost):
            return self.untransposed(self.emit_plan(flipped, operands, factors))
        return self.emit_plan(best[kind], operands, factors)

    def hold(self, node) -> None:
        """Compute a stored node for elementwise readers and products: a batched product (not a result) in
        whichever layout its cheapest plan gives, the samples themselves (`held`) read as [n, i, j] without the
        copy into node layout; c·(A·B) as A·B (readers scale it); any other node as `array`."""
        if node in self.arrays or node in self.held or self.stored_transpose(node) is not None:
            return
        scaled = scaled_product(node)
        if scaled is not None and node not in self.written:
            return self.hold(scaled[1])
        if not isinstance(node, MatMul) or not self.batched(node) or node in self.written \
                or node.as_coeff_matrices()[0] != 1:
            self.array(node)
            return
        result = self.chain(list(node.as_coeff_matrices()[1]), kind="any")
        if result.transposed:
            self.held[node] = result.code
        else:
            self.arrays[node] = result.code
        self.emit(f"# {result.code} = {describe(node, self.arrays)}{' (the samples themselves)' if result.transposed else ''}")

    def stored_transpose(self, node):
        """M when `node` is Mᵀ written with its transposes at the leaves and M is already stored, else None."""
        flipped = transposed_form(node) if isinstance(node, (MatAdd, HadamardProduct)) else None
        return flipped if flipped is not None and (flipped in self.arrays or flipped in self.held) else None

    def emit_plan(self, plan, operands: list, factors: list | None = None) -> Operand:
        """The statements of one plan; every product shared within the kernel (see `shared`). With the chain's
        `factors`, each batched product of a run of them is recorded in `runs` (what a kernel computed, by maths)."""
        if isinstance(plan.steps, int):
            return operands[plan.steps]
        left, right = (self.emit_plan(p, operands, factors) for p in plan.steps)
        result = self.product(plan, left, right)
        if factors is not None and result.batched:
            start, stop = plan_span(plan)
            self.runs.setdefault(tuple(factors[start:stop]), result)
        return result

    def product(self, plan, left: Operand, right: Operand) -> Operand:
        """left·right by the way `plan` chose."""
        if not left.batched and not right.batched:
            return self.shared(("U", left, right), lambda: self.unbatched(left, right))
        if not left.batched and not right.transposed:
            return self.shared(("W", left, right), lambda: self.over_all_tokens(left, right))
        if left.transposed and not right.batched:
            return self.shared(("V", left, right), lambda: self.tokens_times(left, right))
        if plan.kind == "transposed":
            return self.shared(("S", left, right), lambda: self.per_sample(left, right, transposed=True))
        return self.shared(("P", left, right), lambda: self.per_sample(left, right))

    def estimate(self, dim) -> int:
        """A nominal size for planning: every dimension 64 (a head, k/h, comes out smaller)."""
        value = sympy.sympify(dim)
        return max(1, int(value.subs({s: NOMINAL_SIZE for s in value.free_symbols})))

    def tokens_times(self, V: Operand, W: Operand) -> Operand:
        """Vₙ·W for every sample at once, V a transposed operand (its array holds Vₙ itself): one GEMM over all
        N·c rows, the result again the samples themselves (a transposed operand)."""
        rows, inner = V.shape
        flat = f"{V.code}.reshape((N * {self.size(rows)}, {self.size(inner)}))"
        name = self.token_gemm(flat, W.code, (rows, W.shape[1]))
        return Operand(name, (rows, W.shape[1]), True, True)

    def untransposed(self, op: Operand) -> Operand:
        """A transposed operand copied into the node layout (N, c, r)."""
        rows, cols = op.shape
        name = self.temporary()
        self.emit(f"{name} = {self.buffer((cols, rows))}")
        self.emit("for n in range(N):")
        self.emit(f"{INDENT}for j in range({self.size(cols)}):")
        self.emit(f"{INDENT * 2}for i in range({self.size(rows)}):")
        self.emit(f"{INDENT * 3}{name}[n, j, i] = {op.code}[n, i, j]")
        return Operand(name, op.shape, True)

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
        flat = f"{V.code}.reshape((N * {self.size(cols)}, {self.size(rows)}))"
        name = self.token_gemm(flat, transposed_code(W.code), (cols, W.shape[0]))
        return Operand(name, (W.shape[0], cols), True)

    def per_sample(self, left: Operand, right: Operand, transposed: bool = False) -> Operand:
        """left·right sample by sample into one preallocated array: in node layout, store(L·R)ₙ = store(R)ₙ·store(L)ₙ;
        `transposed`, the samples themselves, (L·R)ₙ = Lₙ·Rₙ (a transposed operand)."""
        shape = (left.shape[0], right.shape[1])
        rows, cols = (shape[0], shape[1]) if transposed else (shape[1], shape[0])
        factors = f"{left.sample()}, {right.sample()}" if transposed else f"{right.stored()}, {left.stored()}"
        key = f"np.dot({factors}) for n in range(N), ({self.size(rows)}, {self.size(cols)})"
        name = self.computed.get(key)
        if name is None:
            name = self.computed[key] = self.temporary()
            self.emit(f"{name} = {self.buffer((rows, cols))}")
            self.emit("for n in range(N):")
            self.emit(f"{INDENT}np.dot({factors}, {name}[n])")
        return Operand(name, shape, True, transposed)

    def token_gemm(self, flat: str, right: str, dims: tuple) -> str:
        """The (N, r, c) array of flat·right, flat the (N·r, ·) rows of every sample: ONE GEMM, computed once per
        kernel (two plans can spell one array alike), into a workspace buffer when the kernel has one."""
        if self.workspace is None:
            return self.statement(f"np.dot({flat}, {right}).reshape((N, {', '.join(self.size(d) for d in dims)}))")
        key = f"np.dot({flat}, {right}) → {dims}"
        if key not in self.computed:
            name = self.computed[key] = self.temporary()
            self.emit(f"{name} = {self.buffer(dims)}")
            self.emit(f"np.dot({flat}, {right}, {name}.reshape((N * {self.size(dims[0])}, {self.size(dims[1])})))")
        return self.computed[key]

    def statement(self, code: str) -> str:
        """The name of an array assigned `code`, emitting the assignment the first time: two plans can spell one
        array alike (W·X in node layout and XᵀWᵀ as the samples themselves are the same (N, T, ·) array)."""
        if code not in self.computed:
            self.computed[code] = self.temporary()
            self.emit(f"{self.computed[code]} = {code}")
        return self.computed[code]

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
        self.hold(expr)
        self.add_into(into, self.summed(self.operand(expr) if expr in self.held else
                                        Operand(self.array(expr), expr.shape, True)), coefficient)

    def batch_sum_product(self, factors: list, into: str, coefficient) -> None:
        """Σₙ of a product with per-sample factors, the cheaper of: Σₙ Lₙ·Rₙ as ONE GEMM over every token,
        flat(store L)ᵀ·flat(R) (L in node layout, R the samples themselves), or U·(Σₙ Mₙ)·V."""
        operands = [self.operand(f) for f in factors]
        plans = plan_products(operands, self.estimate)
        count = len(operands)
        split, cost = None, math.inf
        for k in range(1, count):
            left, right = plans[0, k].get("batched"), plans[k, count].get("transposed")
            if left is not None and right is not None and token_sum_cost(left, right, self.estimate) < cost:
                split, cost = (left, right), token_sum_cost(left, right, self.estimate)
        batched = [k for k, op in enumerate(operands) if op.batched]
        first, last = batched[0], batched[-1] + 1
        middle = min(plans[first, last].values(), key=lambda plan: plan.cost)
        if split is not None and cost < middle.cost + transpose_cost(middle, self.estimate) / 2:
            left, right = (self.emit_plan(plan, operands, factors) for plan in split)
            rows, inner = left.shape
            code = (f"np.dot({left.code}.reshape((N * {self.size(inner)}, {self.size(rows)})).T, "
                    f"{right.code}.reshape((N * {self.size(inner)}, {self.size(right.shape[1])})))")
            self.add_into(into, code, coefficient)
            return
        code = self.summed(self.emit_plan(middle, operands, factors))
        for left in reversed(operands[:first]):
            code = f"np.dot({left.code}, {code})"
        for right in operands[last:]:
            code = f"np.dot({code}, {right.code})"
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


def scaled_product(node):
    """(c, A·B…) when `node` is c·A·B… with c ≠ 1 and at least two matrix factors, else None."""
    if not isinstance(node, MatMul):
        return None
    coefficient, factors = node.as_coeff_matrices()
    if coefficient == 1 or len(factors) < 2:
        return None
    return coefficient, MatMul(*factors)


def plan_span(plan) -> tuple:
    """The factors a plan multiplies: indices start … stop − 1 of its chain."""
    if isinstance(plan.steps, int):
        return plan.steps, plan.steps + 1
    return plan_span(plan.steps[0])[0], plan_span(plan.steps[1])[1]


def transposed_code(code: str) -> str:
    """Code for the transpose of an unbatched value: `W.T` for W, and W for `W.T` (so that Wᵀ·Δ and Δᵀ·W read
    the same array and spell the same GEMM, which `statement` then computes once)."""
    return code[:-2] if code.endswith(".T") else f"{code}.T"


@functools.lru_cache(maxsize=4096)
def transposed_form(node):
    """M when `node` is Mᵀ written with its transposes pushed to the leaves (X̂ᵀ = γ1ᵀ ⊙ (Xᵀ − …)): stored once,
    as M, and read transposed; None when `node` is not written so."""
    if not isinstance(node, (MatAdd, HadamardProduct, BlockMatrix)) or not node.has(Transpose):
        return None
    flipped = Transpose(node).doit()
    return flipped if count_transposes(flipped) < count_transposes(node) else None


def count_transposes(node) -> int:
    return sum(1 for _ in sympy.preorder_traversal(node) if isinstance(_, Transpose))
