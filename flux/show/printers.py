r"""Printers for flux's maths: LaTeX for notebooks and papers, one line of unicode for terminals and code comments.

The shape of SymPy's printers: one `_print_<Node>` method per node type, found along the node's class hierarchy,
as in the numba printer (`flux/generate/printer.py`); adding a node means one method in each printer. `Printer`
holds what both share: dispatch, reading order and parentheses. Names are decided before printing (`names.py`,
`naming.py`); a printer takes a map node → Name.

Reading order. Sums put terms of inputs (and sub-models' values) first, then of states, then other products,
then bare parameters and constants, and subtractions last (W_{xh} x_t + W_{hh} h_{t−1} + b_h, 1 − y); ⊙
products put the upstream factor first and parenthesised sums last (Δ ⊙ y ⊙ (1 − y)), and named values in
the order of their equations (i_t ⊙ g_t). HadamardPower of a column vector prints as an ordinary power
(1 − y²: a vector has no other square); of a matrix as W^{∘2}; a matrix power as W².
Broadcasts, coefficients and numbers read as a textbook writes them (−Δ·t, (2/n)·Δ·(ŷ − t), 1e-5): `scalars.py`.
Generated code quotes `expression_text`, which never breaks a comment or a docstring line. SymPy is imported
inside functions only, so `import flux` stays free of it.
"""
from __future__ import annotations

from typing import Any

from .names import SUPERSCRIPTS, Name, code_safe, dimension_latex, is_leaf, leaf_name, matrix_args, script, walk
from .scalars import Scaled, is_negative_number, is_number, is_scalar, scalar_latex, scalar_text, scaled

ADD, HADAMARD, PRODUCT, POWER, ATOM = range(5)  # how tightly a node binds


class Printer:
    """What the LaTeX and text printers share: dispatch on node type, reading order, parentheses."""

    minus = "-"
    product_separator = " "
    hadamard = r" \odot "
    separator = ", "

    def __init__(self, names: dict | None = None):
        self.names = dict(names or {})
        self.order = {node: k for k, node in enumerate(self.names)}  # named values: the order of their equations

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
        if kind == "MatAdd" or kind == "MatMul" and expr.as_coeff_matrices()[0].is_negative:
            return ADD
        return {"HadamardProduct": HADAMARD, "MatMul": PRODUCT, "Spread": PRODUCT, "Total": PRODUCT,
                "Transpose": POWER, "HadamardPower": POWER, "MatPow": POWER}.get(kind, ATOM)

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
        if kinds == {"constant"}:
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

    def _print_MatAdd(self, expr: Any, flip: bool = False) -> str:
        terms = [(self.is_negative(t) != flip, self.term_rank(t), i, t) for i, t in enumerate(expr.args)]
        text = ""
        for negative, _, _, term in sorted(terms, key=lambda x: x[:3]):
            body = self.magnitude(term)
            sign = (f" {self.minus} " if negative else " + ") if text else (self.minus if negative else "")
            text += sign + body
        return text

    def is_negative(self, term: Any) -> bool:
        """A product with a negative coefficient, a ⊙ product of an odd number of them, a sum of them (−(Δ + Δ_h))."""
        if term in self.names:
            return False
        if type(term).__name__ == "MatAdd":
            return all(map(self.is_negative, term.args))
        multiple = scaled(term, self.names)
        if multiple is not None:
            return is_negative_number(multiple.coefficient) != (sum(map(self.is_negative, multiple.vectors)) % 2 == 1)
        if type(term).__name__ == "HadamardProduct":
            return sum(self.is_negative(f) for f in term.args) % 2 == 1
        return type(term).__name__ == "MatMul" and bool(term.as_coeff_matrices()[0].is_negative)

    def magnitude(self, term: Any) -> str:
        """A term without its minus sign: −Δ ⊙ x prints as Δ ⊙ x."""
        multiple = scaled(term, self.names)
        if multiple is not None:
            return self.scalar_multiple(multiple)
        if type(term).__name__ == "HadamardProduct" and term not in self.names:
            return self.hadamard_product(term.args)
        if not self.is_negative(term):
            return self._print(term)
        coefficient, factors = term.as_coeff_matrices()
        return self.product(-coefficient, factors)

    def _print_MatMul(self, expr: Any) -> str:
        if scaled(expr, self.names) is not None:
            return self.signed(expr)
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
        if scaled(expr, self.names) is not None:
            return self.signed(expr)
        return (self.minus if self.is_negative(expr) else "") + self.hadamard_product(expr.args)

    def hadamard_product(self, factors: tuple) -> str:
        """The factors' magnitudes joined by ⊙, upstream first (the sign is the caller's)."""
        ordered = sorted(enumerate(factors), key=lambda f: (self.factor_rank(f[1]), f[0]))
        values = [k for k, (_, f) in enumerate(ordered) if getattr(self.names.get(f), "kind", "") == "value"]
        in_order = sorted((ordered[k] for k in values), key=lambda f: self.order[f[1]])
        for k, factor in zip(values, in_order):  # named values keep their places but go in order: i_t ⊙ g_t
            ordered[k] = factor
        parts = []
        for _, factor in ordered:
            if self.is_negative(factor) and type(factor).__name__ == "MatAdd":
                parts.append(f"({self._print_MatAdd(factor, flip=True)})")
            elif self.is_negative(factor) and type(factor).__name__ == "MatMul":
                coefficient, matrices = factor.as_coeff_matrices()
                text = self.product(-coefficient, matrices)
                simple = coefficient == -1 and len(matrices) == 1 and self.precedence(matrices[0]) > PRODUCT
                parts.append(text if simple else f"({text})")
            else:
                parts.append(self.group(factor, PRODUCT))
        return self.hadamard.join(parts)

    def _print_Spread(self, expr: Any) -> str:  # a broadcast s·1
        return self.signed(expr)

    def signed(self, expr: Any) -> str:
        return (self.minus if self.is_negative(expr) else "") + self.magnitude(expr)

    def scalar_multiple(self, multiple: Scaled) -> str:
        """c·s₁·s₂·(v₁ ⊙ v₂) without its sign: (2/n)·Δ·(ŷ − t); a broadcast alone keeps its 1 (Δ·s·1)."""
        coefficient = -multiple.coefficient if is_negative_number(multiple.coefficient) else multiple.coefficient
        parts = [] if coefficient == 1 else [self.scalar_factor(coefficient)]
        upstream_first = sorted(multiple.scalars, key=lambda s: self.factor_rank(s) != 0)
        parts += [self.group(s, PRODUCT) for s in upstream_first]
        parts.append(self.hadamard_product(multiple.vectors) if multiple.vectors else self.ones)
        return self.product_separator.join(parts)


class LatexPrinter(Printer):
    r"""Matrix expressions as LaTeX that KaTeX, MathJax and (for single equations) matplotlib typeset:
    σ(W x + b), Δ ⊙ y ⊙ (1 − y) as \Delta \odot y \odot (\mathbf{1} - y), xᵀ as x^{\top}."""

    separator = r",\quad "
    ones = r"\mathbf{1}"

    def name(self, name: Any) -> str:
        return name if isinstance(name, str) else name.latex()

    def gradient(self, name: Name) -> str:
        return rf"\frac{{\partial L}}{{\partial {name.latex()}}}"

    def words(self, text: str, maths: str) -> str:
        return rf"\text{{{text}}}{maths}"

    def domain(self, shape: tuple, dims: int | None = None) -> str:
        """ℝ^{m×n}, ℝ^{m}: `dims` is how many the parameter declares (a 16×1 matrix is no vector); by default a
        column is a vector."""
        rows, cols = (*shape, 1)[:2]
        vector = dims == 1 if dims is not None else cols == 1
        return rf"\mathbb{{R}}^{{{self.scalar(rows)}}}" if vector else \
            rf"\mathbb{{R}}^{{{self.scalar(rows)} \times {self.scalar(cols)}}}"

    def scalar(self, value: Any) -> str:
        import sympy

        value = sympy.sympify(value)
        symbols = {s: dimension_latex(s.name) for s in value.free_symbols if isinstance(s, sympy.Symbol)}
        return scalar_latex(value, symbols)

    def scalar_factor(self, value: Any) -> str:
        return self.scalar(value)

    def superscripted(self, expr: Any, sup: str, joins_name: bool) -> str:
        """expr^{sup}; a name's own superscript takes a transpose along (W^{(0)\top}) but not a power."""
        name = self.names.get(expr) or (leaf_name(expr.name, "value") if type(expr).__name__ == "MatrixSymbol"
                                        else None)
        if isinstance(name, Name) and (joins_name or not name.sup):
            return name.latex(sup)
        if isinstance(name, Name):  # g_t^{(0)} squared: (g_t^{(0)})^2, never a double superscript
            return f"({name.latex()})^{script(sup)}"
        return f"{self.group(expr, POWER)}^{script(sup)}"

    def _print_MatrixSymbol(self, expr: Any) -> str:
        return leaf_name(expr.name, "value").latex()

    def _print_Transpose(self, expr: Any) -> str:
        return self.superscripted(expr.arg, r"\top", joins_name=True)

    def _print_HadamardPower(self, expr: Any) -> str:
        base, exponent = expr.args
        elementwise = base.shape[1] != 1 and type(expr).__name__ == "HadamardPower"  # W^{∘2}, not the matrix W²
        power = rf"\circ {self.scalar(exponent)}" if elementwise else self.scalar(exponent)
        return self.superscripted(base, power, joins_name=False)

    _print_MatPow = _print_HadamardPower

    def _print_Apply(self, expr: Any) -> str:
        from ..maths.elementwise import FUNCTIONS

        function, argument = FUNCTIONS[expr.function].latex, self._print(expr.argument)
        return function.format(z=argument) if "{z}" in function else f"{function}({argument})"

    def _print_OneMatrix(self, expr: Any) -> str:
        return r"\mathbf{1}"

    def _print_ZeroMatrix(self, expr: Any) -> str:
        return r"\mathbf{0}"

    def _print_Identity(self, expr: Any) -> str:
        return "I"

    def _print_Total(self, expr: Any) -> str:
        return r"\mathbf{1}^{\top} " + self.group(expr.argument, HADAMARD)

    def _print_Softmax(self, expr: Any) -> str:
        return rf"\operatorname{{softmax}}({self._print(expr.argument)})"

    def _print_LogSumExp(self, expr: Any) -> str:
        return rf"\operatorname{{logsumexp}}({self._print(expr.argument)})"

    def _print_MatrixSlice(self, expr: Any) -> str:
        parent, (start, stop, _), _ = expr.args
        name = self.names.get(parent)
        base = self.group(parent, POWER)
        if (isinstance(name, Name) and name.sub) or (type(parent).__name__ == "MatrixSymbol" and name is None
                                                    and leaf_name(parent.name, "value").sub):
            base = f"({base})"
        return f"{base}_{{{self.scalar(start)}:{self.scalar(stop)}}}"

    def _print_BlockMatrix(self, expr: Any) -> str:
        blocks = expr.blocks
        rows = [" & ".join(self._print(blocks[i, j]) for j in range(blocks.shape[1])) for i in range(blocks.shape[0])]
        return r"\begin{bmatrix}" + r" \\ ".join(rows) + r"\end{bmatrix}"


class TextPrinter(Printer):
    """Matrix expressions as one line of unicode: σ(W·x + b), (Δ ⊙ y ⊙ (1 − y))·xᵀ, Wᵀ·δ."""

    minus = "−"
    product_separator = "·"
    hadamard = " ⊙ "
    ones = "1"

    def name(self, name: Any) -> str:
        return name if isinstance(name, str) else name.text

    def gradient(self, name: Name) -> str:
        return f"∂L/∂{name.text}"

    def words(self, text: str, maths: str) -> str:
        return text + maths

    def shape(self, shape: tuple) -> str:
        rows, cols = (*shape, 1)[:2]
        return str(rows) if cols == 1 else f"{rows}×{cols}"

    def scalar_factor(self, value: Any) -> str:
        text = scalar_text(value)
        return text if text.isalnum() or is_number(text) else f"({text})"

    def precedence(self, expr: Any) -> int:
        return ATOM if type(expr).__name__ == "Total" and expr not in self.names else super().precedence(expr)

    def _print_Basic(self, expr: Any) -> str:  # a node without a method: SymPy's text, never an error
        import sympy

        return sympy.sstr(expr)

    def _print_MatrixSymbol(self, expr: Any) -> str:
        return expr.name

    def _print_Transpose(self, expr: Any) -> str:
        return self.group(expr.arg, POWER) + "ᵀ"

    def _print_HadamardPower(self, expr: Any) -> str:
        base, exponent = expr.args
        text = scalar_text(exponent)
        power = text.translate(SUPERSCRIPTS) if text.lstrip("-").isdigit() else f"^({text.replace('-', '−')})"
        return self.group(base, POWER) + ("∘" if base.shape[1] != 1 and type(expr).__name__ == "HadamardPower" else "") + power

    _print_MatPow = _print_HadamardPower

    def _print_Apply(self, expr: Any) -> str:
        from ..maths.elementwise import FUNCTIONS

        function = FUNCTIONS[expr.function]
        template = function.text or function.name + "({z})"
        return template.format(z=self._print(expr.argument), z_atom=self.group(expr.argument, POWER))

    def _print_OneMatrix(self, expr: Any) -> str:
        return "1"

    def product(self, coefficient: Any, factors: list) -> str:
        """c·1, a constant column, is the number c (as 1 is 1): z + 1e-5."""
        if len(factors) == 1 and type(factors[0]).__name__ == "OneMatrix" and factors[0] not in self.names:
            return self.scalar_factor(coefficient)
        return super().product(coefficient, factors)

    def _print_ZeroMatrix(self, expr: Any) -> str:
        return "0"

    def _print_Identity(self, expr: Any) -> str:
        return "I"

    def _print_Total(self, expr: Any) -> str:
        return f"Σ({self._print(expr.argument)})"

    def _print_Softmax(self, expr: Any) -> str:
        return f"softmax({self._print(expr.argument)})"

    def _print_LogSumExp(self, expr: Any) -> str:
        return f"logsumexp({self._print(expr.argument)})"

    def _print_MatrixSlice(self, expr: Any) -> str:
        parent, (start, stop, _), _ = expr.args
        return f"{self.group(parent, POWER)}[{start}:{stop}]"

    def _print_BlockMatrix(self, expr: Any) -> str:
        blocks = expr.blocks
        return "[" + "; ".join(", ".join(self._print(blocks[i, j]) for j in range(blocks.shape[1]))
                               for i in range(blocks.shape[0])) + "]"


def expression_text(expr: Any, names: dict | None = None) -> str:
    """One line of unicode maths for an expression, `σ(W·x + b)`; `names` maps nodes to text shown instead
    (for generated code: the arrays already holding them).

    Safe inside a Python comment or docstring: no line breaks of any kind, control characters, backslashes or
    double quotes (whatever a symbol's name holds)."""
    return code_safe(TextPrinter(names).doprint(expr))

