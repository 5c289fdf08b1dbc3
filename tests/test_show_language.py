"""The language's maths reads like a textbook (issue 14): every idiom of tests/test_language.py displays without
broadcast artefacts, per-sample scalars print simplified (one coefficient, one power), divisions as ⊘ and /s,
roots as √, repeated values and small constants are named (u, s, ε), and every LaTeX string typesets.

Only derivations are built here (no kernel is compiled)."""
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import sympy
from sympy import HadamardPower, HadamardProduct, MatrixSymbol, OneMatrix

import flux
from flux.maths.nodes import Apply, Spread, Total
from flux.show.layout import derivation_text
from flux.show.printers import expression_text
from tests.test_language import CASES, model_class
from tests.test_show import katex_node_path  # noqa: F401  (the session fixture: KaTeX for node)

DERIVATIONS = {name: model_class(name, forward).derivation for name, (forward, _) in CASES.items()}

ARTEFACTS = ["·1)", "·1 ", "⁻¹·1", "I)", "·I", "Spread", "ones(", "sqrt(", "abs(", "^(0.5)", "^(−0.5)", "⁻", " 1·",
             "(1·"]
LONG_NUMBER = re.compile(r"\d\.\d{6,}|\d{7,}")


@pytest.mark.parametrize("name", sorted(CASES))
def test_no_idiom_shows_a_broadcast_artefact(name):
    text = derivation_text(DERIVATIONS[name], wrt="all")
    assert not [a for a in ARTEFACTS if a in text], text
    assert not LONG_NUMBER.search(text), text
    latex = flux.latex(DERIVATIONS[name], wrt="all")
    assert not re.search(r"[)}a-zA-Z]\^\{-", latex), latex  # a reciprocal power, not 10^{-5}
    assert not [a for a in ["Spread", "ones(", "I}", " I ", r") \mathbf{1}", "sqrt(", r"\operatorname{abs}"] if a in latex], latex
    assert not LONG_NUMBER.search(latex), latex


EXPECTED = {  # idiom: lines of its derivation's text (after the title)
    "one_minus": ["y = 1 − tanh(x)", "∂L/∂x = −Δ ⊙ (1 − tanh(x)²)"],
    "plus_epsilon": ["y = x² + ε", "ε = 1e-5", "∂L/∂x = 2·Δ ⊙ x"],
    "softsign": ["y = x ⊘ (|x| + 1)", "∂L/∂x = Δ ⊙ (1 ⊘ (|x| + 1) − x ⊙ sign(x) ⊘ (|x| + 1)²)"],
    "number_over_vector": ["y = 2 ⊘ (x² + 1)", "∂L/∂x = −4·Δ ⊙ x ⊘ (x² + 1)²"],
    "cube_and_root": ["y = √(x² + 1) + x³", "∂L/∂x = Δ ⊙ (x ⊘ √(x² + 1) + 3·x²)"],
    "highway": ["u = σ(W·x + b)", "y = x ⊙ (1 − u) + u ⊙ tanh(x)", "δ = Δ ⊙ u ⊙ (1 − u) ⊙ (tanh(x) − x)"],
    "manual_softmax": ["y = exp(x)/Σ(exp(x))", "∂L/∂x = (Δ/Σ(exp(x)) − Σ(Δ ⊙ exp(x))/Σ(exp(x))²) ⊙ exp(x)"],
    "centred": ["y = x − Σ(x)", "∂L/∂x = Δ − Σ(Δ)"],
    "mean_centred": ["y = x − (1/n_x)·Σ(x)", "∂L/∂x = Δ − (1/n_x)·Σ(Δ)"],
    "one_over_root": ["s = √(Σ(x²) + 1)", "y = 1/s", "∂L/∂x = −Δ·y·x/s²"],
    "unit_vector": ["s = √(xᵀ·x)", "y = x/s", "∂L/∂x = Δ/s − Σ(Δ ⊙ x)·x/s³"],
    "rms_norm": ["s = √((1/n_x)·Σ(x²) + ε)", "y = x/s", "ε = 1e-5", "∂L/∂x = Δ/s − (1/n_x)·Σ(Δ ⊙ x)·x/s³"],
    "layer_norm": ["u = x − (1/n)·Σ(x)", "s = √((1/n)·Σ(u²) + ε)", "y = (u ⊙ b)/s", "ε = 1e-5",
                   "δ = −(1/n)·Σ(Δ ⊙ u ⊙ b)·u/s³", "∂L/∂b = (Δ ⊙ u)/s",
                   "∂L/∂x = δ + (Δ ⊙ b)/s − (1/n)·Σ(δ + (Δ ⊙ b)/s)"],
    "scalar_through_function": ["s = tanh((1/n_x)·Σ(x))", "y = s·x + exp(Σ(x))",
                                "∂L/∂x = exp(Σ(x))·Σ(Δ) + (1/n_x)·(1 − s²)·Σ(Δ ⊙ x) + s·Δ"],
    "dot_scaled": ["s = xᵀ·W·x", "y = s·x"],
    "power_of_two": ["y = exp(log(2)·x)", "∂L/∂x = log(2)·Δ ⊙ y"],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_idioms_read_like_a_textbook(name):
    lines = [line.strip() for line in derivation_text(DERIVATIONS[name]).splitlines()[1:]]
    assert [line for line in lines if line in EXPECTED[name]] == EXPECTED[name], "\n".join(lines)


def test_layer_norm_latex_reads_like_a_textbook():
    lines = flux.latex(DERIVATIONS["layer_norm"]).splitlines()
    assert lines[1:5] == [
        r"u &= x - \frac{1}{n} \mathbf{1}^{\top} x \\",
        r"s &= \sqrt{\frac{1}{n} \mathbf{1}^{\top} u^2 + \varepsilon} \\",
        r"y &= \frac{u \odot b}{s} \\",
        r"\varepsilon &= 10^{-5} \\"]
    assert r"\delta &= -\frac{1}{n} \frac{(\mathbf{1}^{\top} (\Delta \odot u \odot b)) u}{s^{3}} \\" in lines


m, n = sympy.symbols("m n", positive=True, integer=True)
z, y, Δ = MatrixSymbol("z", m, 1), MatrixSymbol("y", m, 1), MatrixSymbol("Δ", m, 1)
s, a = MatrixSymbol("s", 1, 1), MatrixSymbol("a", 1, 1)  # per-sample scalars
root = Apply("sqrt", a)

SCALARS = [  # (expression, LaTeX, text): 1×1 trees as one simplified scalar, quotients, roots
    (2 * HadamardProduct(sympy.Rational(1, 1) / n * HadamardProduct(-s, HadamardPower(root, -2)),
                         sympy.Rational(1, 2) * HadamardPower(root, -1)),
     r"-\frac{1}{n} \frac{s}{a^{3/2}}", "−(1/n)·s/a^(3/2)"),
    (HadamardProduct(Spread(HadamardPower(root, -1), m), z), r"\frac{z}{\sqrt{a}}", "z/√a"),
    (HadamardProduct(z, HadamardPower(y + OneMatrix(m, 1), -1)), r"z \oslash (y + \mathbf{1})", "z ⊘ (y + 1)"),
    (z - Spread(Total(z) / n, m), r"z - \frac{1}{n} \mathbf{1}^{\top} z", "z − (1/n)·Σ(z)"),
    (HadamardProduct(Δ, sympy.Float(0.5) * HadamardPower(z, sympy.Float(-0.5))), r"0.5 \Delta \oslash \sqrt{z}",
     "0.5·Δ ⊘ √z"),
    (Apply("abs", z), "|z|", "|z|"),
]


@pytest.mark.parametrize("expr, latex, text", SCALARS, ids=[t for _, _, t in SCALARS])
def test_per_sample_scalars_print_simplified(expr, latex, text):
    assert flux.latex(expr) == latex
    assert expression_text(expr) == text


def test_several_small_constants_and_taken_letters():
    class Two(flux.Model):
        def forward(self, x):
            return x / flux.sqrt(flux.mean(flux.hadamard(x, x)) + 1e-5) + 1e-6

    lines = [line.strip() for line in derivation_text(Two.derivation).splitlines()]
    assert lines[1:5] == ["s = √((1/n_x)·Σ(x²) + ε₁)", "y = x/s + ε₂", "ε₁ = 1e-5", "ε₂ = 1e-6"]

    class Taken(flux.Model):  # the user's s: the norm is r
        s = flux.param("n")

        def forward(self, x):
            return flux.hadamard(self.s, x / flux.norm(x)) + x - flux.mean(x)

    lines = [line.strip() for line in derivation_text(Taken.derivation).splitlines()]
    assert lines[1:3] == ["r = √(Σ(x²))", "y = (s ⊙ x)/r + x − (1/n)·Σ(x)"]


def test_display_leaves_the_derivation_untouched():
    derivation = DERIVATIONS["layer_norm"]
    before = (list(derivation.outputs), dict(derivation.gradients))
    derivation_text(derivation), flux.latex(derivation)
    assert (derivation.outputs, derivation.gradients) == before


def language_latex() -> list:
    return [flux.latex(d, wrt="all") for d in DERIVATIONS.values()] + [latex for _, latex, _ in SCALARS]


def test_language_latex_typesets_in_katex(katex_node_path):
    blocks = language_latex()
    result = subprocess.run(["node", str(Path(__file__).with_name("katex_render.js"))], input=json.dumps(blocks),
                            capture_output=True, text=True, check=True, timeout=120,
                            env={**os.environ, "NODE_PATH": katex_node_path})
    failures = [(block, error) for block, error in zip(blocks, json.loads(result.stdout)) if error]
    assert not failures, failures


def test_language_equations_typeset_in_matplotlib_mathtext():
    mathtext = pytest.importorskip("matplotlib.mathtext")
    parser = mathtext.MathTextParser("path")
    for block in language_latex():
        for line in block.splitlines():
            if "aligned" not in line:
                parser.parse("$" + line.rstrip(" \\").replace("&", "") + "$")
