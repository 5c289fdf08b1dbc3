r"""Per-sample algebra for display: 1×1 expressions as SymPy scalars, elementwise products as monomials.

A per-sample scalar (a 1×1 expression: xᵀy, Σ(x), a mean, a norm) is built by tracing from products, ⊙ products,
powers and sums of 1×1 nodes, which print as nested broadcasts: 2·((1/n)·(−Σ(…) ⊙ √(…)⁻²) ⊙ ((1/2)·√(…)⁻¹)).
`Algebra.scalar` turns such a tree into one SymPy scalar expression whose symbols stand for the 1×1 nodes it
cannot see into (Σ(…), xᵀy, Δ, a named value), so that SymPy's own arithmetic makes it one coefficient and one
power: −(1/n)·Σ(…)·(…)^{−3/2}. `Algebra.monomial` reads a vector expression built by ⊙, elementwise powers
and broadcasts of per-sample scalars (s·1) as coefficient · v₁^{p₁} ⊙ v₂^{p₂} ⊙ …, the coefficient a SymPy scalar
in those symbols, so that a printer writes (s^{−1}·1) ⊙ v as v/s and a ⊙ b^{∘−1} as a ⊘ b.

Display only: the maths and the kernels never see these forms (generated code quotes them in comments). SymPy is imported inside
functions only, so `import flux` stays free of it.
"""
from __future__ import annotations

from typing import Any, NamedTuple


class Monomial(NamedTuple):
    """coefficient · ⊙ of factors: `coefficient` a SymPy scalar (numbers, sizes and atoms' symbols), `factors`
    [(vector node, exponent)], exponents SymPy numbers (negative ones are divisions)."""

    coefficient: Any
    factors: list

    @property
    def is_broadcast(self) -> bool:
        """s·1: a per-sample scalar or a number in every entry."""
        return not self.factors


def is_scalar(expr: Any) -> bool:
    return tuple(expr.shape) == (1, 1)


def exact(p: Any) -> Any:
    """An exponent as an exact number where the float is one: 0.5 → 1/2, −1.5 → −3/2 (display only)."""
    import sympy

    p = sympy.sympify(p)
    if isinstance(p, sympy.Float) and float(p * 8).is_integer():
        return sympy.Rational(int(p * 8), 8)
    return p


class Algebra:
    """Converts matrix nodes to SymPy scalars; `names` (node → Name or text) are leaves, as are the nodes it does
    not see into. One instance per printer: an atom keeps its symbol, so equal nodes simplify together."""

    def __init__(self, names: dict):
        self.names = names
        self.symbols: dict = {}  # node → Dummy
        self.nodes: dict = {}  # Dummy → node
        self.memo: dict = {}
        self.monomials: dict = {}

    def atom(self, node: Any) -> Any:
        import sympy

        if node not in self.symbols:
            symbol = sympy.Dummy(f"a{len(self.symbols)}", real=True)
            self.symbols[node], self.nodes[symbol] = symbol, node
        return self.symbols[node]

    def is_compound_scalar(self, expr: Any) -> bool:
        """A 1×1 expression built of broadcast arithmetic (printed through SymPy), not one atom (its name, if it
        has one, is the caller's to use)."""
        if not is_scalar(expr):
            return False
        kind = type(expr).__name__
        if kind in ("MatAdd", "HadamardProduct", "HadamardPower", "MatPow", "Spread", "Identity", "OneMatrix",
                    "ZeroMatrix"):
            return True
        if kind == "Transpose":
            return self.is_compound_scalar(expr.arg)
        if kind == "Apply":
            return expr.function == "sqrt"
        if kind == "MatMul":
            coefficient, factors = expr.as_coeff_matrices()
            return coefficient != 1 or any(is_scalar(f) for f in factors)
        return False

    def scalar(self, expr: Any) -> Any:
        """A 1×1 expression as a SymPy scalar in its atoms' symbols (named subexpressions are atoms)."""
        if expr not in self.memo:
            self.memo[expr] = self._scalar(expr)
        return self.memo[expr]

    def part(self, expr: Any) -> Any:
        """A 1×1 subexpression: its name's symbol if it has one, else its scalar form (a scalar's transpose is
        itself)."""
        while type(expr).__name__ == "Transpose" and expr not in self.names:
            expr = expr.arg
        return self.atom(expr) if expr in self.names or not self.is_compound_scalar(expr) else self.scalar(expr)

    def _scalar(self, expr: Any) -> Any:
        import sympy

        kind = type(expr).__name__
        if kind in ("Identity", "OneMatrix"):
            return sympy.S.One
        if kind == "ZeroMatrix":
            return sympy.S.Zero
        if kind in ("Transpose", "Spread"):
            return self.part(expr.args[0])
        if kind == "MatAdd":
            return sympy.Add(*[self.part(a) for a in expr.args])
        if kind == "HadamardProduct":
            return sympy.Mul(*[self.part(a) for a in expr.args])
        if kind in ("HadamardPower", "MatPow"):
            return sympy.Pow(self.part(expr.args[0]), exact(expr.args[1]))
        if kind == "Apply" and expr.function == "sqrt":
            return sympy.sqrt(self.part(expr.argument))
        if kind == "MatMul":
            coefficient, factors = expr.as_coeff_matrices()
            parts = [self.atom(run) if type(run).__name__ == "MatMul" or not is_scalar(run) else self.part(run)
                     for run in scalar_runs(factors)]  # a run of several factors is a product such as xᵀ·W·x
            return coefficient * sympy.Mul(*parts)
        return self.atom(expr)

    def monomial(self, expr: Any) -> Monomial | None:
        """A vector expression as coefficient · ⊙ of powered factors, or None when it is no ⊙ product, broadcast
        or scalar multiple (a sum, a matrix product, a leaf)."""
        if expr not in self.monomials:
            self.monomials[expr] = self._monomial(expr)
        return self.monomials[expr]

    def _monomial(self, expr: Any) -> Monomial | None:
        import sympy

        kind = type(expr).__name__
        if is_scalar(expr):
            return None
        if kind == "Spread":
            return Monomial(self.part(expr.argument), [])
        if kind == "MatMul":
            coefficient, factors = expr.as_coeff_matrices()
            if len(factors) != 1:
                return None
            inner = self.factor_monomial(factors[0])
            return Monomial(coefficient * inner.coefficient, inner.factors)
        if kind == "HadamardProduct":
            coefficient, factors = sympy.S.One, []
            for arg in expr.args:
                part = self.factor_monomial(arg)
                coefficient, factors = coefficient * part.coefficient, factors + part.factors
            return Monomial(coefficient, merged(factors))
        if kind == "HadamardPower":
            base, p = expr.args[0], exact(expr.args[1])
            inner = self.factor_monomial(base)
            if p.is_Integer or inner.coefficient == 1:
                return Monomial(inner.coefficient ** p, [(f, e * p) for f, e in inner.factors])
            return Monomial(sympy.S.One, [(base, p)])
        return None

    def factor_monomial(self, expr: Any) -> Monomial:
        import sympy

        if type(expr).__name__ == "OneMatrix" and expr not in self.names:
            return Monomial(sympy.S.One, [])
        found = self.monomial(expr) if expr not in self.names else None
        return found if found is not None else Monomial(sympy.S.One, [(expr, sympy.S.One)])


def merged(factors: list) -> list:
    """Equal factors' exponents added (x ⊙ x^{∘−2} is x^{∘−1}), in the order of first appearance."""
    exponents: dict = {}
    for factor, p in factors:
        exponents[factor] = exponents.get(factor, 0) + p
    return [(f, p) for f, p in exponents.items() if p != 0]


def scalar_runs(factors: list) -> list:
    """A product's factors grouped into 1×1 runs where they form one (xᵀ·W·x), else alone."""
    import sympy

    runs, k = [], 0
    while k < len(factors):
        for j in range(k, len(factors)):
            if factors[k].shape[0] == 1 and factors[j].shape[1] == 1:
                runs.append(sympy.MatMul(*factors[k:j + 1]) if j > k else factors[k])
                k = j + 1
                break
        else:
            runs.append(factors[k])
            k += 1
    return runs
