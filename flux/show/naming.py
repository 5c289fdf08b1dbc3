r"""The rules that name a derivation's values for reading: gates, sub-models' values, Δ, z, δ, and the order of
the equations. `lay_out` turns a derivation (plain data, read by attributes) into a `Sheet` that either printer
prints.

- Leaves are named as in `names.py`.
- Time. A model with states is one time step, and every per-step quantity carries t: x_t, y_t, Δ_t, h_{t−1}
  for the state read and h_t for the state written. Parameters do not.
- Values. Each state written is h_t, and an output is called y (y_1, y_2, …) unless it is a state (an LSTM's
  output is h_t); a loss's output (its class says `is_loss = True`, as flux.losses.Loss does) is ℓ, defined
  as ℓ(logits, target) = …. In a composite model each sub-model's value is y^{(a)}: the largest
  subexpression that uses parameters of sub-model a only (a sum or ⊙ product only when every term uses them;
  never inside a's own states and gates). A named value prints as its name everywhere after its own equation.
- Gates. An elementwise function whose argument's parameters (of its own model) all carry one single-letter
  suffix, in a model whose parameters carry several, is named by that suffix: with Wi, Ui, bi, Wf, …
  declared, σ(W_i x_t + U_i h_{t−1} + b_i) is i_t, tanh(W_g x_t + U_g h_{t−1} + b_g) is g_t, and an LSTM
  reads c_t = f_t ⊙ c_{t−1} + i_t ⊙ g_t, h_t = o_t ⊙ tanh(c_t). Innermost first (a GRU's n_t uses r_t),
  equations in the order the suffixes are declared; a letter already in use (or t, y) is not taken. The
  rule reads the expression only: the maths and the kernels never see these names.
- Δ. Δ is the upstream gradient ∂L/∂y (Δ_1, Δ_2, … for several outputs; Δ = ∂L/∂h_t "from the output" when
  the output is a state), and Δ_{h,t} = ∂L/∂h_t from step t+1 for each state h.
- z. The argument of an activation, y = f(z), is named only when a gradient uses it (softplus′(z) = σ(z));
  a when a gate is called z (a GRU's).
- δ. A subexpression that occurs at least twice in the gradients and has six leaves or more is named
  δ (δ_1, δ_2, …), inner ones first; shorter ones stay inline: ∂L/∂W = (Δ ⊙ y ⊙ (1 − y)) xᵀ. Two ⊙ products
  that differ only in the order of their factors count as one (the first one's order is shown).
- u, s, ε. A vector the forward equations use twice is u (a layer norm's x − (1/n)·Σ(x)), a per-sample scalar
  the derivation uses twice is s (a norm's √(xᵀ·x): then y = x/s, ∂L/∂x = Δ/s − Σ(Δ ⊙ x)·x/s³), a small number
  added to something is ε with a line ε = 1e-5 (`values.py`).
- Δ factored. A sum whose every term has the upstream factor reads Δ ⊙ (a − b) (`factoring.py`).
- A, Δ_A. A softmax of a matrix is A, the gradient reaching it Δ_A, and a transposed softmax product reads as a
  transpose (`attention.py`): A ⊙ (Δ_A − 1·(1ᵀ(A ⊙ Δ_A))).
- Order. Each equation comes after every named value it uses, otherwise in the order above.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

from .attention import softmax_upstreams, softmax_values, with_transposed_products
from .factoring import with_upstream_factored
from .values import repeated_values, small_constants
from .names import (
    Name, identifier_latex, is_leaf, label_latex, labelled_text, leaf_name, matrix_args, state_letters,
    subscript_digits, walk,
)

DELTA_MIN_LEAVES = 6  # a repeated subexpression is named δ from this many leaves on (an LSTM's ∂L/∂c_t)


@dataclass
class Sheet:
    """A derivation laid out for reading: what each quantity is called, then its equations in order."""

    title: str
    names: dict  # node → Name: leaves and named values
    params: list  # (dotted name, Name, shape)
    forward: list  # (Name, expression), each after the values it uses
    upstream: list  # (Name of Δ, Name of what it is ∂L/∂ of, where it comes from: None or (words, maths))
    intermediates: list  # (Name, expression): δ
    gradients: list  # (Name of the variable, ∂L/∂variable)
    constants: list = ()  # (Name, value): ε = 1e-5


def lay_out(derivation: Any, loss: bool | None = None, wrt: str | None = None) -> Sheet:
    """Name the quantities of a derivation (the rules are in this module's docstring); `loss`: its output is a
    loss ℓ (by default: when the derivation is a flux.losses.Loss class's); `wrt`: which gradients to show (see
    `shown_gradients`)."""
    derivation = with_transposed_products(with_upstream_factored(with_products_unified(derivation)))
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
    for dotted, previous, new in derivation.states:  # first: an output that is a state goes by the state's name
        name = leaf_name(dotted, "state", t, letters.get(dotted, ""))
        path, _, identifier = dotted.rpartition(".")
        z_text = (f"{path}." if path else "") + f"z_{identifier}" + (f"[{t}]" if t else "")
        values.append((name, Name(z_text, "z", ",".join(p for p in (name.base, t) if p), name.sup), new))
    several, loss = len(derivation.outputs) > 1, is_loss(derivation) if loss is None else loss
    for k, out in enumerate(derivation.outputs, 1):
        sub = ",".join(p for p in (str(k) if several else "", t) if p)
        text = ("ŷ" if y != "y" else "y") + (subscript_digits(k) if several else "") + (f"[{t}]" if t else "")
        name = Name(text, y, sub)
        if loss:
            name = Name("ℓ", r"\ell", arguments=tuple(names[x] for x in derivation.inputs))
        values.append((name, Name("z" + text[1:], "z", sub), out))
    for node_name, _, node in values:
        names.setdefault(node, node_name)
    gates = gate_values(derivation, names, t)
    values = submodel_values(derivation, names, y, t, gates) + gates + values
    values = [(n, z, e) for n, z, e in values if names.get(e) == n]  # one equation for a value named twice
    attention = softmax_values(derivation, names)

    gradients = [(names[s], derivation.gradients[s.name]) for s in
                 list(derivation.params.values()) + derivation.inputs + [p for _, p, _ in derivation.states]
                 if s.name in shown_gradients(derivation, loss, wrt)]
    forward = attention + repeated_values([e for _, _, e in values], [g for _, g in gradients], names, t)
    for name, z_name, expr in values:
        argument = expr.argument if type(expr).__name__ == "Apply" else None
        if argument is not None and not is_leaf(argument, names) and any(
                node == argument for _, g in gradients for node in walk(g, names)):
            if z_name.latex() in {n.latex() for n in names.values()}:  # a gate is called z (GRU): use a
                z_name = replace(z_name, text="a" + z_name.text[1:], base="a")
            names[argument] = z_name
            forward.append((z_name, argument))
        forward.append((name, expr))

    upstream = []
    for k, delta in enumerate(derivation.upstream):
        if k < len(derivation.outputs):
            of, name = names[derivation.outputs[k]], leaf_name(delta.name, "upstream", t)
            source = ("the output", "") if of.kind == "state" else None  # Δ_t = ∂L/∂h_t from the output
        else:
            dotted, _, new = derivation.states[k - len(derivation.outputs)]
            of, source = names[new], ("step ", "t+1")
            name = Name("Δ_" + of.text, r"\Delta", ",".join(p for p in (of.base, t) if p), of.sup, "upstream")
        names[delta] = name
        upstream.append((name, of, source))

    upstreams = softmax_upstreams(gradients, names)
    intermediates = order_by_use(upstreams + name_repeated(gradients, names, t), names)
    params = [(dotted, names[s], s.shape) for dotted, s in derivation.params.items()]
    forward = order_by_use(forward, names)
    for _, expr in forward:  # names list values in the order of their equations (⊙ products follow it)
        names[expr] = names.pop(expr)
    constants = small_constants([e for _, e in forward] + [g for _, g in gradients])
    return Sheet(derivation.name, names, params, forward, upstream, intermediates, gradients, constants)


def shown_gradients(derivation: Any, loss: bool, wrt: str | None) -> set:
    """The gradients shown: by default every one, but a loss's with respect to its prediction only (its first
    input: ∂L/∂target is rarely wanted); "all": every one; a variable's name: that one."""
    if wrt == "all" or (wrt is None and not loss):
        return set(derivation.gradients)
    wanted = derivation.inputs[0].name if wrt is None else wrt
    if wanted not in derivation.gradients:
        raise ValueError(f"wrt={wrt!r}: {derivation.name} has gradients with respect to "
                         f"{', '.join(map(repr, derivation.gradients))} (or 'all')")
    return {wanted}


def with_products_unified(derivation: Any) -> Any:
    """The derivation with each ⊙ product that differs from an earlier one only in the order of its factors
    replaced by that one (a traced W (tanh(c) ⊙ o) is the state o ⊙ tanh(c)), so that one name covers both."""
    products: dict = {}
    memo: dict = {}

    def unified(node):
        if node not in memo:
            new = node
            if matrix_args(node) and type(node).__name__ != "BlockMatrix":
                args = tuple(unified(a) if getattr(a, "is_Matrix", False) else a for a in node.args)
                new = node if args == node.args else node.func(*args)
            if type(new).__name__ == "HadamardProduct":
                new = products.setdefault(frozenset(Counter(new.args).items()), new)
            memo[node] = new
        return memo[node]

    states = [(dotted, previous, unified(new)) for dotted, previous, new in derivation.states]
    outputs = [unified(o) for o in derivation.outputs]
    gradients = {k: unified(g) for k, g in derivation.gradients.items()}
    return replace(derivation, states=states, outputs=outputs, gradients=gradients)


def is_loss(derivation: Any) -> bool:
    """Whether a derivation is a loss's (its class says `is_loss = True`, as flux.losses.Loss does): ℓ(…) = …"""
    outputs = derivation.outputs
    return (getattr(derivation, "loss", False) and len(outputs) == 1 and tuple(outputs[0].shape) == (1, 1)
            and not derivation.params)


def gate_values(derivation: Any, names: dict, t: str) -> list:
    """i_t = σ(W_i x_t + U_i h_{t−1} + b_i): an elementwise function whose argument's parameters all carry one
    single-letter suffix, in a model whose parameters carry several, is named by the suffix (innermost first)."""
    groups: dict = {}
    for dotted, symbol in derivation.params.items():
        path, _, identifier = dotted.rpartition(".")
        suffix = identifier_latex(identifier)[1]
        if len(suffix) == 1 and suffix.isascii() and suffix.isalpha():
            groups.setdefault(path, {})[symbol] = suffix
    group_of = {symbol: (path, suffix) for path, members in groups.items() if len(set(members.values())) > 1
                for symbol, suffix in members.items()}
    params = set(derivation.params.values())
    path_of = {symbol: dotted.rpartition(".")[0] for dotted, symbol in derivation.params.items()}
    taken = {(n.base, n.sup) for n in names.values()}
    found: list = []
    seen: set = set()
    group_of_name: dict = {}

    def visit(node, root=False):
        if node in seen or (node in names and not root):
            return
        seen.add(node)
        for child in matrix_args(node):
            visit(child)
        if node in names or type(node).__name__ != "Apply":
            return
        used = {leaf for leaf in walk(node.argument, names) if leaf in params}
        groups_used = {group_of[p] for p in used if p in group_of}
        if len(groups_used) != 1:
            return
        path, suffix = groups_used.pop()
        if any(path_of[p] == path and group_of.get(p) != (path, suffix) for p in used):
            return  # its own model's other parameters (another sub-model's are its input's)
        name = leaf_name(f"{path}.{suffix}" if path else suffix, "value", t)
        if (name.base, name.sup) in taken or suffix in "ty" or any(n.base == name.base and n.sup == name.sup
                                                                  for n, _, _ in found):
            return
        names[node] = name
        group_of_name[name] = (path, suffix)
        z_text = labelled_text(f"z_{suffix}", path) + (f"[{t}]" if t else "")
        found.append((name, Name(z_text, "z", ",".join(p for p in (suffix, t) if p), name.sup), node))

    for root in derivation.outputs + [new for _, _, new in derivation.states]:
        visit(root, root=True)
    declared = list(dict.fromkeys(group_of[s] for s in derivation.params.values() if s in group_of))
    return sorted(found, key=lambda value: declared.index(group_of_name[value[0]]))


def submodel_values(derivation: Any, names: dict, y: str, t: str, gates: list) -> list:
    """y^{(a)} for each sub-model a: the largest subexpressions whose parameters are all a's (outside a's states
    and gates, which are a's values already)."""
    labels = list(dict.fromkeys(d.split(".")[0] for d in derivation.params if "." in d))
    roots = derivation.outputs + [new for _, _, new in derivation.states] + [node for _, _, node in gates]
    owner = {s: d.split(".")[0] for d, s in derivation.params.items() if "." in d}
    found = []
    for label in labels:
        memo: dict = {}
        own_states = {new for dotted, _, new in derivation.states if dotted.split(".")[0] == label}
        own_states |= {node for name, _, node in gates if name.sup.strip("()").split(".")[0] == label_latex(label)}

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
            if node in own_states:
                return
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
            name = Name(labelled_text("y", label) + number + time, y, sub, f"({label_latex(label)})", "input")
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


def leaf_count(expr: Any, names: dict) -> int:
    return sum(1 for node in walk(expr, names, top=True) if node is not expr and is_leaf(node, names)) or 1
