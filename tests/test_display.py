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
from flux import display, tanh, σ
from flux.display import derivation_latex, derivation_text, expression_text, model_text
from flux.printing import identifier_latex
from flux.nodes import Apply, LogSumExp, Softmax, Spread, Total
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
    (Apply("sqrt", z), r"\sqrt{z}", "sqrt(z)"),
    (Apply("relu", z), r"\operatorname{relu}(z)", "relu(z)"),
    (ZeroMatrix(m, 1), r"\mathbf{0}", "0"),
    (Total(z), r"\mathbf{1}^{\top} z", "Σ(z)"),
    (Spread(Total(z), m), r"(\mathbf{1}^{\top} z) \mathbf{1}", "Σ(z)·1"),
    (Softmax(z), r"\operatorname{softmax}(z)", "softmax(z)"),
    (LogSumExp(z), r"\operatorname{logsumexp}(z)", "logsumexp(z)"),
    (z[0:2, :], "z_{0:2}", "z[0:2]"),
    (MatrixSymbol("Δ_1", m, 1)[0:2, :], r"(\Delta_1)_{0:2}", "Δ_1[0:2]"),
    (BlockMatrix([[z], [y]]), r"\begin{bmatrix}z \\ y\end{bmatrix}", "[z; y]"),
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


# ---- every LaTeX string we emit typesets ---------------------------------------------------------------

MODELS = [Perceptron, TwoLayer, GatedCell, TwoTower, Recurrent, Softplus]


def emitted_latex() -> list[str]:
    chain = flux.Chain(flux.Dense(4, 8, σ), flux.Dense(8, 2, tanh))
    blocks = [flux.latex(cls) for cls in MODELS] + [flux.latex(cls.derivation) for cls in MODELS]
    blocks += [flux.latex(perceptron()), flux.latex(chain), flux.latex(chain.derivation)]
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
