"""Showing the maths: exact LaTeX and text for the seed's models, names, every node, and a real TeX renderer."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sympy
from sympy import BlockMatrix, HadamardPower, HadamardProduct, MatrixSymbol, OneMatrix, ZeroMatrix

import flux
from flux import tanh, σ
from flux.show.layout import derivation_latex, derivation_text, model_text
from flux.show.naming import lay_out
from flux.show.names import dimension_latex, identifier_latex
from flux.show.printers import LatexPrinter, expression_text
from flux.maths.nodes import Apply, LogSumExp, Softmax, Spread, Total
from models import GatedCell, Perceptron, TwoLayer, TwoTower, perceptron


class Recurrent(flux.Model):
    """The seed's Recurrent: h_t = σ(W_{xh} x_t + W_{hh} h_{t−1} + b_h), y_t = σ(W_{xy} x_t + W_{hy} h_t + b_y)."""

    Wxh = flux.param("h", "x")
    Whh = flux.param("h", "h")
    bh = flux.param("h")
    Wxy = flux.param("y", "x")
    Why = flux.param("y", "h")
    by = flux.param("y")
    hidden = flux.state("h")

    def forward(self, x):
        self.hidden = σ(self.Wxh * x + self.Whh * self.hidden + self.bh)
        return σ(self.Wxy * x + self.Why * self.hidden + self.by)


class Softplus(flux.Model):
    W = flux.param("m", "n")
    b = flux.param("m")

    def forward(self, x):
        return flux.softplus(self.W * x + self.b)


PERCEPTRON_LATEX = r"""\begin{aligned}
y &= \sigma(W x + b) \\
\Delta &= \frac{\partial L}{\partial y} \\
\frac{\partial L}{\partial W} &= (\Delta \odot y \odot (\mathbf{1} - y)) x^{\top} \\
\frac{\partial L}{\partial b} &= \Delta \odot y \odot (\mathbf{1} - y) \\
\frac{\partial L}{\partial x} &= W^{\top} (\Delta \odot y \odot (\mathbf{1} - y))
\end{aligned}"""

PERCEPTRON_TEXT = """Perceptron(W: m×n, b: m)
      y = σ(W·x + b)
      Δ = ∂L/∂y
  ∂L/∂W = (Δ ⊙ y ⊙ (1 − y))·xᵀ
  ∂L/∂b = Δ ⊙ y ⊙ (1 − y)
  ∂L/∂x = Wᵀ·(Δ ⊙ y ⊙ (1 − y))"""


def test_perceptron_derivation_latex_and_text():
    assert derivation_latex(Perceptron.derivation) == PERCEPTRON_LATEX
    assert derivation_text(Perceptron.derivation) == PERCEPTRON_TEXT
    assert repr(Perceptron.derivation) == PERCEPTRON_TEXT
    assert flux.latex(Perceptron.derivation) == PERCEPTRON_LATEX


def test_perceptron_class_and_instance():
    assert flux.latex(Perceptron) == (
        "\\begin{aligned}\ny &= \\sigma(W x + b) \\\\\n"
        "W &\\in \\mathbb{R}^{m \\times n},\\quad b \\in \\mathbb{R}^{m}\n\\end{aligned}")
    assert Perceptron._repr_latex_() == f"$\\displaystyle {flux.latex(Perceptron)}$"  # as IPython
    p = perceptron(m=3, n=5, dtype=np.float32)
    assert flux.latex(p) == (
        "\\begin{aligned}\ny &= \\sigma(W x + b) \\\\\n"
        "W &\\in \\mathbb{R}^{3 \\times 5},\\quad b \\in \\mathbb{R}^{3} \\\\\n"
        " & \\text{float32, 18 parameters}\n\\end{aligned}")
    assert p._repr_latex_() == f"$\\displaystyle {flux.latex(p)}$"
    assert repr(p) == model_text(p) == "Perceptron(W: 3×5, b: 3; float32; 18 parameters)\n  y = σ(W·x + b)"


def test_recurrent_shows_time_indices_and_names_the_repeated_delta():
    text = derivation_text(Recurrent.derivation)
    assert "hidden[t] = σ(Wxh·x[t] + Whh·hidden[t−1] + bh)" in text
    latex = derivation_latex(Recurrent.derivation)
    assert r"h_t &= \sigma(W_{xh} x_t + W_{hh} h_{t-1} + b_h) \\" in latex
    assert r"y_t &= \sigma(W_{xy} x_t + W_{hy} h_t + b_y) \\" in latex
    assert (r"\delta_t &= (\Delta_{h,t} + W_{hy}^{\top} (\Delta_t \odot y_t \odot (\mathbf{1} - y_t))) "
            r"\odot h_t \odot (\mathbf{1} - h_t) \\") in latex
    assert r"\frac{\partial L}{\partial W_{hh}} &= \delta_t h_{t-1}^{\top} \\" in latex
    assert r"\frac{\partial L}{\partial h_{t-1}} &= W_{hh}^{\top} \delta_t" in latex
    assert latex.index("h_t &=") < latex.index("y_t &=")  # y_t uses h_t


def test_composites_show_each_submodel_in_order():
    assert flux.latex(TwoTower.derivation).startswith(
        "\\begin{aligned}\ny^{(a)} &= \\sigma(W^{(a)} x + b^{(a)}) \\\\\n"
        "y^{(b)} &= \\sigma(W^{(b)} x + b^{(b)}) \\\\\ny &= y^{(a)} + y^{(b)} \\\\\n")
    rng = np.random.default_rng(0)
    tower = TwoTower(a=Perceptron(W=rng.standard_normal((2, 3)), b=np.zeros(2)),
                     b=Perceptron(W=rng.standard_normal((2, 3)), b=np.zeros(2)))
    assert repr(tower).splitlines()[1:] == ["  a.y = σ(a.W·x + a.b)", "  b.y = σ(b.W·x + b.b)", "    y = a.y + b.y"]
    chain = flux.Chain(flux.Dense(4, 8, σ), flux.Dense(8, 2, tanh))
    assert flux.latex(chain).splitlines()[1:3] == [
        r"y^{(0)} &= \sigma(W^{(0)} x + b^{(0)}) \\", r"y &= \tanh(W^{(1)} y^{(0)} + b^{(1)}) \\"]
    assert "∂L/∂W⁽⁰⁾ = δ·xᵀ" in derivation_text(chain.derivation)


def test_activation_argument_is_named_only_when_a_gradient_uses_it():
    text = derivation_text(Softplus.derivation)
    assert "      z = W·x + b\n      y = softplus(z)\n" in text
    assert "∂L/∂b = Δ ⊙ σ(z)" in text
    assert "z =" not in derivation_text(Perceptron.derivation)


@pytest.mark.parametrize("identifier, expected", [
    ("W", ("W", "")), ("Wxh", ("W", "xh")), ("bh", ("b", "h")), ("W1", ("W", "1")), ("b12", ("b", "12")),
    ("Wout", ("W", "out")), ("W_in", ("W", "in")), ("Δ", (r"\Delta", "")), ("Δ_1", (r"\Delta", "1")),
    ("gamma", (r"\gamma", "")), ("ε", (r"\varepsilon", "")), ("weight", (r"\mathrm{weight}", "")),
    ("out", (r"\mathrm{out}", "")), ("x", ("x", "")),
])
def test_identifiers(identifier, expected):
    assert identifier_latex(identifier) == expected


m, n = sympy.symbols("m n", positive=True, integer=True)
W, x, y, z, Δ = MatrixSymbol("W", m, n), MatrixSymbol("x", n, 1), MatrixSymbol("y", m, 1), \
    MatrixSymbol("z", m, 1), MatrixSymbol("Δ", m, 1)
A = MatrixSymbol("a.W", m, n)
s = MatrixSymbol("s", 1, 1)  # a per-sample scalar

NODES = [  # (expression, LaTeX, text)
    (W * x + MatrixSymbol("b", m, 1), "W x + b", "W·x + b"),
    (OneMatrix(m, 1) - y, r"\mathbf{1} - y", "1 − y"),
    (-y, "-y", "−y"),
    (2 * W.T * Δ, r"2 W^{\top} \Delta", "2·Wᵀ·Δ"),
    (sympy.Rational(1, 2) * y, r"\frac{1}{2} y", "(1/2)·y"),
    (HadamardProduct(OneMatrix(m, 1) - y, y, Δ), r"\Delta \odot y \odot (\mathbf{1} - y)", "Δ ⊙ y ⊙ (1 − y)"),
    (HadamardProduct(W * x, y), r"(W x) \odot y", "(W·x) ⊙ y"),
    (HadamardPower(y, 2), "y^2", "y²"),
    (HadamardPower(W, 2), r"W^{\circ 2}", "W∘²"),
    (sympy.Transpose(W * x), r"(W x)^{\top}", "(W·x)ᵀ"),
    (A.T * Δ, r"W^{(a)\top} \Delta", "a.Wᵀ·Δ"),
    (Apply("σ", z), r"\sigma(z)", "σ(z)"),
    (Apply("tanh", W * x), r"\tanh(W x)", "tanh(W·x)"),
    (Apply("sqrt", z), r"\sqrt{z}", "√z"),
    (Apply("relu", z), r"\operatorname{relu}(z)", "relu(z)"),
    (ZeroMatrix(m, 1), r"\mathbf{0}", "0"),
    (Total(z), r"\mathbf{1}^{\top} z", "Σ(z)"),
    (Spread(Total(z), m), r"(\mathbf{1}^{\top} z) \mathbf{1}", "Σ(z)·1"),
    (Softmax(z), r"\operatorname{softmax}(z)", "softmax(z)"),
    (LogSumExp(z), r"\operatorname{logsumexp}(z)", "logsumexp(z)"),
    (z[0:2, :], "z_{0:2}", "z[0:2]"),
    (MatrixSymbol("Δ_1", m, 1)[0:2, :], r"(\Delta_1)_{0:2}", "Δ_1[0:2]"),
    (BlockMatrix([[z], [y]]), r"\begin{bmatrix}z \\ y\end{bmatrix}", "[z; y]"),
    # issue 14: a broadcast s·1 ⊙ v is the scalar multiple s·v, one coefficient, a scalar its own transpose
    (HadamardProduct(Spread(-s, m), z), r"-s z", "−s·z"),
    (2 * HadamardProduct(Spread(s / n, m), z - y), r"\frac{2}{n} s (z - y)", "(2/n)·s·(z − y)"),
    (HadamardProduct(Spread(s * Total(z).T, m), Softmax(z)) - HadamardProduct(Spread(s, m), y),
     r"s (\mathbf{1}^{\top} z) \operatorname{softmax}(z) - s y", "s·Σ(z)·softmax(z) − s·y"),
    (Spread(-LogSumExp(z).T * s, m), r"-\operatorname{logsumexp}(z) s \mathbf{1}", "−logsumexp(z)·s·1"),
    (HadamardProduct(-z - y, Δ) + y, r"y - \Delta \odot (y + z)", "y − Δ ⊙ (y + z)"),  # −(a + b), not (−a − b)
    # numbers: the shortest form that reads back as the same float
    (HadamardPower(z + sympy.Float(1e-5) * OneMatrix(m, 1), sympy.Float(-0.5)),
     r"\mathbf{1} \oslash \sqrt{z + 10^{-5}}", "1 ⊘ √(z + 1e-5)"),
    (sympy.Float(0.5) * z, "0.5 z", "0.5·z"),
    (sympy.Float(-100.0) * z, "-100 z", "−100·z"),
    (sympy.Float(1.5e-7) * z, r"1.5 \cdot 10^{-7} z", "1.5e-7·z"),
]


@pytest.mark.parametrize("expr, latex, text", NODES, ids=[t for _, _, t in NODES])
def test_every_node_prints_as_textbook_maths(expr, latex, text):
    assert flux.latex(expr) == latex
    assert expression_text(expr) == text


def test_expression_text_uses_given_names_for_generated_code():
    inner = W * x + MatrixSymbol("b", m, 1)
    assert expression_text(HadamardProduct(Apply("σ", inner), Δ), {inner: "z0"}) == "Δ ⊙ σ(z0)"


def test_untraceable_classes_render_as_text_in_notebooks():
    assert flux.Model._repr_latex_() is None
    with pytest.raises(TypeError, match="flux.latex takes"):
        flux.latex(3)


def test_import_flux_does_not_import_sympy():
    code = "import sys, flux; assert 'sympy' not in sys.modules, 'flux imported sympy'"
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, env=env)


# ---- recurrent models read like a textbook: gates, states, sizes ---------------------------------------

LSTM_EQUATIONS = [
    r"i_t &= \sigma(W_i x_t + U_i h_{t-1} + b_i) \\",
    r"f_t &= \sigma(W_f x_t + U_f h_{t-1} + b_f) \\",
    r"o_t &= \sigma(W_o x_t + U_o h_{t-1} + b_o) \\",
    r"g_t &= \tanh(W_g x_t + U_g h_{t-1} + b_g) \\",
    r"c_t &= f_t \odot c_{t-1} + i_t \odot g_t \\",
    r"h_t &= o_t \odot \tanh(c_t) \\",
]


def test_lstm_names_its_gates_like_a_textbook():
    assert flux.latex(flux.LSTM).splitlines()[1:7] == LSTM_EQUATIONS
    text = derivation_text(flux.LSTM.derivation).splitlines()
    assert [line.strip() for line in text[1:8]] == [
        "i[t] = σ(Wi·x[t] + Ui·h[t−1] + bi)", "f[t] = σ(Wf·x[t] + Uf·h[t−1] + bf)",
        "o[t] = σ(Wo·x[t] + Uo·h[t−1] + bo)", "g[t] = tanh(Wg·x[t] + Ug·h[t−1] + bg)",
        "c[t] = f[t] ⊙ c[t−1] + i[t] ⊙ g[t]", "h[t] = o[t] ⊙ tanh(c[t])",
        "Δ[t] = ∂L/∂h[t] from the output, Δ_h[t] = ∂L/∂h[t] from step t+1, Δ_c[t] = ∂L/∂c[t] from step t+1"]
    assert "y[t]" not in "\n".join(text)  # the output is the state h_t, and Δ_h comes from step t+1 as ∂L/∂h_t
    assert " δ₂[t] = (Δ[t] + Δ_h[t]) ⊙ o[t] ⊙ (1 − tanh(c[t])²) + Δ_c[t]\n" in "\n".join(text)  # ∂L/∂c_t
    assert "∂L/∂c[t−1] = δ₂[t] ⊙ f[t]" in text[-1]


def test_gru_names_its_gates_and_candidate():
    assert flux.latex(flux.GRU).splitlines()[1:5] == [
        r"r_t &= \sigma(W_r x_t + U_r h_{t-1} + b_r) \\", r"z_t &= \sigma(W_z x_t + U_z h_{t-1} + b_z) \\",
        r"n_t &= \tanh(W_n x_t + U_n (r_t \odot h_{t-1}) + b_n) \\",
        r"h_t &= h_{t-1} + z_t \odot n_t - z_t \odot h_{t-1} \\"]


class OneGroup(flux.Model):
    """Parameters with one suffix only: nothing to tell apart, so no gate name."""

    Wh = flux.param("h", "n")
    bh = flux.param("h")
    V = flux.param("m", "h")

    def forward(self, x):
        return self.V * tanh(self.Wh * x + self.bh)


def test_gates_are_a_rule_over_the_expression_not_over_layer_classes():
    assert derivation_text(GatedCell.derivation).splitlines()[1:4] == [
        "       g = σ(Wg·x + bg)", "       c = tanh(Wc·x + bc)", "       y = x + g ⊙ c − g ⊙ x"]
    assert derivation_text(OneGroup.derivation).splitlines()[1].strip() == "y = V·tanh(Wh·x + bh)"
    assert "hidden[t] = σ(Wxh·x[t] + Whh·hidden[t−1] + bh)" in derivation_text(Recurrent.derivation)  # xh, hh: words


def test_gates_and_kernels_are_untouched_by_naming():
    """Names are the display's only: the derivation (and so every kernel) still holds the plain expressions."""
    derivation = flux.LSTM.derivation
    before = (list(derivation.outputs), list(derivation.states), dict(derivation.gradients))
    lay_out(derivation)
    assert (derivation.outputs, derivation.states, derivation.gradients) == before
    assert "σ(Ui·h + Wi·x + bi)" in expression_text(derivation.states[1][2])  # c: gates inline, no i[t]


def test_recurrent_submodels_show_their_state_not_a_mislabelled_y():
    chain = flux.Chain(flux.LSTM(3, 4, rng=0), flux.Dense(4, 1))
    latex = flux.latex(chain)
    assert [line.split(" &")[0] for line in latex.splitlines()[1:8]] == [
        "i_t^{(0)}", "f_t^{(0)}", "o_t^{(0)}", "g_t^{(0)}", "c_t^{(0)}", "h_t^{(0)}", "y_t"]
    assert r"h_t^{(0)} &= o_t^{(0)} \odot \tanh(c_t^{(0)}) \\" in latex
    assert r"y_t &= W^{(1)} h_t^{(0)} + b^{(1)} \\" in latex
    assert "y^{(0)}" not in latex and "y_t^{(0)}" not in latex
    assert "Δ_h⁽⁰⁾[t] = ∂L/∂h⁽⁰⁾[t] from step t+1" in derivation_text(chain.derivation)
    below = flux.Chain(flux.Dense(3, 4), flux.GRU(4, 4, rng=0))  # a layer's value feeds the gates as their input
    assert repr(below).splitlines()[1:3] == ["  y⁽⁰⁾[t] = W⁽⁰⁾·x[t] + b⁽⁰⁾",
                                             "  r⁽¹⁾[t] = σ(Wr⁽¹⁾·y⁽⁰⁾[t] + Ur⁽¹⁾·h⁽¹⁾[t−1] + br⁽¹⁾)"]


def test_a_declared_matrix_keeps_its_two_dimensions_whatever_its_size():
    lstm = flux.LSTM(1, 16, rng=0)
    latex = flux.latex(lstm)
    assert r"W_i &\in \mathbb{R}^{16 \times 1},\quad U_i \in \mathbb{R}^{16 \times 16},\quad b_i \in \mathbb{R}^{16}" \
        in latex
    chain = flux.latex(flux.Chain(flux.LSTM(1, 16, rng=0), flux.Dense(16, 1)))
    assert r"W_i^{(0)} &\in \mathbb{R}^{16 \times 1}," in chain
    assert r"W^{(1)} &\in \mathbb{R}^{1 \times 16},\quad b^{(1)} \in \mathbb{R}^{1} \\" in chain


@pytest.mark.parametrize("dimension, expected", [
    ("h", "h"), ("in", r"\mathrm{in}"), ("out", r"\mathrm{out}"), ("in_0", r"\mathrm{in}_{0}"), ("h_x", "h_{x}"),
    ("n_prediction", r"n_{\mathrm{prediction}}"), ("alpha", r"\alpha"),
])
def test_dimension_names_longer_than_a_letter_print_upright(dimension, expected):
    assert dimension_latex(dimension) == expected


def test_sizes_in_latex_use_upright_words():
    assert r"W_i &\in \mathbb{R}^{h \times \mathrm{in}}" in flux.latex(flux.LSTM)
    rows, cols = sympy.symbols("in_0 h_x", positive=True, integer=True)
    assert LatexPrinter().domain((rows, cols)) == r"\mathbb{R}^{\mathrm{in}_{0} \times h_{x}}"
    assert LatexPrinter().domain((2 * rows, 1)) == r"\mathbb{R}^{2 \mathrm{in}_{0}}"


def test_losses_read_as_l_of_their_inputs():
    assert flux.latex(flux.logitcrossentropy) == (
        "\\begin{aligned}\n\\ell(\\mathrm{logits}, \\mathrm{target}) &= \\operatorname{logsumexp}(\\mathrm{logits}) "
        "(\\mathbf{1}^{\\top} \\mathrm{target}) - \\mathbf{1}^{\\top} (\\mathrm{logits} \\odot \\mathrm{target})\n"
        "\\end{aligned}")  # no "float32, 0 parameters"
    text = derivation_text(flux.logitcrossentropy.derivation).splitlines()
    assert text[:3] == ["LogitCrossEntropy", "  ℓ(logits, target) = logsumexp(logits)·Σ(target) − Σ(logits ⊙ target)",
                        "                  Δ = ∂L/∂ℓ"]
    assert model_text(flux.mse).startswith("MSE\n  ℓ(prediction, target) = ")  # no dtype: it follows its input
    assert "ℓ" not in derivation_text(Perceptron.derivation)


LOSSES = [flux.mse, flux.crossentropy, flux.logitcrossentropy, flux.binarycrossentropy, flux.logitbinarycrossentropy]

LOSS_GRADIENTS = {  # issue 14: no broadcast artefacts, one coefficient, the prediction's gradient only
    "mse": "∂L/∂prediction = (2/n_prediction)·Δ·(prediction − target)",
    "crossentropy": "∂L/∂prediction = −Δ·([prediction > e⁻¹⁰⁰]/prediction) ⊙ target",
    "logitcrossentropy": "∂L/∂logits = Δ·(Σ(target)·softmax(logits) − target)",
    "binarycrossentropy": "∂L/∂prediction = (1/n_prediction)·Δ·(([1 − prediction > e⁻¹⁰⁰]/(1 − prediction)) ⊙ "
                          "(1 − target) − ([prediction > e⁻¹⁰⁰]/prediction) ⊙ target)",
    "logitbinarycrossentropy": "∂L/∂logits = (1/n_logits)·Δ·(σ(logits) − target)",
}


@pytest.mark.parametrize("name", LOSS_GRADIENTS)
def test_losses_gradients_read_like_a_textbook(name):
    lines = [line.strip() for line in derivation_text(getattr(flux, name).derivation).splitlines()]
    assert lines[-1] == LOSS_GRADIENTS[name]
    assert sum(line.startswith("∂L/∂") for line in lines) == 1  # ∂L/∂target only on request
    assert "·1)" not in "\n".join(lines) and "((" not in lines[-1].replace("(([", "([")  # ([…]/p) is clampedlog′


def test_loss_latex_has_one_coefficient_and_no_broadcast():
    assert flux.latex(flux.mse.derivation).splitlines()[-2] == (
        r"\frac{\partial L}{\partial \mathrm{prediction}} &= \frac{2}{n_{\mathrm{prediction}}} \Delta "
        r"(\mathrm{prediction} - \mathrm{target})")
    assert flux.latex(flux.logitcrossentropy.derivation).splitlines()[-2] == (
        r"\frac{\partial L}{\partial \mathrm{logits}} &= \Delta ((\mathbf{1}^{\top} \mathrm{target}) "
        r"\operatorname{softmax}(\mathrm{logits}) - \mathrm{target})")


def test_a_negated_sum_in_a_hadamard_product_reads_with_one_minus():
    text = derivation_text(flux.GRU.derivation)
    assert "δ₁[t] = (Δ[t] + Δ_h[t]) ⊙ z[t] ⊙ (1 − z[t]) ⊙ (n[t] − h[t−1])" in text  # the upstream factored out
    assert text.splitlines()[-1].endswith(" + δ₂[t] ⊙ r[t] − (Δ[t] + Δ_h[t]) ⊙ z[t]") and "(−Δ" not in text


def test_the_targets_gradient_is_shown_on_request():
    derivation = flux.logitcrossentropy.derivation
    lines = derivation_text(derivation, wrt="all").splitlines()
    assert lines[-2:] == ["         ∂L/∂logits = Δ·(Σ(target)·softmax(logits) − target)",
                          "         ∂L/∂target = Δ·(logsumexp(logits) − logits)"]
    assert derivation_text(derivation, wrt="target").splitlines()[-1].strip().startswith("∂L/∂target = ")
    assert r"\partial \mathrm{target}}" in flux.latex(derivation, wrt="all")
    assert r"\partial \mathrm{target}}" not in flux.latex(derivation)
    assert derivation_text(flux.mse.derivation, wrt="all").splitlines()[-1].strip() == \
        "∂L/∂target = −(2/n_prediction)·Δ·(prediction − target)"
    with pytest.raises(ValueError, match="wrt='bias'.*'logits', 'target'"):
        derivation_text(derivation, wrt="bias")
    assert derivation_text(Perceptron.derivation) == derivation_text(Perceptron.derivation, wrt="all")


SYMPY_PRINTS = [  # (expression, its str): SymPy's own printers on flux's nodes
    (Apply("σ", W * x), "σ(W*x)"),
    (Total(z), "total(z)"),
    (Spread(Total(z), m), "total(z)*ones(m, 1)"),
    (Softmax(z), "softmax(z)"),
    (LogSumExp(z), "logsumexp(z)"),
    (Apply("tanh", z) + Spread(LogSumExp(z), m), "tanh(z) + logsumexp(z)*ones(m, 1)"),
]


@pytest.mark.parametrize("expr, text", SYMPY_PRINTS, ids=[t for _, t in SYMPY_PRINTS])
def test_sympys_own_printers_show_flux_nodes(expr, text):
    assert str(expr) == text
    assert "Apply" not in sympy.latex(expr) and "Spread" not in sympy.latex(expr)
    assert "Apply" not in sympy.pretty(expr) and "Spread" not in sympy.pretty(expr)


def test_sympy_prints_a_derived_gradient_sensibly():
    gradient = flux.logitcrossentropy.derivation.gradients["logits"]
    assert str(gradient) == ("HadamardProduct(target, (-Δ)*ones(n_logits, 1)) + "
                             "HadamardProduct(softmax(logits), (Δ*total(target).T)*ones(n_logits, 1))")
    assert sympy.latex(Apply("σ", W * x)) == r"\sigma\left(W x\right)"
    assert sympy.latex(Total(z)) == r"\mathbf{1}^{\top} z"
    assert sympy.pretty(Apply("σ", z)) == "σ(z)"
    assert sympy.pretty(Spread(Total(z), m)) == "(Σ(z))⋅1"


def test_code_comments_and_docstrings_stay_one_safe_line():
    nasty = MatrixSymbol('a\nb\r\u2028c\x0c"""\\N{x}\x00', m, 1)
    text = expression_text(nasty + y)
    assert len(f"# {text}".splitlines()) == 1 and "\\" not in text and '"' not in text and "\x00" not in text
    compile(f'def f():\n    """{text}"""\n    return 1  # {text}\n', "<generated>", "exec")


@pytest.mark.parametrize("model", [Perceptron, flux.LSTM, flux.GRU, flux.Recurrent, flux.logitcrossentropy],
                         ids=lambda m: getattr(m, "__name__", type(m).__name__))
def test_generated_kernels_have_one_line_docstrings(model):
    import ast

    from flux.generate import generate_module_source

    source = generate_module_source(model.derivation, np.float32, "test")
    tree = ast.parse(source)
    functions = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)]
    docstrings = [ast.get_docstring(f, clean=False) for f in functions]
    assert any(docstrings)
    assert all("\n" not in doc for doc in docstrings if doc), docstrings


# ---- every LaTeX string we emit typesets ---------------------------------------------------------------

MODELS = [Perceptron, TwoLayer, GatedCell, TwoTower, Recurrent, Softplus]


RECURRENT_CLASSES = [flux.LSTM, flux.GRU, flux.Recurrent]


def emitted_latex() -> list[str]:
    """Issue 6: the rendered LaTeX of Perceptron, Dense, Chain, Recurrent, LSTM and GRU (classes, instances,
    derivations), losses, and every node."""
    chain = flux.Chain(flux.Dense(4, 8, σ), flux.Dense(8, 2, tanh))
    instances = [perceptron(), flux.Dense(3, 2), chain, flux.LSTM(3, 4), flux.GRU(3, 4), flux.Recurrent(3, 4, 2),
                 flux.LSTM(1, 16), flux.Chain(flux.LSTM(3, 4), flux.Dense(4, 1)), flux.Chain(flux.Dense(3, 4), flux.GRU(4, 4)),
                 *LOSSES]
    classes = MODELS + RECURRENT_CLASSES + [OneGroup]
    blocks = [flux.latex(cls) for cls in classes] + [flux.latex(cls.derivation) for cls in classes]
    blocks += [flux.latex(model) for model in instances] + [flux.latex(model.derivation) for model in instances]
    blocks += [flux.latex(loss.derivation, wrt="all") for loss in LOSSES]
    blocks += [sympy.latex(expr) for expr, _ in SYMPY_PRINTS]
    return blocks + [latex for _, latex, _ in NODES]


def test_latex_is_ascii_so_every_renderer_reads_it():
    for block in emitted_latex():
        assert block.isascii(), block


@pytest.fixture(scope="session")
def katex_node_path() -> str:
    """A KaTeX install for node, made on demand in a cache directory (tests skip when it cannot be had)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed to typeset with KaTeX")
    root = Path(os.environ.get("FLUX_KATEX_DIR", Path.home() / ".cache" / "flux-tests" / "katex"))
    if not (root / "node_modules" / "katex").is_dir():
        try:
            subprocess.run([npm, "install", "--prefix", str(root), "katex", "--no-audit", "--no-fund"],
                           check=True, capture_output=True, timeout=300)
        except (subprocess.SubprocessError, OSError) as error:
            pytest.skip(f"could not install KaTeX with npm into {root}: {error}")
    return str(root / "node_modules")


def test_every_latex_string_typesets_in_katex(katex_node_path):
    blocks = emitted_latex()
    result = subprocess.run(["node", str(Path(__file__).with_name("katex_render.js"))], input=json.dumps(blocks),
                            capture_output=True, text=True, check=True, timeout=120,
                            env={**os.environ, "NODE_PATH": katex_node_path})
    failures = [(block, error) for block, error in zip(blocks, json.loads(result.stdout)) if error]
    assert not failures, failures


def test_single_equations_typeset_in_matplotlib_mathtext():
    mathtext = pytest.importorskip("matplotlib.mathtext")
    parser = mathtext.MathTextParser("path")
    equations = [line.rstrip(" \\").replace("&", "") for block in emitted_latex()
                 for line in block.splitlines() if "aligned" not in line and r"\begin" not in line]
    for equation in equations:
        parser.parse(f"${equation}$")


def test_jupyter_renders_classes_and_instances_as_latex():
    """Through IPython's own formatter: a class's `_repr_latex_` must be a method bound to the class."""
    formatters = pytest.importorskip("IPython.core.formatters")
    formatter = formatters.DisplayFormatter()
    shown_class = formatter.format(Perceptron)[0]
    assert shown_class["text/latex"].startswith("$\\displaystyle \\begin{aligned}")
    assert "\\sigma(W x + b)" in shown_class["text/latex"]
    instance = Perceptron(W=np.zeros((2, 3)), b=np.zeros(2))
    assert "\\mathbb{R}^{2 \\times 3}" in formatter.format(instance)[0]["text/latex"]
