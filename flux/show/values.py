r"""Naming what a textbook names in a forward pass: repeated intermediate values and small constants.

- u. A vector subexpression that the forward equations use twice or more (and that is more than a product like
  W·x) is named u (then v, w): a layer norm's centred input u = x − (1/n)·Σ(x), a highway's gate σ(W·x + b).
- s. A per-sample scalar (1×1) of the forward equations that the derivation uses twice or more, built of four
  nodes or more and not itself a reciprocal, is named s (then r, q): a norm s = √(xᵀ·x), a layer norm's
  s = √((1/n)·Σ(u²) + ε). Its reciprocal and powers then read 1/s, s³.
- ε. A small number (0 < c ≤ 1e-3) added to something, as in √(σ² + 1e-5), is shown as ε, with its value on a
  line of its own (ε = 1e-5); several different ones are ε₁, ε₂.

Largest first: once a value is named it is a leaf, so its own parts are named only if they repeat outside it.
Display only, like every name: the maths and the kernels never see them.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

from .names import Name, is_leaf, subscript_digits, walk

VALUE_MIN_NODES = 4  # u and s are named from this many nodes on (x − (1/n)·Σ(x) has five, W·x three)
EPSILON_MAX = 1e-3  # a number added to something is ε up to this size
VECTOR_LETTERS = ("u", "v", "w")
SCALAR_LETTERS = ("s", "r", "q")


def repeated_values(roots: list, gradients: list, names: dict, t: str) -> list:
    """[(Name, node)]: the forward values named u and s (rules in this module's docstring), inner ones last."""
    taken = {n.base for n in names.values()}
    letters = {"vector": [c for c in VECTOR_LETTERS if c not in taken],
               "scalar": [c for c in SCALAR_LETTERS if c not in taken]}
    found: list = []
    while True:
        forward = occurrences(roots + [node for _, node in found], names)  # a named value's definition too
        everywhere = forward + occurrences(gradients, names)
        candidates = [node for node, count in forward.items() if node not in names and not is_leaf(node, names)
                      and size(node, names) >= VALUE_MIN_NODES and wanted(node, forward[node], everywhere[node])]
        if not candidates:
            break
        node = max(candidates, key=lambda n: size(n, names))
        kind = "scalar" if tuple(node.shape) == (1, 1) else "vector"
        pool, k = letters[kind], sum(1 for other, _ in found if other == kind)
        if not pool:
            break
        letter, number = (pool[k], "") if k < len(pool) else (pool[0], str(k + 1))
        names[node] = Name(letter + (subscript_digits(k + 1) if number else "") + (f"[{t}]" if t else ""), letter,
                           ",".join(p for p in (number, t) if p))
        found.append((kind, node))
    return [(names[node], node) for _, node in found]


def wanted(node: Any, in_forward: int, everywhere: int) -> bool:
    """A vector used twice in the forward equations; a per-sample scalar used twice anywhere, not a reciprocal
    (its base is named instead: s, not 1/s) nor a transpose."""
    kind = type(node).__name__
    if kind == "Transpose":
        return False
    if tuple(node.shape) == (1, 1):
        negative = kind in ("HadamardPower", "MatPow") and node.args[1].is_number and node.args[1] < 0
        return everywhere >= 2 and not negative
    return in_forward >= 2 and kind not in ("MatMul", "Spread")  # a product W·x or c·v, a broadcast s·1: no


def occurrences(roots: list, names: dict) -> Counter:
    counts: Counter = Counter()
    for root in roots:
        counts.update(n for n in walk(root, names, top=True) if n is not root or root not in names)
    return counts


def size(node: Any, names: dict) -> int:
    return sum(1 for _ in walk(node, names, top=True))


def small_constants(exprs: list) -> list:
    """[(Name, value)]: the small numbers added to something (c·1, c·I), named ε (ε₁, ε₂, … when they differ)."""
    values: list = []
    seen: set = set()
    for expr in exprs:
        for node in walk(expr, {}):
            if id(node) in seen:
                continue
            seen.add(id(node))
            if type(node).__name__ == "MatMul":
                coefficient, factors = node.as_coeff_matrices()
                if len(factors) == 1 and type(factors[0]).__name__ in ("OneMatrix", "Identity") and \
                        coefficient.is_Float and 0 < float(coefficient) <= EPSILON_MAX:
                    if float(coefficient) not in values:
                        values.append(float(coefficient))
    several = len(values) > 1
    return [(Name("ε" + (subscript_digits(k) if several else ""), r"\varepsilon", str(k) if several else "",
                  kind="constant"), value) for k, value in enumerate(values, 1)]
