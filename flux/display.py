r"""Showing the maths: LaTeX for notebooks and papers, unicode text for terminals and generated-code comments.

    flux.latex(Perceptron)          # \begin{aligned} y &= \sigma(W x + b) \\ W &\in \mathbb{R}^{m \times n}, … \end{aligned}
    print(Perceptron.derivation)    # y = σ(W·x + b),  ∂L/∂W = (Δ ⊙ y ⊙ (1 − y))·xᵀ, …

Two printers with the shape of SymPy's (and of the numba printer in `codegen.py`): one `_print_<Node>` method per
node type, found along the node's class hierarchy. A derivation is first laid out as a `Sheet` (what each
quantity is called, the equations in order), then printed by either printer.

How quantities are named (`lay_out`):
- Leaves. A parameter's short suffix is a subscript and a sub-model's path a superscript: Wxh → W_{xh},
  bh → b_h, W1 → W_1, a.W → W^{(a)}, 0.W → W^{(0)}; other words print upright (\mathrm{weight}). Δ is the
  upstream gradient ∂L/∂y (Δ_1, Δ_2, … for several outputs). A state spelled as a word prints as its
  initial (hidden → h) unless two states share it.
- Time. A model with states is one time step, and every per-step quantity carries t: x_t, y_t, Δ_t, h_{t−1}
  for the state read and h_t for the state written. Parameters do not.
- Values. Each output is y (y_1, y_2, …), each state written is h_t, and in a composite model each sub-model's
  value is y^{(a)}: the largest subexpression that uses parameters of sub-model a only (a sum or ⊙ product
  only when every term uses them). A named value prints as its name everywhere after its own equation.
- z. The argument of an activation, y = f(z), is named only when a gradient uses it (softplus′(z) = σ(z)).
- δ. A subexpression that occurs at least twice in the gradients and has more than six leaves is named
  δ (δ_1, δ_2, …), inner ones first; shorter ones stay inline: ∂L/∂W = (Δ ⊙ y ⊙ (1 − y)) xᵀ.

Reading order. Sums put terms of inputs first, then of states, then other products, then bare parameters and
constants, and subtractions last (W_{xh} x_t + W_{hh} h_{t−1} + b_h, 1 − y); ⊙ products put the upstream
factor first and parenthesised sums last (Δ ⊙ y ⊙ (1 − y)). HadamardPower of a column vector prints as an
ordinary power (1 − y²: a vector has no other square); of a matrix as W^{∘2}.

SymPy is imported inside functions only, so `import flux` stays free of it.
"""
from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Any

DELTA_MIN_LEAVES = 7  # a repeated subexpression is named δ from this many leaves on

# ---- public --------------------------------------------------------------------------------------------


def latex(obj: Any) -> str:
    r"""The maths of a model class, a model, a derivation or a matrix expression as LaTeX: an `aligned` block
    (\begin{aligned} … \end{aligned}), to be put inside $$ … $$ or an equation environment."""
    from .model import Model
    from .program import Derivation

    if isinstance(obj, type) and issubclass(obj, Model):
        return aligned(class_rows(obj))
    if isinstance(obj, Model):
        return aligned(model_rows(obj))
    if isinstance(obj, Derivation):
        return derivation_latex(obj)
    if type(obj).__module__.startswith(("sympy", "flux.nodes")):
        return LatexPrinter().doprint(obj)
    raise TypeError(f"flux.latex takes a model class, a model, a derivation or a matrix expression, "
                    f"got {type(obj).__name__}: {obj!r}")


def class_latex(cls: type) -> str | None:
    r"""For notebooks (`_repr_latex_` of a model class): y = σ(W x + b) and W ∈ ℝ^{m×n}, b ∈ ℝ^m, in math mode;
    None (IPython then shows the text repr) for a class whose forward cannot be traced, such as flux.Model."""
    from .symbolic import DefinitionError

    try:
        return math_mode(aligned(class_rows(cls)))
    except DefinitionError:
        return None


def model_latex(model: Any) -> str | None:
    """For notebooks (`_repr_latex_` of a model): its equations, sizes and dtype, in math mode."""
    from .symbolic import DefinitionError

    try:
        return math_mode(aligned(model_rows(model)))
    except DefinitionError:
        return None


def derivation_latex(derivation: Any) -> str:
    """The equations, the upstream gradients and every derived gradient, as an `aligned` block."""
    sheet = lay_out(derivation)
    return aligned(derivation_rows(sheet, LatexPrinter(sheet.names)))


def derivation_text(derivation: Any) -> str:
    """The maths and gradients for a terminal: `y = σ(W·x + b)`, `∂L/∂W = (Δ ⊙ y ⊙ (1 − y))·xᵀ`, …"""
    sheet = lay_out(derivation)
    printer = TextPrinter(sheet.names)
    shapes = ", ".join(f"{printer.name(n)}: {printer.shape(s)}" for _, n, s in sheet.params)
    title = f"{sheet.title}({shapes})" if shapes else sheet.title
    return title + "\n" + text_block(derivation_rows(sheet, printer))


def model_text(model: Any) -> str:
    """`Perceptron(W: 3×5, b: 3; float32; 18 parameters)`, then its equations (`y = σ(W·x + b)`)."""
    from .symbolic import DefinitionError

    shapes = ", ".join(f"{n}: {'×'.join(map(str, p.shape))}" for n, p in model.params.items())
    count = model.parameter_count
    head = f"{type(model).__name__}({shapes}{'; ' if shapes else ''}{model.dtype}; {count:,} parameters)"
    try:
        sheet = lay_out(model.derivation)
    except DefinitionError as error:  # a repr must not raise; say why the maths is missing
        return f"{head}\n  (no equations: {error})"
    return head + "\n" + text_block(forward_rows(sheet, TextPrinter(sheet.names)))


def expression_text(expr: Any, names: dict | None = None) -> str:
    """One line of unicode maths for an expression, `σ(W·x + b)`; `names` maps nodes to text shown instead
    (for generated code: the arrays already holding them)."""
    return TextPrinter(names).doprint(expr)


# ---- rows ----------------------------------------------------------------------------------------------


def class_rows(cls: type) -> list:
    sheet = lay_out(cls.derivation)
    printer = LatexPrinter(sheet.names)
    return forward_rows(sheet, printer) + domain_rows(sheet, {d: shape for d, _, shape in sheet.params}, printer)


def model_rows(model: Any) -> list:
    sheet = lay_out(model.derivation)
    printer = LatexPrinter(sheet.names)
    shapes = {dotted: model.params[dotted].shape for dotted, _, _ in sheet.params}
    note = rf"\text{{{model.dtype}, {model.parameter_count:,} parameters}}"
    return forward_rows(sheet, printer) + domain_rows(sheet, shapes, printer) + [("", "", note)]


def derivation_rows(sheet: "Sheet", printer: "Printer") -> list:
    """The equations, what Δ stands for, the named repeated parts δ, then ∂L/∂ of each variable."""
    rows = forward_rows(sheet, printer) + upstream_rows(sheet, printer)
    rows += [(printer.name(name), "=", printer.doprint(expr, define=True)) for name, expr in sheet.intermediates]
    return rows + [(printer.gradient(name), "=", printer.doprint(expr)) for name, expr in sheet.gradients]


def forward_rows(sheet: "Sheet", printer: "Printer") -> list:
    return [(printer.name(name), "=", printer.doprint(expr, define=True)) for name, expr in sheet.forward]


def upstream_rows(sheet: "Sheet", printer: "Printer") -> list:
    """Δ = ∂L/∂y: what each upstream symbol stands for (a state's comes from the next time step)."""
    parts = []
    for delta, of, from_next_step in sheet.upstream:
        part = f"{printer.name(delta)} = {printer.gradient(of)}"
        parts.append(part + (printer.words(" from step ", "t+1") if from_next_step else ""))
    if not parts:
        return []
    first, rest = parts[0].split(" = ", 1)
    return [(first, "=", printer.separator.join([rest] + parts[1:]))]


def domain_rows(sheet: "Sheet", shapes: dict, printer: "LatexPrinter") -> list:
    """W ∈ ℝ^{m×n}, b ∈ ℝ^m: one row per sub-model."""
    rows, groups = [], {}
    for dotted, name, _ in sheet.params:
        groups.setdefault(dotted.rpartition(".")[0], []).append((dotted, name))
    for names in groups.values():
        parts = [f"{printer.name(n)} \\in {printer.domain(shapes[d])}" for d, n in names]
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


# ---- names ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Name:
    r"""How one quantity is written: `text` in the user's own spelling (a.W, hidden[t−1]); `base`, `sub` and
    `sup` build its LaTeX (W_{xh}^{(a)}, h_{t-1})."""

    text: str
    base: str
    sub: str = ""
    sup: str = ""
    kind: str = "value"  # input, param, state, upstream, value, δ

    def latex(self, extra_sup: str = "") -> str:
        sup = self.sup + extra_sup
        return self.base + (f"_{script(self.sub)}" if self.sub else "") + (f"^{script(sup)}" if sup else "")


def labelled_text(identifier: str, path: str) -> str:
    """a.W stays as written; a numbered layer's parameter reads like its LaTeX: 0.W → W⁽⁰⁾."""
    if path and path.replace(".", "").isdigit():
        return identifier + "⁽" + path.replace(".", "·").translate(SUPERSCRIPTS) + "⁾"
    return f"{path}.{identifier}" if path else identifier


def script(s: str) -> str:
    return s if len(s) == 1 else f"{{{s}}}"


def leaf_name(dotted: str, kind: str, time: str = "", letter: str = "") -> Name:
    """The name of a symbol from its dotted spelling: "a.Wxh" → W_{xh}^{(a)}, with an optional time index."""
    path, _, identifier = dotted.rpartition(".")
    base, sub = (letter, "") if letter else identifier_latex(identifier)
    sup = "(" + ".".join(label_latex(p) for p in path.split(".")) + ")" if path else ""
    text = labelled_text(identifier, path) + (f"[{time.replace('-', '−')}]" if time else "")
    return Name(text, base, ",".join(p for p in (sub, time) if p), sup, kind)


GREEK = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau "
         "upsilon phi chi psi omega").split()
UPRIGHT_CAPITALS = {"Gamma", "Delta", "Theta", "Lambda", "Xi", "Pi", "Sigma", "Upsilon", "Phi", "Psi", "Omega"}


def letter_latex(letter: str) -> str | None:
    """One letter (ASCII, a Greek character, or a Greek letter's name) as LaTeX; None if it is none of these."""
    if len(letter) == 1 and letter.isascii() and letter.isalpha():
        return letter
    if len(letter) == 1:
        parts = unicodedata.name(letter, "").split()
        if parts[:1] == ["GREEK"] and "LETTER" in parts:
            letter = parts[-1].capitalize() if "CAPITAL" in parts else parts[-1].lower()
    word = letter.lower()
    if word not in GREEK:
        return None
    if letter[0].isupper():
        return f"\\{letter.capitalize()}" if letter.capitalize() in UPRIGHT_CAPITALS else None
    return {"epsilon": r"\varepsilon", "omicron": "o"}.get(word, f"\\{word}")


def identifier_latex(identifier: str) -> tuple[str, str]:
    """(base, subscript) of an identifier: W → (W, ""), Wxh → (W, xh), bh → (b, h), W_in → (W, in), Δ_1 → (\\Delta, 1).

    A capital or Greek letter takes a suffix of up to three letters or digits, a small letter one letter or
    any digits; anything else is a word and prints upright."""
    if "_" in identifier.strip("_"):
        base, sub = identifier.split("_", 1)
        base_latex = letter_latex(base) or upright(base)
        return base_latex, sub if len(sub) <= 3 and sub.isalnum() and sub.isascii() else upright(sub)
    letter = letter_latex(identifier)
    if letter:
        return letter, ""
    head, tail = identifier[:1], identifier[1:]
    head_latex = letter_latex(head)
    if head_latex and tail.isascii() and tail.isalnum() and tail == tail.lower():
        short = len(tail) <= 3 if (head.isupper() or not head.isascii()) else len(tail) == 1 or tail.isdigit()
        if short:
            return head_latex, tail
    return upright(identifier), ""


def upright(word: str) -> str:
    return r"\mathrm{" + word.replace("_", r"\_") + "}"


def label_latex(label: str) -> str:
    """A sub-model's name in a superscript: 0 and a as they are, longer words upright."""
    return label if label.isdigit() or len(label) == 1 else upright(label)


def state_letters(dotted_names: list[str]) -> dict[str, str]:
    """hidden → h, cell → c: a state spelled as a word prints as its initial, unless two states share it."""
    identifiers = [d.rpartition(".")[2] for d in dotted_names]
    initials = Counter(i[0] for i in identifiers if identifier_latex(i)[0].startswith(r"\mathrm"))
    return {d: i[0] for d, i in zip(dotted_names, identifiers)
            if identifier_latex(i)[0].startswith(r"\mathrm") and i[0].isalpha() and initials[i[0]] == 1}


# ---- laying a derivation out ---------------------------------------------------------------------------


@dataclass
class Sheet:
    """A derivation laid out for reading: what each quantity is called, then its equations in order."""

    title: str
    names: dict  # node → Name: leaves and named values
    params: list  # (dotted name, Name, shape)
    forward: list  # (Name, expression), each after the values it uses
    upstream: list  # (Name of Δ, Name of what it is ∂L/∂ of, whether it comes from the next time step)
    intermediates: list  # (Name, expression): δ
    gradients: list  # (Name of the variable, ∂L/∂variable)


def lay_out(derivation: Any) -> Sheet:
    """Name the quantities of a derivation (the rules are in this module's docstring)."""
    t = "t" if derivation.states else ""
    names: dict = {}
    for x in derivation.inputs:
        names[x] = leaf_name(x.name, "input", t)
    for dotted, symbol in derivation.params.items():
        names[symbol] = leaf_name(dotted, "param")
    letters = state_letters([dotted for dotted, _, _ in derivation.states])
    for dotted, previous, _ in derivation.states:
        names[previous] = leaf_name(dotted, "state", f"{t}-1", letters.get(dotted, ""))
    taken = {n.base for n in names.values()}
    y = r"\hat{y}" if "y" in taken else "y"

    values: list = []  # (Name, Name of its z, expression)
    several = len(derivation.outputs) > 1
    for k, out in enumerate(derivation.outputs, 1):
        sub = ",".join(p for p in (str(k) if several else "", t) if p)
        text = ("ŷ" if y != "y" else "y") + (subscript_digits(k) if several else "") + (f"[{t}]" if t else "")
        values.append((Name(text, y, sub), Name("z" + text[1:], "z", sub), out))
    for dotted, previous, new in derivation.states:
        name = leaf_name(dotted, "state", t, letters.get(dotted, ""))
        path, _, identifier = dotted.rpartition(".")
        z_text = (f"{path}." if path else "") + f"z_{identifier}" + (f"[{t}]" if t else "")
        values.append((name, Name(z_text, "z", ",".join(p for p in (name.base, t) if p), name.sup), new))
    for node_name, _, node in values:
        names.setdefault(node, node_name)
    values = submodel_values(derivation, names, y, t) + values
    values = [(n, z, e) for n, z, e in values if names.get(e) == n]  # one equation for a value named twice

    gradients = [(names[s], derivation.gradients[s.name]) for s in
                 list(derivation.params.values()) + derivation.inputs + [p for _, p, _ in derivation.states]
                 if s.name in derivation.gradients]
    forward = []
    for name, z_name, expr in values:
        argument = expr.argument if type(expr).__name__ == "Apply" else None
        if argument is not None and not is_leaf(argument, names) and any(
                node == argument for _, g in gradients for node in walk(g, names)):
            names[argument] = z_name
            forward.append((z_name, argument))
        forward.append((name, expr))

    upstream = []
    for k, delta in enumerate(derivation.upstream):
        if k < len(derivation.outputs):
            of, name = names[derivation.outputs[k]], leaf_name(delta.name, "upstream", t)
        else:
            dotted, _, new = derivation.states[k - len(derivation.outputs)]
            of = names[new]
            name = Name(f"{delta.name}[{t}]" if t else delta.name, r"\Delta", ",".join(p for p in (of.base, t) if p),
                        of.sup, "upstream")
        names[delta] = name
        upstream.append((name, of, k >= len(derivation.outputs)))

    intermediates = name_repeated(gradients, names, t)
    params = [(dotted, names[s], s.shape) for dotted, s in derivation.params.items()]
    return Sheet(derivation.name, names, params, order_by_use(forward, names), upstream, intermediates, gradients)


def submodel_values(derivation: Any, names: dict, y: str, t: str) -> list:
    """y^{(a)} for each sub-model a: the largest subexpressions whose parameters are all a's."""
    labels = list(dict.fromkeys(d.split(".")[0] for d in derivation.params if "." in d))
    roots = derivation.outputs + [new for _, _, new in derivation.states]
    owner = {s: d.split(".")[0] for d, s in derivation.params.items() if "." in d}
    found = []
    for label in labels:
        memo: dict = {}

        def owners(node) -> frozenset:
            """The sub-models whose parameters a node uses."""
            if node not in memo:
                if node in owner:
                    memo[node] = frozenset([owner[node]])
                elif is_leaf(node, names):
                    memo[node] = frozenset()
                else:
                    memo[node] = frozenset().union(*(owners(c) for c in matrix_args(node)))
            return memo[node]

        def visit(node, root=False):
            uses = frozenset().union(*(owners(c) for c in matrix_args(node))) if root else owners(node)
            mine = uses == {label} and (root or not is_leaf(node, names)) and type(node).__name__ != "Transpose"
            if mine and type(node).__name__ in ("MatAdd", "HadamardProduct"):
                mine = all(label in owners(c) for c in matrix_args(node))
            if mine:
                if node not in names and node not in nodes:
                    nodes.append(node)
                return
            for child in matrix_args(node):
                if not is_leaf(child, names):
                    visit(child)

        nodes: list = []
        for root in roots:
            visit(root, root=True)
        for k, node in enumerate(nodes, 1):
            sub = ",".join(p for p in (str(k) if len(nodes) > 1 else "", t) if p)
            number = subscript_digits(k) if len(nodes) > 1 else ""
            time = f"[{t}]" if t else ""
            name = Name(labelled_text("y", label) + number + time, y, sub, f"({label_latex(label)})")
            names[node] = name
            found.append((name, Name(labelled_text("z", label) + number + time, "z", sub, name.sup), node))
    return found


def name_repeated(gradients: list, names: dict, t: str) -> list:
    """δ = a subexpression that occurs twice or more in the gradients and has DELTA_MIN_LEAVES leaves or more."""
    chosen: list = []
    while True:
        counts: Counter = Counter()
        for expr in [g for _, g in gradients] + [c for node in chosen for c in matrix_args(node)]:
            counts.update(node for node in walk(expr, names) if not is_leaf(node, names))
        candidates = [n for n, c in counts.items() if c >= 2 and leaf_count(n, names) >= DELTA_MIN_LEAVES]
        if not candidates:
            break
        node = max(candidates, key=lambda n: leaf_count(n, names))
        chosen.append(node)
        names[node] = Name("δ", r"\delta", kind="δ")  # provisional: numbered below, inner ones first
    ordered = [node for _, node in order_by_use([(names[n], n) for n in chosen], names, by_node=True)]
    for k, node in enumerate(ordered, 1):
        number = str(k) if len(ordered) > 1 else ""
        names[node] = Name("δ" + (subscript_digits(k) if number else "") + (f"[{t}]" if t else ""), r"\delta",
                           ",".join(p for p in (number, t) if p), kind="δ")
    return [(names[node], node) for node in ordered]


def order_by_use(definitions: list, names: dict, by_node: bool = False) -> list:
    """Definitions reordered so that each comes after every named value it uses (otherwise as given)."""
    defined = {expr: i for i, (_, expr) in enumerate(definitions)}
    uses = {i: {defined[n] for n in walk(expr, names, top=True) if n in defined and n != expr}
            for i, (_, expr) in enumerate(definitions)}
    done: list = []
    while len(done) < len(definitions):
        ready = [i for i in range(len(definitions)) if i not in done and uses[i] <= set(done)]
        done.append(ready[0] if ready else next(i for i in range(len(definitions)) if i not in done))
    return [definitions[i] for i in done]


# ---- walking expressions -------------------------------------------------------------------------------


def matrix_args(node: Any) -> list:
    """The matrix arguments of a node (a BlockMatrix's blocks)."""
    if type(node).__name__ == "BlockMatrix":
        return list(node.blocks)
    return [a for a in node.args if getattr(a, "is_Matrix", False)]


def is_leaf(node: Any, names: dict) -> bool:
    return node in names or not matrix_args(node)


def walk(expr: Any, names: dict, top: bool = False):
    """Every node of an expression tree (repeats included); named nodes are leaves (`top`: even the root)."""
    yield expr
    if (top or expr not in names) and matrix_args(expr):
        for child in matrix_args(expr):
            yield from walk(child, names)


def leaf_count(expr: Any, names: dict) -> int:
    return sum(1 for node in walk(expr, names, top=True) if node is not expr and is_leaf(node, names)) or 1


def subscript_digits(k: int) -> str:
    return str(k).translate(str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉"))


# ---- printers ------------------------------------------------------------------------------------------

ADD, HADAMARD, PRODUCT, POWER, ATOM = range(5)  # how tightly a node binds


class Printer:
    """What the LaTeX and text printers share: dispatch on node type, reading order, parentheses."""

    minus = "-"
    product_separator = " "
    hadamard = r" \odot "
    separator = ", "

    def __init__(self, names: dict | None = None):
        self.names = dict(names or {})

    def doprint(self, expr: Any, define: bool = False) -> str:
        """The expression; `define`: the right-hand side of its own equation, so its name is not used."""
        return self._print_node(expr) if define else self._print(expr)

    def _print(self, expr: Any) -> str:
        name = self.names.get(expr)
        return self._print_node(expr) if name is None else self.name(name)

    def _print_node(self, expr: Any) -> str:
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
                "Transpose": POWER, "HadamardPower": POWER}.get(kind, ATOM)

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
        """⊙ products read the upstream gradient first and parenthesised sums last."""
        if self.leaf_kinds(factor) & {"upstream", "δ"}:
            return 0
        return 1 if self.precedence(factor) > HADAMARD else 2

    def _print_MatAdd(self, expr: Any) -> str:
        terms = [(self.is_negative(t), self.term_rank(t), i, t) for i, t in enumerate(expr.args)]
        text = ""
        for negative, _, _, term in sorted(terms, key=lambda x: x[:3]):
            body = self.magnitude(term)
            sign = (f" {self.minus} " if negative else " + ") if text else (self.minus if negative else "")
            text += sign + body
        return text

    def is_negative(self, term: Any) -> bool:
        """A product with a negative coefficient, or a ⊙ product with an odd number of such factors."""
        if term in self.names:
            return False
        if type(term).__name__ == "HadamardProduct":
            return sum(self.is_negative(f) for f in term.args) % 2 == 1
        return type(term).__name__ == "MatMul" and bool(term.as_coeff_matrices()[0].is_negative)

    def magnitude(self, term: Any) -> str:
        """A term without its minus sign: −Δ ⊙ x prints as Δ ⊙ x."""
        if type(term).__name__ == "HadamardProduct" and term not in self.names:
            return self.hadamard_product(term.args)
        if not self.is_negative(term):
            return self._print(term)
        coefficient, factors = term.as_coeff_matrices()
        return self.product(-coefficient, factors)

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
        return (self.minus if self.is_negative(expr) else "") + self.hadamard_product(expr.args)

    def hadamard_product(self, factors: tuple) -> str:
        """The factors' magnitudes joined by ⊙, upstream first (the sign is the caller's)."""
        ordered = sorted(enumerate(factors), key=lambda f: (self.factor_rank(f[1]), f[0]))
        parts = []
        for _, factor in ordered:
            if self.is_negative(factor) and type(factor).__name__ == "MatMul":
                coefficient, matrices = factor.as_coeff_matrices()
                text = self.product(-coefficient, matrices)
                simple = coefficient == -1 and len(matrices) == 1 and self.precedence(matrices[0]) > PRODUCT
                parts.append(text if simple else f"({text})")
            else:
                parts.append(self.group(factor, PRODUCT))
        return self.hadamard.join(parts)

    def is_column(self, expr: Any) -> bool:
        return expr.shape[1] == 1


class LatexPrinter(Printer):
    r"""Matrix expressions as LaTeX that KaTeX, MathJax and (for single equations) matplotlib typeset:
    σ(W x + b), Δ ⊙ y ⊙ (1 − y) as \Delta \odot y \odot (\mathbf{1} - y), xᵀ as x^{\top}."""

    separator = r",\quad "

    def name(self, name: Any) -> str:
        return name if isinstance(name, str) else name.latex()

    def gradient(self, name: Name) -> str:
        return rf"\frac{{\partial L}}{{\partial {name.latex()}}}"

    def words(self, text: str, maths: str) -> str:
        return rf"\text{{{text}}}{maths}"

    def domain(self, shape: tuple) -> str:
        rows, cols = (*shape, 1)[:2]
        return rf"\mathbb{{R}}^{{{self.scalar(rows)}}}" if cols == 1 else \
            rf"\mathbb{{R}}^{{{self.scalar(rows)} \times {self.scalar(cols)}}}"

    def scalar(self, value: Any) -> str:
        import sympy

        return sympy.latex(sympy.sympify(value))

    def scalar_factor(self, value: Any) -> str:
        return self.scalar(value)

    def superscripted(self, expr: Any, sup: str, joins_name: bool) -> str:
        """expr^{sup}; a name's own superscript takes a transpose along (W^{(0)\top}) but not a power."""
        name = self.names.get(expr) or (leaf_name(expr.name, "value") if type(expr).__name__ == "MatrixSymbol"
                                        else None)
        if isinstance(name, Name) and (joins_name or not name.sup):
            return name.latex(sup)
        return f"{self.group(expr, POWER)}^{script(sup)}"

    def _print_MatrixSymbol(self, expr: Any) -> str:
        return leaf_name(expr.name, "value").latex()

    def _print_Transpose(self, expr: Any) -> str:
        return self.superscripted(expr.arg, r"\top", joins_name=True)

    def _print_HadamardPower(self, expr: Any) -> str:
        base, exponent = expr.args
        power = self.scalar(exponent) if self.is_column(base) else rf"\circ {self.scalar(exponent)}"
        return self.superscripted(base, power, joins_name=False)

    def _print_Apply(self, expr: Any) -> str:
        from .elementwise import FUNCTIONS

        function, argument = FUNCTIONS[expr.function].latex, self._print(expr.argument)
        return rf"\sqrt{{{argument}}}" if function == r"\sqrt" else f"{function}({argument})"

    def _print_OneMatrix(self, expr: Any) -> str:
        return r"\mathbf{1}"

    def _print_ZeroMatrix(self, expr: Any) -> str:
        return r"\mathbf{0}"

    def _print_Identity(self, expr: Any) -> str:
        return "I"

    def _print_Total(self, expr: Any) -> str:
        return r"\mathbf{1}^{\top} " + self.group(expr.argument, HADAMARD)

    def _print_Spread(self, expr: Any) -> str:
        return self.group(expr.argument, PRODUCT) + r" \mathbf{1}"

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


SUPERSCRIPTS = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")


class TextPrinter(Printer):
    """Matrix expressions as one line of unicode: σ(W·x + b), (Δ ⊙ y ⊙ (1 − y))·xᵀ, Wᵀ·δ."""

    minus = "−"
    product_separator = "·"
    hadamard = " ⊙ "

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
        text = str(value)
        return f"({text})" if not text.isalnum() else text

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
        text = str(exponent)
        power = text.translate(SUPERSCRIPTS) if text.lstrip("-").isdigit() else f"^({text})"
        return self.group(base, POWER) + ("" if self.is_column(base) else "∘") + power

    def _print_Apply(self, expr: Any) -> str:
        return f"{expr.function}({self._print(expr.argument)})"

    def _print_OneMatrix(self, expr: Any) -> str:
        return "1"

    def _print_ZeroMatrix(self, expr: Any) -> str:
        return "0"

    def _print_Identity(self, expr: Any) -> str:
        return "I"

    def _print_Total(self, expr: Any) -> str:
        return f"Σ({self._print(expr.argument)})"

    def _print_Spread(self, expr: Any) -> str:
        return self.group(expr.argument, PRODUCT) + "·1"

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
