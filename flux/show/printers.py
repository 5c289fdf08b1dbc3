r"""Printers for flux's maths: LaTeX for notebooks and papers, one line of unicode for terminals and code comments.

What both share (dispatch, reading order, parentheses, per-sample scalars and quotients) is `base.Printer`; each
printer here says how one node, power, quotient and scalar is written. HadamardPower of a column vector prints
as an ordinary power (1 − y²: a vector has no other square) and a power ½ as a root (√v, \sqrt{v}); of a matrix
as W^{∘2}; a matrix power as W². Numbers are short (1e-5, LaTeX 10^{-5}; `scalars.py`). Generated code quotes
`expression_text`, which never breaks a comment or a docstring line. SymPy is imported inside functions only,
so `import flux` stays free of it.
"""
from __future__ import annotations

from typing import Any

from .base import ATOM, HADAMARD, POWER, PRODUCT, Printer
from .fractions import ScalarLatex, ScalarText, root
from .names import SUPERSCRIPTS, Name, code_safe, dimension_latex, leaf_name, script
from .scalars import float_latex, float_text, is_number, scalar_latex, scalar_text

__all__ = ["LatexPrinter", "Printer", "TextPrinter", "expression_text"]

class LatexPrinter(Printer):
    r"""Matrix expressions as LaTeX that KaTeX, MathJax and (for single equations) matplotlib typeset:
    σ(W x + b), Δ ⊙ y ⊙ (1 − y) as \Delta \odot y \odot (\mathbf{1} - y), xᵀ as x^{\top}."""

    separator = r",\quad "
    ones = r"\mathbf{1}"
    oslash = r" \oslash "

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

    def number(self, value: float) -> str:
        return float_latex(value)

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

    def power(self, base: Any, exponent: Any, elementwise: bool) -> str:
        """v^{2}, \\sqrt{v} for a power ½, W^{\\circ 2} for a matrix's elementwise power."""
        from .algebra import exact

        exponent = exact(exponent)
        if exponent == exact(0.5):
            return rf"\sqrt{{{self._print(base)}}}"
        power = rf"\circ {self.scalar(exponent)}" if elementwise else self.scalar(exponent)
        return self.superscripted(base, power, joins_name=False)

    # per-sample matrices (flux.maths.matrices): (1·gᵀ)ᵀ is g·1ᵀ, so 1ᵀM and 1·r keep their parentheses
    def _print_ColumnSoftmax(self, expr: Any) -> str:
        return rf"\operatorname{{softmax}}_{{\downarrow}}({self._print(expr.argument)})"

    def _print_Causal(self, expr: Any) -> str:
        return rf"\operatorname{{causal}}({self._print(expr.argument)})"

    def _print_CausalZeros(self, expr: Any) -> str:
        return rf"\operatorname{{mask}}({self._print(expr.argument)})"

    def _print_ColumnTotals(self, expr: Any) -> str:
        return r"(\mathbf{1}^{\top} " + self.group(expr.argument, HADAMARD) + ")"

    def _print_RowSpread(self, expr: Any) -> str:
        return r"(\mathbf{1}\, " + self.group(expr.argument, PRODUCT) + ")"

    def _print_Apply(self, expr: Any) -> str:
        from ..maths.elementwise import FUNCTIONS

        function, argument = FUNCTIONS[expr.function].latex, self._print(expr.argument)
        if expr.function == "abs":
            return f"|{argument}|"
        return function.format(z=argument) if "{z}" in function else f"{function}({argument})"

    # ---- per-sample scalars and quotients --------------------------------------------------------------

    def scalar_printer(self) -> ScalarLatex:
        return ScalarLatex(lambda node: (self._print(node), self.precedence(node)), self.algebra.nodes,
                           self.constants)

    def per_sample(self, value: Any) -> str:
        return self.scalar_printer().print(value)

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
    oslash = " ⊘ "

    def name(self, name: Any) -> str:
        return name if isinstance(name, str) else name.text

    def gradient(self, name: Name) -> str:
        return f"∂L/∂{name.text}"

    def words(self, text: str, maths: str) -> str:
        return text + maths

    def shape(self, shape: tuple) -> str:
        rows, cols = (*shape, 1)[:2]
        return str(rows) if cols == 1 else f"{rows}×{cols}"

    def number(self, value: float) -> str:
        return float_text(value)

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

    def power(self, base: Any, exponent: Any, elementwise: bool) -> str:
        """v², √v for a power ½, v^(3/2), W∘² for a matrix's elementwise power."""
        from .algebra import exact

        exponent = exact(exponent)
        if exponent == exact(0.5):
            return root(self._print(base), self.precedence(base))
        text = scalar_text(exponent)
        power = text.translate(SUPERSCRIPTS) if text.lstrip("-").isdigit() else f"^({text.replace('-', '−')})"
        return self.group(base, POWER) + ("∘" if elementwise else "") + power

    # per-sample matrices (flux.maths.matrices)
    def _print_ColumnSoftmax(self, expr: Any) -> str:
        return f"softmax↓({self._print(expr.argument)})"

    def _print_Causal(self, expr: Any) -> str:
        return f"causal({self._print(expr.argument)})"

    def _print_CausalZeros(self, expr: Any) -> str:
        return f"mask({self._print(expr.argument)})"

    def _print_ColumnTotals(self, expr: Any) -> str:
        return "(1ᵀ·" + self.group(expr.argument, HADAMARD) + ")"

    def _print_RowSpread(self, expr: Any) -> str:
        return "(1·" + self.group(expr.argument, PRODUCT) + ")"

    def _print_Apply(self, expr: Any) -> str:
        from ..maths.elementwise import FUNCTIONS

        if expr.function == "sqrt":
            return root(self._print(expr.argument), self.precedence(expr.argument))
        if expr.function == "abs":
            return f"|{self._print(expr.argument)}|"
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

    # ---- per-sample scalars and quotients --------------------------------------------------------------

    def scalar_printer(self) -> ScalarText:
        return ScalarText(lambda node: (self._print(node), self.precedence(node)), self.algebra.nodes, self.constants)

    def per_sample(self, value: Any) -> str:
        return self.scalar_printer().print(value)

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

