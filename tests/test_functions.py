"""Elementwise functions written as SymPy maths: the built-ins (erf, gelu, silu/swish, elu, leakyrelu, softsign) and
a user's own (`flux.elementwise`, `x.applyfunc`): values, derived gradients, kernels keyed by their definition."""
import math

import numpy as np
import pytest
import scipy.special
import sympy

import flux
from flux import Dense
from tests.test_show import katex_node_path  # noqa: F401  (the session fixture: KaTeX for node)

RNG = np.random.default_rng(14)
X = RNG.normal(size=(5, 3)) * 1.5

REFERENCES = {
    "erf": scipy.special.erf,
    "gelu": lambda x: x * (1 + scipy.special.erf(x / math.sqrt(2))) / 2,
    "silu": lambda x: x * scipy.special.expit(x),
    "swish": lambda x: x * scipy.special.expit(x),
    "elu": lambda x: np.where(x < 0, np.expm1(x), x),
    "leakyrelu": lambda x: np.where(x < 0, 0.01 * x, x),
    "softsign": lambda x: x / (1 + np.abs(x)),
}


def away_from_kinks(x):
    """Values at least 1e-3 from 0, where elu, leakyrelu and softsign have kinks (finite differences straddle them)."""
    return np.where(np.abs(x) < 1e-3, 0.5, x)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_built_in_values_match_references(name):
    function = getattr(flux, name)
    np.testing.assert_allclose(function(X), REFERENCES[name](X), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(function(X.astype(np.float32)), REFERENCES[name](X), rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_built_ins_gradcheck_in_dense_and_on_arrays(name):
    dense = Dense(3, 4, name, dtype=np.float64)  # accepted by name, as Keras does
    assert flux.gradcheck(dense, away_from_kinks(X)) < 1e-6
    assert flux.gradcheck(getattr(flux, name), away_from_kinks(X)) < 1e-6


def test_built_ins_have_their_equation_and_display_by_name():
    assert flux.gelu.equation.startswith("gelu(z) = ")
    assert "erf" in flux.gelu.equation
    assert r"\operatorname{gelu}" in flux.latex(Dense(3, 2, flux.gelu))
    assert "gelu(W·x + b)" in str(Dense(3, 2, flux.gelu).derivation) or "gelu(z)" in str(Dense(3, 2, flux.gelu).derivation)


def test_gelu_matches_torch():
    torch = pytest.importorskip("torch")
    expected = torch.nn.functional.gelu(torch.tensor(X)).numpy()
    np.testing.assert_allclose(flux.gelu(X), expected, rtol=1e-12, atol=1e-14)


# ---- a user's own functions ------------------------------------------------------------------------------------

USER_FUNCTIONS = {
    "bump": (lambda z: sympy.Piecewise((z**2 / 2, z < 1), (z - sympy.Rational(1, 2), True)),
             lambda x: np.where(x < 1, x**2 / 2, x - 0.5)),
    "erfsquare": (lambda z: sympy.erf(z) ** 2 + z, lambda x: scipy.special.erf(x) ** 2 + x),
    "halfmax": (lambda z: sympy.Max(z, z / 2) + sympy.Min(z, 0) ** 2, lambda x: np.maximum(x, x / 2) + np.minimum(x, 0) ** 2),
    "arctan": (lambda z: 2 * sympy.atan(z) / sympy.pi, lambda x: 2 * np.arctan(x) / np.pi),
    "wave": (lambda z: sympy.sin(sympy.pi * z) * sympy.sqrt(2) + sympy.E * z, lambda x: np.sin(np.pi * x) * np.sqrt(2) + np.e * x),
    "soft": (lambda z: sympy.log(1 + z**2), lambda x: np.log1p(x**2)),
}


def away_from_user_kinks(x):
    return np.where((np.abs(x) < 1e-3) | (np.abs(x - 1) < 1e-3), 0.5, x)


@pytest.mark.parametrize("name", sorted(USER_FUNCTIONS))
def test_user_functions_compute_and_gradcheck(name):
    maths, reference = USER_FUNCTIONS[name]
    function = flux.elementwise(name, maths)
    x = away_from_user_kinks(X)
    np.testing.assert_allclose(function(x), reference(x), rtol=1e-12, atol=1e-14)
    assert flux.gradcheck(function, x) < 1e-6
    assert flux.gradcheck(Dense(3, 2, function, dtype=np.float64), x) < 1e-6


def test_the_decorator_forms():
    @flux.elementwise
    def cube(z):
        return z**3

    @flux.elementwise("shifted")
    def anything(z):
        return z + 1

    assert repr(cube) == "cube" and repr(anything) == "shifted"
    np.testing.assert_allclose(cube(X), X**3)
    np.testing.assert_allclose(anything(X), X + 1)
    assert cube.equation == "cube(z) = z**3"


def test_functions_with_one_name_and_different_maths_never_share_a_kernel():
    """The kernel's identity is the traced maths: a user function is keyed by its name AND its definition."""
    square = flux.elementwise("mine", lambda z: z**2)
    cube = flux.elementwise("mine", lambda z: z**3)
    np.testing.assert_allclose(square(X), X**2)
    np.testing.assert_allclose(cube(X), X**3)
    np.testing.assert_allclose(square(X), X**2)  # and back again

    W = RNG.normal(size=(2, 3))
    first, second = dense(W, square), dense(W, cube)
    np.testing.assert_allclose(first(X), (X @ W.T) ** 2)
    np.testing.assert_allclose(second(X), (X @ W.T) ** 3)

    # redefined in the same process, as in a notebook: the new maths, not the old kernel
    square = flux.elementwise("mine", lambda z: z**2 + 1)
    np.testing.assert_allclose(square(X), X**2 + 1)
    np.testing.assert_allclose(dense(W, square)(X), (X @ W.T) ** 2 + 1)


def dense(W, activation):
    model = Dense(W.shape[1], W.shape[0], activation, dtype=np.float64)
    model.params["W"], model.params["b"] = W, np.zeros(W.shape[0])
    return model


def test_the_same_definition_shares_its_kernel():
    from flux.pipeline import maths_of

    first = flux.elementwise("twice", lambda z: 2 * z)
    second = flux.elementwise("twice", lambda z: z * 2)
    other = flux.elementwise("twice", lambda z: 3 * z)
    assert maths_of(first).identity == maths_of(second).identity != maths_of(other).identity


def test_a_function_with_no_numba_form_is_refused_when_defined():
    with pytest.raises(TypeError, match="besselish.*besselj"):
        flux.elementwise("besselish", lambda z: sympy.besselj(0, z))
    with pytest.raises(TypeError, match="mystery"):
        flux.elementwise("mystery", lambda z: sympy.Function("g")(z))
    with pytest.raises(TypeError, match="scalar"):
        flux.elementwise("constant", lambda z: sympy.Matrix([z]))


class Applied(flux.Model):
    W = flux.param("m", "n")

    def forward(self, x):
        return (self.W * x).applyfunc(sympy.erf) + (self.W * x).applyfunc(lambda z: z * sympy.atan(z))


def test_applyfunc_inside_forward():
    model = Applied(W=RNG.normal(size=(2, 3)), dtype=np.float64)
    z = X @ model.params["W"].T
    np.testing.assert_allclose(model(X), scipy.special.erf(z) + z * np.arctan(z), rtol=1e-12)
    assert flux.gradcheck(model, X) < 1e-6
    assert r"\operatorname{erf}" in flux.latex(Applied)


def test_built_ins_state_their_equation():
    for name in ["erf", "gelu", "silu", "swish", "elu", "leakyrelu", "softsign"]:
        assert getattr(flux, name).__doc__.startswith(f"{name}(z) =") or name == "swish"


def function_latex() -> list[str]:
    """The LaTeX of a Dense layer's derivation with each built-in, a user's Piecewise and an applyfunc model."""
    user = flux.elementwise("bump", USER_FUNCTIONS["bump"][0])
    models = [Dense(3, 2, name) for name in sorted(REFERENCES)] + [Dense(3, 2, user)]
    return [flux.latex(m.derivation) for m in models] + [flux.latex(Applied.derivation)]


def test_function_latex_is_ascii_and_typesets_in_katex_and_mathtext(katex_node_path):
    import json
    import os
    import subprocess
    from pathlib import Path

    blocks = function_latex()
    assert all(block.isascii() for block in blocks), blocks
    result = subprocess.run(["node", str(Path(__file__).with_name("katex_render.js"))], input=json.dumps(blocks),
                            capture_output=True, text=True, check=True, timeout=120,
                            env={**os.environ, "NODE_PATH": katex_node_path})
    failures = [(block, error) for block, error in zip(blocks, json.loads(result.stdout)) if error]
    assert not failures, failures
    mathtext = pytest.importorskip("matplotlib.mathtext")
    parser = mathtext.MathTextParser("path")
    for line in (line for block in blocks for line in block.splitlines()):
        if "aligned" not in line and r"\begin" not in line:
            parser.parse(f"${line.rstrip(' ').rstrip(chr(92)).replace('&', '')}$")


def test_applyfunc_with_no_numba_form_is_refused_when_traced():
    class Refused(flux.Model):
        def forward(self, x):
            return x.applyfunc(sympy.zeta)

    with pytest.raises(TypeError, match="zeta"):
        Refused.derivation


def test_user_functions_in_float32_kernels():
    bump = flux.elementwise("bump", USER_FUNCTIONS["bump"][0])
    x = away_from_user_kinks(X).astype(np.float32)
    y = bump(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, USER_FUNCTIONS["bump"][1](x.astype(np.float64)), rtol=1e-6)


class SoftsignCell(flux.Model):
    """h_t = softsign(W x_t + U h_{t−1}), softsign written with applyfunc inside the state update."""

    W = flux.param("h", "n")
    U = flux.param("h", "h")
    hidden = flux.state("h")

    def forward(self, x):
        self.hidden = (self.W * x + self.U * self.hidden).applyfunc(lambda z: z / (1 + sympy.Abs(z)))
        return self.hidden


def test_applyfunc_in_a_recurrent_state_update_is_derived_and_compiled():
    rng = np.random.default_rng(7)
    cell = SoftsignCell(W=rng.standard_normal((3, 2)), U=0.5 * rng.standard_normal((3, 3)), dtype=np.float64)
    xs = rng.standard_normal((2, 4, 2))
    h, expected = np.zeros((2, 3)), []
    for t in range(4):
        z = xs[:, t] @ cell.W.T + h @ cell.U.T
        h = z / (1 + np.abs(z))
        expected.append(h)
    np.testing.assert_allclose(cell(xs), np.stack(expected, axis=1), rtol=1e-12)
    assert flux.gradcheck(cell, xs) < 1e-6



def test_a_new_built_in_is_one_table_entry(monkeypatch):
    """Adding an entry to flux.maths.elementwise.BUILT_IN (here `mish`, patched in) is all it takes: flux.mish,
    Dense(…, "mish"), its derivative, code and LaTeX follow."""
    import flux.layers.activations as activations
    from flux.maths import elementwise

    entry = elementwise.ElementwiseFunction(
        "mish", lambda z: z * sympy.tanh(elementwise.softplus(z)), elementwise.operator_name("mish"),
        doc="mish(z) = z·tanh(softplus(z)).")
    monkeypatch.setitem(elementwise.FUNCTIONS, "mish", entry)
    monkeypatch.setattr(activations, "_from_table", {})
    reference = X * np.tanh(np.log1p(np.exp(X)))
    np.testing.assert_allclose(flux.mish(X), reference, rtol=1e-12)
    assert flux.mish.__doc__.startswith("mish(z)")
    dense = Dense(3, 2, "mish", dtype=np.float64)
    assert flux.gradcheck(dense, X) < 1e-6
    assert r"\operatorname{mish}" in flux.latex(dense.derivation)


def test_every_table_function_is_an_attribute_and_an_activation_name():
    for name in ("erf", "gelu", "silu", "swish", "elu", "leakyrelu", "softsign"):
        assert isinstance(getattr(flux, name), flux.Elementwise)
        assert Dense(2, 2, name).activation is getattr(flux, name)
    with pytest.raises(AttributeError):
        flux.no_such_function
    with pytest.raises(ValueError, match="'gelu'"):
        Dense(2, 2, "no_such_function")
