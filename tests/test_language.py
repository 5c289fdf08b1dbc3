"""The language's per-sample maths: numbers and per-sample scalars broadcast against vectors in + − × ÷, `**` and
⊘ elementwise, flux.mean / flux.norm, the bilinear form as an output; shape mistakes are definition errors.

Every row of issue 14's table is written as a user writes it, derived, displayed, compiled, compared with NumPy and
gradchecked in float64."""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import flux
from flux import hadamard, total
from tests.test_show import katex_node_path  # noqa: F401  (the session fixture: KaTeX for node)

N, K = 4, 3
RNG = np.random.default_rng(1414)
X = RNG.normal(size=(N, K))
Y = RNG.normal(size=(N, K))
W0 = RNG.normal(size=(K, K)) / 2
B0 = RNG.normal(size=K) / 2


def rows(v):  # a per-sample scalar as flux returns it: (N, 1)
    return v.reshape(-1, 1)


def norm(v):
    return rows(np.linalg.norm(v, axis=1))


def sig(z):
    return 1 / (1 + np.exp(-z))


# name: (forward(self, x), reference(x) in NumPy, W·x uses W0 and b0)
CASES = {
    "one_minus": (lambda s, x: 1 - flux.tanh(x), lambda x: 1 - np.tanh(x)),
    "plus_one_float": (lambda s, x: x + 1.0, lambda x: x + 1.0),
    "plus_epsilon": (lambda s, x: hadamard(x, x) + 1e-5, lambda x: x * x + 1e-5),
    "half": (lambda s, x: 0.5 * x, lambda x: 0.5 * x),
    "one_plus_tanh": (lambda s, x: hadamard(x, 1 + flux.tanh(s.W * x)) / 2, lambda x: x * (1 + np.tanh(x @ W0.T)) / 2),
    "highway": (lambda s, x: hadamard(flux.σ(s.W * x + s.b), flux.tanh(x))
                + hadamard(1 - flux.σ(s.W * x + s.b), x),
                lambda x: sig(x @ W0.T + B0) * np.tanh(x) + (1 - sig(x @ W0.T + B0)) * x),
    "number_over_vector": (lambda s, x: 2 / (hadamard(x, x) + 1), lambda x: 2 / (x * x + 1)),
    "square": (lambda s, x: (s.W * x) ** 2, lambda x: (x @ W0.T) ** 2),
    "cube_and_root": (lambda s, x: (hadamard(x, x) + 1) ** 0.5 + x ** 3, lambda x: np.sqrt(x * x + 1) + x ** 3),
    "hadamard_power": (lambda s, x: flux.hadamard_power(s.W * x, 2), lambda x: (x @ W0.T) ** 2),
    "softsign": (lambda s, x: x / (1 + flux.abs(x)), lambda x: x / (1 + np.abs(x))),
    "vector_division": (lambda s, x: x / (flux.exp(s.W * x) + 1), lambda x: x / (np.exp(x @ W0.T) + 1)),
    "unit_vector": (lambda s, x: x / flux.sqrt(x.T * x), lambda x: x / norm(x)),
    "manual_softmax": (lambda s, x: flux.exp(x) / total(flux.exp(x)),
                       lambda x: np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)),
    "one_over_root": (lambda s, x: 1 / flux.sqrt(total(hadamard(x, x)) + 1), lambda x: 1 / np.sqrt(norm(x) ** 2 + 1)),
    "centred": (lambda s, x: x - total(x), lambda x: x - x.sum(axis=1, keepdims=True)),
    "mean_centred": (lambda s, x: x - flux.mean(x), lambda x: x - x.mean(axis=1, keepdims=True)),
    "rms_norm": (lambda s, x: x / flux.sqrt(flux.mean(hadamard(x, x)) + 1e-5),
                 lambda x: x / np.sqrt((x * x).mean(axis=1, keepdims=True) + 1e-5)),
    "layer_norm": (lambda s, x: hadamard(s.b, (x - flux.mean(x)) / flux.sqrt(flux.mean((x - flux.mean(x)) ** 2) + 1e-5)),
                   lambda x: B0 * (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1e-5)),
    "norm_scaled": (lambda s, x: flux.norm(x) * s.W * x, lambda x: norm(x) * (x @ W0.T)),
    "dot_scaled": (lambda s, x: (x.T * s.W * x) * x, lambda x: rows(np.einsum("ni,ij,nj->n", x, W0, x)) * x),
    "scalar_through_function": (lambda s, x: flux.tanh(flux.mean(x)) * x + flux.exp(total(x)),
                                lambda x: np.tanh(x.mean(1, keepdims=True)) * x + np.exp(x.sum(1, keepdims=True))),
    "bilinear": (lambda s, x: x.T * s.W * x, lambda x: rows(np.einsum("ni,ij,nj->n", x, W0, x))),
    "power_of_two": (lambda s, x: 2 ** x, lambda x: 2.0 ** x),
    "square_matrix_power": (lambda s, x: s.W ** 2 * x, lambda x: x @ (W0 @ W0).T),
}


def model_class(name, forward):
    return type(name, (flux.Model,), {"W": flux.param("n", "n"), "b": flux.param("n"),
                                      "forward": lambda self, x: forward(self, x)})


@pytest.fixture(scope="module")
def models():
    return {name: model_class(name, forward)(W=W0, b=B0, dtype=np.float64)
            for name, (forward, _) in CASES.items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_idiom_computes_the_maths_written(models, name):
    np.testing.assert_allclose(models[name](X), CASES[name][1](X), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_idiom_gradchecks(models, name):
    assert flux.gradcheck(models[name], X, seed=7) < 1e-6


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_idiom_displays_in_text_and_latex(models, name):
    derivation = models[name].derivation
    assert "∂L/∂x" in str(derivation) and "Spread" not in str(derivation)
    assert r"\partial L" in flux.latex(derivation)


def test_float32_models_compute_the_same_maths():
    forward, reference = CASES["rms_norm"]
    model = model_class("rms_norm", forward)(W=W0, b=B0, dtype=np.float32)
    np.testing.assert_allclose(model(X.astype(np.float32)), reference(X), rtol=2e-5, atol=2e-6)


def test_cosine_similarity_of_two_inputs():
    class Cosine(flux.Model):
        def forward(self, x, y):
            return x.T * y / (flux.norm(x) * flux.norm(y))

    model = Cosine(dtype=np.float64)
    expected = rows(np.sum(X * Y, axis=1)) / (norm(X) * norm(Y))
    np.testing.assert_allclose(model(X, Y), expected, rtol=1e-12)
    assert flux.gradcheck(model, X, Y, seed=3) < 1e-6


def test_the_bilinear_form_returns_one_column_per_sample(models):
    assert models["bilinear"](X).shape == (N, 1)
    assert models["bilinear"](X[0]).shape == (1,)


def test_a_product_that_pins_a_size_to_one_is_a_definition_error():
    class Outer(flux.Model):
        def forward(self, x, y):
            return x * y  # a matrix product of two columns: only if y had one entry

    with pytest.raises(flux.DefinitionError, match=r"would fix the size n_y to 1.*hadamard"):
        Outer.derivation


def test_a_per_sample_scalar_against_a_matrix_is_a_definition_error():
    class Spread(flux.Model):
        W = flux.param("m", "n")

        def forward(self, x):
            return self.W + total(x)

    with pytest.raises(flux.DefinitionError, match="matrix per sample"):
        Spread.derivation


def test_a_per_sample_scalar_times_a_matrix_must_meet_a_vector():
    class Scaled(flux.Model):
        W = flux.param("n", "n")

        def forward(self, x):
            return self.W * x + flux.norm(x) * self.W

    with pytest.raises(flux.DefinitionError, match="matrix per sample"):
        Scaled.derivation


def test_matrix_inverse_and_roots_are_refused_with_the_elementwise_alternative():
    class Inverse(flux.Model):
        W = flux.param("n", "n")

        def forward(self, x):
            return self.W ** -1 * x

    with pytest.raises(flux.DefinitionError, match="hadamard_power"):
        Inverse.derivation


def test_arrays_outside_tracing_use_numpy():
    np.testing.assert_allclose(flux.mean(X), X.mean(axis=1, keepdims=True))
    np.testing.assert_allclose(flux.norm(X), norm(X))
    np.testing.assert_allclose(flux.hadamard_power(X, 3), X ** 3)


def test_sympys_operators_are_restored_after_tracing(models):
    import sympy

    x = sympy.MatrixSymbol("x", 3, 1)
    with pytest.raises(TypeError):
        1 - x  # SymPy's own behaviour outside a trace is untouched


def test_language_latex_typesets_in_katex(models, katex_node_path):
    blocks = [flux.latex(model.derivation) for model in models.values()]
    result = subprocess.run(["node", str(Path(__file__).with_name("katex_render.js"))], input=json.dumps(blocks),
                            capture_output=True, text=True, check=True, timeout=120,
                            env={**os.environ, "NODE_PATH": katex_node_path})
    failures = [(block, error) for block, error in zip(blocks, json.loads(result.stdout)) if error]
    assert not failures, failures


def test_broadcasts_inside_a_recurrent_cell_gradcheck():
    class Cell(flux.Model):
        Wz = flux.param("h", "x")
        Uz = flux.param("h", "h")
        Wh = flux.param("h", "x")
        h = flux.state("h")

        def forward(self, x):
            z = flux.σ(self.Wz * x + self.Uz * self.h)
            candidate = flux.tanh(self.Wh * x) / (1 + flux.norm(self.h))
            self.h = hadamard(1 - z, self.h) + hadamard(z, candidate) - 0.1 * flux.mean(self.h)
            return self.h

    rng = np.random.default_rng(3)
    cell = Cell(Wz=rng.normal(size=(4, 3)) / 2, Uz=rng.normal(size=(4, 4)) / 2, Wh=rng.normal(size=(4, 3)) / 2,
                dtype=np.float64)
    assert flux.gradcheck(cell, rng.normal(size=(2, 5, 3)), initial={"h": rng.normal(size=(2, 4))}) < 1e-6


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_idiom_runs_the_same_on_the_numpy_tier(monkeypatch, name):
    monkeypatch.setenv("FLUX_TIER", "numpy")
    model = model_class(name, CASES[name][0])(W=W0, b=B0, dtype=np.float64)
    np.testing.assert_allclose(model(X), CASES[name][1](X), rtol=1e-12, atol=1e-12)
    assert model.kernels.tier == "numpy"
    assert flux.gradcheck(model, X, seed=7) < 1e-6
