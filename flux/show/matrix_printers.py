r"""The display of per-sample matrix nodes (flux.maths.matrices), one method per node in each printer:

    softmax(S) by columns    \operatorname{softmax}_{\downarrow}(S)      softmax↓(S)
    causal(S)                \operatorname{causal}(S)                    causal(S)
    mask(Δ) (its VJP)        \operatorname{mask}(Δ)                      mask(Δ)
    1ᵀM                      (\mathbf{1}^{\top} M)                       (1ᵀ·M)
    1·r                      (\mathbf{1}\, r)                            (1·r)    (both parenthesised: (1·gᵀ)ᵀ is g·1ᵀ)

Added to `LatexPrinter` and `TextPrinter` by `install()` when flux derives a model (flux.derive.matrix_rules calls
it), so the printers' own module stays unaware of them.
"""
from __future__ import annotations

from typing import Any

from .printers import HADAMARD, PRODUCT, LatexPrinter, TextPrinter

LATEX = {
    "ColumnSoftmax": lambda p, e: rf"\operatorname{{softmax}}_{{\downarrow}}({p._print(e.argument)})",
    "Causal": lambda p, e: rf"\operatorname{{causal}}({p._print(e.argument)})",
    "CausalZeros": lambda p, e: rf"\operatorname{{mask}}({p._print(e.argument)})",
    "ColumnTotals": lambda p, e: r"(\mathbf{1}^{\top} " + p.group(e.argument, HADAMARD) + ")",
    "RowSpread": lambda p, e: r"(\mathbf{1}\, " + p.group(e.argument, PRODUCT) + ")",  # (1·gᵀ)ᵀ = g·1ᵀ
}
TEXT = {
    "ColumnSoftmax": lambda p, e: f"softmax↓({p._print(e.argument)})",
    "Causal": lambda p, e: f"causal({p._print(e.argument)})",
    "CausalZeros": lambda p, e: f"mask({p._print(e.argument)})",
    "ColumnTotals": lambda p, e: "(1ᵀ·" + p.group(e.argument, HADAMARD) + ")",
    "RowSpread": lambda p, e: "(1·" + p.group(e.argument, PRODUCT) + ")",
}


def install() -> None:
    """Give both printers a `_print_<Node>` method for each node above (once; a printer's own method wins)."""
    for printer, table in ((LatexPrinter, LATEX), (TextPrinter, TEXT)):
        for node, method in table.items():
            if not hasattr(printer, f"_print_{node}"):
                setattr(printer, f"_print_{node}", _method(method))


def _method(function) -> Any:
    def method(self, expr):
        return function(self, expr)

    return method
