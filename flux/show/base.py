r"""What the LaTeX and text printers share: dispatch, reading order, parentheses, scalars and quotients.

The shape of SymPy's printers: one `_print_<Node>` method per node type, found along the node's class hierarchy,
as in the numba printer (`flux/generate/printer.py`); adding a node means one method in each printer. Names are
decided before printing (`names.py`, `naming.py`); a printer takes a map node → Name.

Reading order. Sums put terms of inputs (and sub-models' values) first, then of states, then other products,
then bare parameters and constants, and subtractions last (W_{xh} x_t + W_{hh} h_{t−1} + b_h, 1 − y); ⊙
products put the upstream factor first and parenthesised sums last (Δ ⊙ y ⊙ (1 − y)), and named values in
the order of their equations (i_t ⊙ g_t).

Per-sample scalars and quotients (`algebra.py`, `fractions.py`). A 1×1 expression prints as one simplified
scalar: −(1/n)·Σ(Δ ⊙ u)/s³, 1/√(xᵀ·x). An elementwise product is one coefficient times ⊙ factors: a broadcast
s·1 beside a vector is the scalar multiple s·v (v/s for s^{−1}), a factor to a negative power is a division
a ⊘ b, a power ½ a root √v, and in a sum a broadcast drops its 1 (x − (1/n)·Σ(x), z + 1e-5); standing alone it
keeps it (Δ·logsumexp(z)·1 is a vector).
"""
from __future__ import annotations

from typing import Any

from .algebra import Algebra, Monomial, is_scalar
from .fractions import ADD, ATOM, HADAMARD, POWER, PRODUCT, Parts
from .names import is_leaf, matrix_args, walk

__all__ = ["ADD", "ATOM", "HADAMARD", "POWER", "PRODUCT", "Printer"]

MONOMIAL_KINDS = ("HadamardProduct", "MatMul", "Spread", "HadamardPower")


class Printer:
    """What the LaTeX and text printers share: dispatch on node type, reading order, parentheses."""

    minus = "-"
    product_separator = " "
    hadamard = r" \odot "
    separator = ", "

    def __init__(self, names: dict | None = None, constants: dict | None = None):
        self.names = dict(names or {})
        self.order = {node: k for k, node in enumerate(self.names)}  # named values: the order of their equations
        self.constants = {value: self.name(name) for value, name in (constants or {}).items()}  # 1e-5 → ε
        self.algebra = Algebra(self.names)

    def doprint(self, expr: Any, define: bool = False) -> str:
        """The expression; `define`: the right-hand side of its own equation, so its name is not used."""
        return self._print_node(expr) if define else self._print(expr)

    def head(self, name: Any) -> str:
        """The left side of a definition: the name, and a function's arguments, ℓ(logits, target)."""
        arguments = getattr(name, "arguments", ())
        text = self.name(name)
        return f"{text}({', '.join(self.name(a) for a in arguments)})" if arguments else text

    def _print(self, expr: Any) -> str:
        name = self.names.get(expr)
        return self._print_node(expr) if name is None else self.name(name)

    def _print_node(self, expr: Any) -> str:
        if type(expr).__name__ == "Transpose" and is_scalar(expr.arg):  # a scalar is its own transpose: Σ(t)
            return self._print(expr.arg)
        if self.algebra.is_compound_scalar(expr):
            return self.per_sample(self.algebra.scalar(expr))
        monomial = self.monomial_of(expr)
        if monomial is not None:
            return (self.minus if self.is_negative(expr, top=True) else "") + self.monomial(monomial)
        for klass in type(expr).__mro__:
            method = getattr(self, f"_print_{klass.__name__}", None)
            if method is not None:
                return method(expr)
        raise TypeError(f"{type(self).__name__} has no _print_{type(expr).__name__} method (for {expr!r})")

    def group(self, expr: Any, loosest: int) -> str:
        """The expression, in parentheses when it binds no tighter than `loosest`."""
        text = self._print(expr)
        return f"({text})" if self.precedence(expr) <= loosest else text

    def precedence(self, expr: Any) -> int:
        kind = type(expr).__name__
        if expr in self.names:
            return ATOM
        if self.algebra.is_compound_scalar(expr):
            return self.scalar_precedence(self.algebra.scalar(expr))
        monomial = self.monomial_of(expr)
        if monomial is not None:
            return self.monomial_precedence(monomial, expr)
        if kind == "MatAdd" or kind == "MatMul" and expr.as_coeff_matrices()[0].is_negative:
            return ADD
        return {"HadamardProduct": HADAMARD, "MatMul": PRODUCT, "Total": PRODUCT, "Transpose": POWER,
                "HadamardPower": POWER, "MatPow": POWER}.get(kind, ATOM)

    def scalar_precedence(self, value: Any) -> int:
        import sympy

        if value in self.algebra.nodes:
            return self.precedence(self.algebra.nodes[value])
        if isinstance(value, sympy.Add) or value.could_extract_minus_sign():
            return ADD
        if value.is_Number:
            return ATOM if value.is_Integer or value.is_Float else PRODUCT
        if isinstance(value, sympy.Pow):
            return ATOM if value.exp == sympy.S.Half else PRODUCT if value.exp.is_negative else POWER
        return PRODUCT if isinstance(value, sympy.Mul) else ATOM

    def monomial_of(self, expr: Any) -> Monomial | None:
        """The expression as coefficient · ⊙ factors when it is an elementwise product, scalar multiple or
        broadcast (`algebra.py`)."""
        return self.algebra.monomial(expr) if type(expr).__name__ in MONOMIAL_KINDS else None

    def monomial_precedence(self, monomial: Monomial, expr: Any) -> int:
        if self.is_negative(expr):
            return ADD
        factors = len(monomial.factors)
        if factors > 1 or any(p < 0 for _, p in monomial.factors):
            return HADAMARD
        if monomial.coefficient != 1 or monomial.is_broadcast:
            return PRODUCT
        node, p = monomial.factors[0]
        return self.precedence(node) if p == 1 else ATOM if p == 1 / 2 else POWER

    def leaf_kinds(self, expr: Any) -> set:
        kinds = set()
        for node in walk(expr, self.names):
            if node in self.names:
                kinds.add(getattr(self.names[node], "kind", "value"))
            elif type(node).__name__ in ("OneMatrix", "ZeroMatrix", "Identity"):
                kinds.add("constant")
            elif not matrix_args(node):  # a symbol printed without a sheet: Δ… is still the upstream
                kinds.add("upstream" if getattr(node, "name", "").startswith("Δ") else "value")
        return kinds

    def term_rank(self, term: Any) -> int:
        """Sums read inputs first, then states, upstream gradients, other products, bare symbols, constants."""
        kinds = self.leaf_kinds(term)
        leaf = is_leaf(term, self.names)
        for rank, wanted in enumerate(("input", "state")):
            if wanted in kinds:
                return rank
        if leaf and kinds & {"upstream", "δ"}:
            return 2
        if kinds <= {"constant"}:
            return 5
        return 4 if leaf else 3

    def factor_rank(self, factor: Any) -> int:
        """⊙ products read the upstream gradient first, then named values (o_t ⊙ tanh(c_t)), and parenthesised
        sums last."""
        if self.leaf_kinds(factor) & {"upstream", "δ"}:
            return 0
        if getattr(self.names.get(factor), "kind", "") == "value":
            return 1
        return 2 if self.precedence(factor) > HADAMARD else 3

    # ---- sums ------------------------------------------------------------------------------------------

    def _print_MatAdd(self, expr: Any, flip: bool = False) -> str:
        terms = [(negative != flip, self.term_rank(t), i, body) for i, t in enumerate(expr.args)
                 for negative, body in self.signed_terms(t)]
        text = ""
        for negative, _, _, body in sorted(terms, key=lambda x: x[:3]):
            sign = (f" {self.minus} " if negative else " + ") if text else (self.minus if negative else "")
            text += sign + body
        return text

    def signed_terms(self, term: Any) -> list:
        """[(negative, text without sign)]: one term, or the terms of a broadcast per-sample sum s₁ + s₂ (its 1
        dropped in the sum: x + exp(Σ(x)) + Σ(Δ))."""
        monomial = self.monomial_of(term) if term not in self.names else None
        if monomial is not None and monomial.is_broadcast and type(monomial.coefficient).__name__ == "Add":
            return [(t.could_extract_minus_sign(), self.per_sample(-t if t.could_extract_minus_sign() else t))
                    for t in monomial.coefficient.as_ordered_terms()]
        return [(self.is_negative(term), self.magnitude(term, in_sum=True))]

    def is_negative(self, term: Any, top: bool = False) -> bool:
        """A product with a negative coefficient, a ⊙ product of an odd number of them, a sum of them (−(Δ + Δ_h));
        a named term is its name, never negative, unless `top` (its own definition)."""
        if term in self.names and not top:
            return False
        kind = type(term).__name__
        if kind == "MatAdd":
            return all(map(self.is_negative, term.args))
        if self.algebra.is_compound_scalar(term):
            return self.algebra.scalar(term).could_extract_minus_sign()
        monomial = self.monomial_of(term)
        if monomial is not None:
            flips = sum(1 for f, p in monomial.factors if p == 1 and self.is_negative(f))
            return monomial.coefficient.could_extract_minus_sign() != (flips % 2 == 1)
        return kind == "MatMul" and bool(term.as_coeff_matrices()[0].is_negative)

    def magnitude(self, term: Any, in_sum: bool = False) -> str:
        """A term without its minus sign: −Δ ⊙ x prints as Δ ⊙ x; `in_sum`: a broadcast s·1 prints as s."""
        if term in self.names:
            return self._print(term)
        if self.algebra.is_compound_scalar(term):
            value = self.algebra.scalar(term)
            return self.per_sample(-value if value.could_extract_minus_sign() else value)
        monomial = self.monomial_of(term)
        if monomial is not None:
            return self.monomial(monomial, in_sum)
        if not self.is_negative(term):
            return self._print(term)
        coefficient, factors = term.as_coeff_matrices()
        return self.product(-coefficient, factors)

    # ---- products --------------------------------------------------------------------------------------

    def _print_MatMul(self, expr: Any) -> str:
        coefficient, factors = expr.as_coeff_matrices()
        if coefficient.is_negative:
            return self.minus + self.product(-coefficient, factors)
        return self.product(coefficient, factors)

    def product(self, coefficient: Any, factors: list) -> str:
        if coefficient == 1 and len(factors) == 1:
            return self._print(factors[0])
        parts = [self.group(f, HADAMARD) for f in factors]
        body = self.product_separator.join(parts)
        return body if coefficient == 1 else self.scalar_factor(coefficient) + self.product_separator + body

    def _print_HadamardProduct(self, expr: Any) -> str:
        return (self.minus if self.is_negative(expr, top=True) else "") + self.hadamard_product(expr.args)

    def ordered(self, factors: list) -> list:
        """⊙ factors in reading order (`factors`: (node, anything) pairs): upstream first, named values in the
        order of their equations, parenthesised sums last."""
        ordered = sorted(enumerate(factors), key=lambda f: (self.factor_rank(f[1][0]), f[0]))
        values = [k for k, (_, f) in enumerate(ordered) if getattr(self.names.get(f[0]), "kind", "") == "value"]
        in_order = sorted((ordered[k] for k in values), key=lambda f: self.order[f[1][0]])
        for k, factor in zip(values, in_order):  # named values keep their places but go in order: i_t ⊙ g_t
            ordered[k] = factor
        return [f for _, f in ordered]

    def hadamard_product(self, factors: tuple) -> str:
        """The factors' magnitudes joined by ⊙, upstream first (the sign is the caller's)."""
        return self.hadamard.join(self.factor(f) for f, _ in self.ordered([(f, 1) for f in factors]))

    def factor(self, factor: Any) -> str:
        """One ⊙ factor without its sign: a negated sum flipped, (−a − b) as (a + b)."""
        if self.is_negative(factor) and type(factor).__name__ == "MatAdd":
            return f"({self._print_MatAdd(factor, flip=True)})"
        if self.is_negative(factor):
            text = self.magnitude(factor)
            return text if self.precedence(factor) == ADD and self.simple_negation(factor) else f"({text})"
        return self.group(factor, PRODUCT)

    def simple_negation(self, factor: Any) -> bool:
        """−v for one atom-like v: printed bare inside ⊙ once its sign is taken out."""
        monomial = self.monomial_of(factor)
        if monomial is None:
            coefficient, matrices = factor.as_coeff_matrices() if type(factor).__name__ == "MatMul" else (0, [])
            return coefficient == -1 and len(matrices) == 1 and self.precedence(matrices[0]) > PRODUCT
        return monomial.coefficient == -1 and len(monomial.factors) == 1 and monomial.factors[0][1] == 1 and \
            self.precedence(monomial.factors[0][0]) > PRODUCT

    def _print_HadamardPower(self, expr: Any) -> str:
        return self.power(expr.args[0], expr.args[1], elementwise=expr.args[0].shape[1] != 1)

    def _print_MatPow(self, expr: Any) -> str:
        return self.power(expr.args[0], expr.args[1], elementwise=False)

    # ---- monomials: coefficient · s₁·s₂ · v₁ ⊙ v₂ / d ⊘ w -------------------------------------------------

    def monomial(self, monomial: Monomial, in_sum: bool = False) -> str:
        """A monomial without its sign; `in_sum`: a broadcast (no vector factors) drops its 1."""
        value = monomial.coefficient
        parts = Parts(-value if value.could_extract_minus_sign() else value, set(self.algebra.nodes))
        numerator = [(f, p) for f, p in monomial.factors if p > 0]
        denominator = [(f, -p) for f, p in monomial.factors if p < 0]
        vectors = [self.powered(f, p) for f, p in self.ordered(numerator)]
        divisors = [self.powered(f, p) for f, p in self.ordered(denominator)]  # x ⊘ (W·x), as x ⊙ (W·x)
        if not vectors and not divisors and not in_sum:
            vectors = [self.ones]
        return self.quotient(parts, vectors, divisors, in_sum)

    def powered(self, factor: Any, p: Any, loosest: int = PRODUCT) -> str:
        """A ⊙ factor to a positive power: v, √v, v², in parentheses when it binds no tighter than `loosest`."""
        if p == 1:
            return self.factor(factor) if loosest == PRODUCT else self.group(factor, loosest)
        return self.power(factor, p, elementwise=factor.shape[1] != 1)

    def scalar_numerator(self, parts: Parts) -> list:
        """The scalar factors of a quotient's numerator, upstream first (Δ·Σ(t)), otherwise as SymPy orders them."""
        return sorted(parts.numerator, key=lambda f: not any(
            self.factor_rank(self.algebra.nodes[s]) == 0 for s in f.free_symbols if s in self.algebra.nodes))

    def quotient(self, parts: Parts, vectors: list, divisors: list, in_sum: bool) -> str:
        """c·s·v₁ ⊙ v₂/d ⊘ w without its sign: (1/n)·Σ(Δ ⊙ u)·u/s³, x ⊘ (|x| + 1); in LaTeX
        \\frac{1}{n} \\frac{(\\mathbf{1}^{\\top} (\\Delta \\odot u)) u}{s^{3}}."""
        printer = self.scalar_printer()
        numerator = self.scalar_numerator(parts)
        scalars = [printer.power(f, PRODUCT if vectors or len(numerator) > 1 else HADAMARD) for f in numerator]
        joined = self.hadamard.join(vectors)
        if parts.denominator and len(vectors) > 1 and printer.times == "·":  # (Δ ⊙ b)/s
            joined = f"({joined})"
        body = printer.times.join(scalars + ([joined] if vectors else []))
        if parts.denominator:
            body = printer.fraction(body, printer.divisors(parts.denominator))
        coefficient = printer.coefficient(parts.coefficient, alone=not body and not divisors)
        text = printer.times.join(t for t in (coefficient, body) if t)
        if divisors:
            text = (text or self.ones) + self.oslash + self.oslash.join(divisors)
        return text or "1"
