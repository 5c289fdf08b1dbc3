r"""Laying out the maths: LaTeX for notebooks and papers, unicode text for terminals.

    flux.latex(Perceptron)          # \begin{aligned} y &= \sigma(W x + b) \\ W &\in \mathbb{R}^{m \times n}, … \end{aligned}
    print(Perceptron.derivation)    # y = σ(W·x + b),  ∂L/∂W = (Δ ⊙ y ⊙ (1 − y))·xᵀ, …

A derivation is first laid out as a `Sheet` (`naming.py`: what each quantity is called, the equations in order),
then printed as rows (left side, relation, right side) by either printer (`printers.py`) and set as an
`aligned` block or as aligned lines of text. The objects shown are read by their attributes only: a model class
or model (`declared_params`, `derivation`, …), a derivation (`outputs`, `upstream`, `gradients`, …).

Sizes. ℝ^{m×n} for a parameter declared with two dimensions, ℝ^{m} with one, whatever the sizes (a 16×1 W_i
stays a matrix). An instance lists its dtype and parameter count unless it has no parameters (a loss, σ).

SymPy is imported inside functions only, so `import flux` stays free of it.
"""
from __future__ import annotations

from typing import Any

from .naming import Sheet, lay_out
from .printers import LatexPrinter, Printer, TextPrinter

# ---- public --------------------------------------------------------------------------------------------


def latex(obj: Any, wrt: str | None = None) -> str:
    r"""The maths of a model class, a model, a derivation or a matrix expression as LaTeX: an `aligned` block
    (\begin{aligned} … \end{aligned}), to be put inside $$ … $$ or an equation environment.

    `wrt` (a derivation's): which gradients to show. By default all of them, but a loss's with respect to its
    prediction only (ℓ(prediction, target): ∂L/∂prediction); "all" adds ∂L/∂target; an input's or parameter's
    name shows that one only."""
    if isinstance(obj, type) and callable(getattr(obj, "declared_params", None)):  # a flux.Model class
        return aligned(class_rows(obj))
    if callable(getattr(obj, "declared_params", None)):  # a flux.Model
        return aligned(model_rows(obj))
    if all(hasattr(obj, field) for field in ("outputs", "upstream", "gradients")):  # a Derivation
        return derivation_latex(obj, wrt)
    if type(obj).__module__.startswith(("sympy", "flux.maths.nodes")):
        return LatexPrinter().doprint(obj)
    raise TypeError(f"flux.latex takes a model class, a model, a derivation or a matrix expression, "
                    f"got {type(obj).__name__}: {obj!r}")


def class_latex(cls: type) -> str | None:
    r"""For notebooks (`_repr_latex_` of a model class): y = σ(W x + b) and W ∈ ℝ^{m×n}, b ∈ ℝ^m, in math mode;
    None (IPython then shows the text repr) for a class whose forward cannot be traced, such as flux.Model."""
    from ..trace.language import DefinitionError

    try:
        return math_mode(aligned(class_rows(cls)))
    except DefinitionError:
        return None


def model_latex(model: Any) -> str | None:
    """For notebooks (`_repr_latex_` of a model): its equations, sizes and dtype, in math mode."""
    from ..trace.language import DefinitionError

    try:
        return math_mode(aligned(model_rows(model)))
    except DefinitionError:
        return None


def derivation_latex(derivation: Any, wrt: str | None = None) -> str:
    """The equations, the upstream gradients and the derived gradients (`wrt`: as in `latex`), as an `aligned`
    block."""
    sheet = lay_out(derivation, wrt=wrt)
    return aligned(derivation_rows(sheet, printer_for(sheet, LatexPrinter)))


def derivation_text(derivation: Any, wrt: str | None = None) -> str:
    """The maths and gradients for a terminal: `y = σ(W·x + b)`, `∂L/∂W = (Δ ⊙ y ⊙ (1 − y))·xᵀ`, …; `wrt`:
    which gradients, as in `latex` (a loss's: its prediction's only unless "all")."""
    sheet = lay_out(derivation, wrt=wrt)
    printer = printer_for(sheet, TextPrinter)
    shapes = ", ".join(f"{printer.name(n)}: {printer.shape(s)}" for _, n, s in sheet.params)
    title = f"{sheet.title}({shapes})" if shapes else sheet.title
    return title + "\n" + text_block(derivation_rows(sheet, printer))


def model_text(model: Any) -> str:
    """`Perceptron(W: 3×5, b: 3; float32; 18 parameters)`, then its equations (`y = σ(W·x + b)`); a model
    without parameters (a function, a loss: it computes in its input's precision) is `Name`."""
    from ..trace.language import DefinitionError

    shapes = ", ".join(f"{n}: {'×'.join(map(str, p.shape))}" for n, p in model.params.items())
    count = model.parameter_count
    head = f"{type(model).__name__}({shapes}; {model.dtype}; {count:,} parameters)" if count else \
        type(model).__name__  # no parameters: it computes in its input's precision, whatever it did last
    try:
        sheet = lay_out(model.derivation)
    except DefinitionError as error:  # a repr must not raise; say why the maths is missing
        return f"{head}\n  (no equations: {error})"
    return head + "\n" + text_block(forward_rows(sheet, printer_for(sheet, TextPrinter)))


def printer_for(sheet: Sheet, kind: type) -> Printer:
    """A printer of the sheet's names and named constants (ε)."""
    return kind(sheet.names, {value: name for name, value in sheet.constants})


# ---- rows ----------------------------------------------------------------------------------------------


def class_rows(cls: type) -> list:
    sheet = lay_out(cls.derivation)
    printer = printer_for(sheet, LatexPrinter)
    shapes = {d: shape for d, _, shape in sheet.params}
    return forward_rows(sheet, printer) + domain_rows(sheet, shapes, declared_dims(cls, shapes), printer)


def model_rows(model: Any) -> list:
    """Equations, parameter spaces with the model's sizes, and its dtype and parameter count (when it has any)."""
    sheet = lay_out(model.derivation)
    printer = printer_for(sheet, LatexPrinter)
    shapes = {dotted: model.params[dotted].shape for dotted, _, _ in sheet.params}
    rows = forward_rows(sheet, printer) + domain_rows(sheet, shapes, declared_dims(model, shapes), printer)
    count = model.parameter_count
    return rows + ([("", "", rf"\text{{{model.dtype}, {count:,} parameters}}")] if count else [])


def declared_dims(model: Any, dotted_names: Any) -> dict:
    """How many dimensions each parameter declares (a model class or instance; sub-models by their labels)."""
    dims = {}
    for dotted in dotted_names:
        owner, *path = [model] + dotted.split(".")[:-1]
        for label in path:
            subs = dict(owner.declared_slots() if isinstance(owner, type) else owner.named_submodels())
            owner = subs.get(label)
            if owner is None:
                break
        else:
            spec = (owner if isinstance(owner, type) else type(owner)).declared_params().get(dotted.split(".")[-1])
            if spec is not None:
                dims[dotted] = len(spec.dims)
    return dims


def derivation_rows(sheet: Sheet, printer: Printer) -> list:
    """The equations, what Δ stands for, the named repeated parts δ, then ∂L/∂ of each variable."""
    rows = forward_rows(sheet, printer) + upstream_rows(sheet, printer)
    rows += [(printer.name(name), "=", printer.doprint(expr, define=True)) for name, expr in sheet.intermediates]
    return rows + [(printer.gradient(name), "=", printer.doprint(expr)) for name, expr in sheet.gradients]


def forward_rows(sheet: Sheet, printer: Printer) -> list:
    """The equations, then the constants they name (ε = 1e-5)."""
    return [(printer.head(name), "=", printer.doprint(expr, define=True)) for name, expr in sheet.forward] + \
        [(printer.name(name), "=", printer.number(value)) for name, value in sheet.constants]


def upstream_rows(sheet: Sheet, printer: Printer) -> list:
    """Δ = ∂L/∂y: what each upstream symbol stands for (a state's comes from the next time step)."""
    parts = []
    for delta, of, source in sheet.upstream:
        part = f"{printer.name(delta)} = {printer.gradient(of)}"
        parts.append(part + (printer.words(" from " + source[0], source[1]) if source else ""))
    if not parts:
        return []
    first, rest = parts[0].split(" = ", 1)
    return [(first, "=", printer.separator.join([rest] + parts[1:]))]


def domain_rows(sheet: Sheet, shapes: dict, dims: dict, printer: LatexPrinter) -> list:
    """W ∈ ℝ^{m×n}, b ∈ ℝ^m: one row per sub-model (`dims`: how many each parameter declares)."""
    rows, groups = [], {}
    for dotted, name, _ in sheet.params:
        groups.setdefault(dotted.rpartition(".")[0], []).append((dotted, name))
    for names in groups.values():
        parts = [f"{printer.name(n)} \\in {printer.domain(shapes[d], dims.get(d))}" for d, n in names]
        first, rest = parts[0].split(" \\in ", 1)
        rows.append((first, r"\in", printer.separator.join([rest] + parts[1:])))
    return rows


def aligned(rows: list) -> str:
    lines = [f"{left} &{relation} {right}" if relation else f"{left} & {right}" for left, relation, right in rows]
    return "\\begin{aligned}\n" + " \\\\\n".join(lines) + "\n\\end{aligned}"


def math_mode(block: str) -> str:
    return f"$\\displaystyle {block}$"


def text_block(rows: list) -> str:
    width = max((len(left) for left, _, _ in rows), default=0)
    return "\n".join(f"  {left.rjust(width)} {relation} {right}" for left, relation, right in rows)
