r"""How one quantity is written, in LaTeX and in the user's own text: a leaf, a size, a sub-model's label.

- A parameter's short suffix is a subscript and a sub-model's path a superscript: Wxh → W_{xh}, bh → b_h,
  W1 → W_1, W_in → W_{in}, a.W → W^{(a)}, 0.W → W^{(0)} (in text: a.W, W⁽⁰⁾); other words print upright
  (\mathrm{weight}). A Greek letter, spelled or named, is itself: Δ_1 → \Delta_1, alpha → \alpha.
- A time index joins the subscript: h_{t-1} (text: hidden[t−1]).
- A size named by a word prints upright (\mathrm{in}, \mathrm{in}_{0}), not as a product of italic letters.
- A state spelled as a word prints as its initial (hidden → h) unless two states share it.

Below: an expression as the namer and the printers read it, where a named node is a leaf (`walk`).
"""
from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Name:
    r"""How one quantity is written: `text` in the user's own spelling (a.W, hidden[t−1]); `base`, `sub` and
    `sup` build its LaTeX (W_{xh}^{(a)}, h_{t-1})."""

    text: str
    base: str
    sub: str = ""
    sup: str = ""
    kind: str = "value"  # input, param, state, upstream, value, δ
    arguments: tuple = ()  # a function's: ℓ(logits, target) is defined with them and used as ℓ

    def latex(self, extra_sup: str = "") -> str:
        sup = self.sup + extra_sup
        return self.base + (f"_{script(self.sub)}" if self.sub else "") + (f"^{script(sup)}" if sup else "")


def leaf_name(dotted: str, kind: str, time: str = "", letter: str = "") -> Name:
    """The name of a symbol from its dotted spelling: "a.Wxh" → W_{xh}^{(a)}, with an optional time index."""
    path, _, identifier = dotted.rpartition(".")
    base, sub = (letter, "") if letter else identifier_latex(identifier)
    sup = "(" + ".".join(label_latex(p) for p in path.split(".")) + ")" if path else ""
    text = labelled_text(identifier, path) + (f"[{time.replace('-', '−')}]" if time else "")
    return Name(text, base, ",".join(p for p in (sub, time) if p), sup, kind)


def labelled_text(identifier: str, path: str) -> str:
    """a.W stays as written; a numbered layer's parameter reads like its LaTeX: 0.W → W⁽⁰⁾."""
    if path and path.replace(".", "").isdigit():
        return identifier + "⁽" + path.replace(".", "·").translate(SUPERSCRIPTS) + "⁾"
    return f"{path}.{identifier}" if path else identifier


def script(s: str) -> str:
    return s if len(s) == 1 else f"{{{s}}}"


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


def upright(word: str) -> str:
    return r"\mathrm{" + word.replace("_", r"\_") + "}"


def dimension_latex(dimension: str) -> str:
    r"""A size's name: h, n_{\mathrm{in}}, \mathrm{in}_{0} — a word (more than one letter) prints upright, not as a
    product of italic letters."""
    base, _, sub = dimension.partition("_")

    def part(word: str) -> str:
        return letter_latex(word) or (word if word.isdigit() else upright(word))

    return part(base) + (f"_{{{part(sub)}}}" if sub else "")


def label_latex(label: str) -> str:
    """A sub-model's name in a superscript: 0 and a as they are, longer words upright."""
    return label if label.isdigit() or len(label) == 1 else upright(label)


def state_letters(dotted_names: list[str]) -> dict[str, str]:
    """hidden → h, cell → c: a state spelled as a word prints as its initial, unless two states share it."""
    identifiers = [d.rpartition(".")[2] for d in dotted_names]
    initials = Counter(i[0] for i in identifiers if identifier_latex(i)[0].startswith(r"\mathrm"))
    return {d: i[0] for d, i in zip(dotted_names, identifiers)
            if identifier_latex(i)[0].startswith(r"\mathrm") and i[0].isalpha() and initials[i[0]] == 1}


def subscript_digits(k: int) -> str:
    return str(k).translate(str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉"))


SUPERSCRIPTS = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")


# ---- an expression as named: a named node is a leaf ----------------------------------------------------

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


def code_safe(text: str) -> str:
    """Text that can stand on one line of a comment or a docstring: every line break (any that str.splitlines
    knows) and other whitespace a space, other control characters dropped, a backslash as ∖, a double quote as '."""
    kept = []
    for character in text:
        if character.isspace() or len(f"a{character}b".splitlines()) > 1:
            kept.append(" ")
        elif unicodedata.category(character) not in ("Cc", "Cf", "Cs", "Co", "Cn"):
            kept.append({"\\": "∖", '"': "'"}.get(character, character))
    return "".join(kept)
