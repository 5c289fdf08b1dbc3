"""Regression tests for bugs found by probing flux as a demanding user and as a hostile file author.

Each test failed before its fix (the commit naming the bug). Small sizes and the session's kernel cache keep it fast.
"""
import json

import numpy as np
import pytest

import flux
from flux import tanh
from flux.train import evaluate

F64 = np.float64


def rewrite_description(path, edit) -> None:
    """Edit the JSON description inside a flux model file, as a hostile author would (arrays kept)."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    description = json.loads(str(arrays["__flux__"]))
    edit(description)
    arrays["__flux__"] = np.array(json.dumps(description))
    np.savez(path, **arrays)


def description_of(path) -> dict:
    with np.load(path, allow_pickle=False) as archive:
        return json.loads(str(archive["__flux__"]))


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(11).standard_normal((2, 3))


# ---- model files: a file is data, it cannot change what a loaded model computes ------------------------------------


def training_chain():
    return flux.Chain(flux.Dense(3, 3, tanh, rng=1, dtype=F64), flux.Dropout(0.5, rng=0),
                      flux.Dense(3, 3, rng=2, dtype=F64))


def test_a_chains_cached_parts_are_not_saved_and_a_file_cannot_make_it_run_other_layers(tmp_path, x):
    """Bug: a Chain's run-time cache `_parts` (which layers run in turn in training mode) was saved, and loaded back
    as data, so a file could make a loaded Chain run [A, Dropout, A] while its layers (and its maths) say
    [A, Dropout, B]."""
    chain = training_chain()
    chain(x)  # in training mode a Chain with a Dropout runs its parts in turn, and caches them
    path = tmp_path / "chain.npz"
    flux.save(chain, path)
    assert "_parts" not in description_of(path)["model"]["attributes"]
    honest = flux.load(path)

    def run_the_first_layer_twice(description):
        attributes = description["model"]["attributes"]
        layers = attributes["layers"]
        attributes["_parts"] = {"$tuple": [[False, True, False], layers, [layers[0], layers[1], layers[0]]]}

    rewrite_description(path, run_the_first_layer_twice)
    tampered = flux.load(path)
    np.testing.assert_array_equal(tampered(x), honest(x))  # the same masks: both generators start alike


@pytest.mark.parametrize("name, value", [("forward", {"$elementwise": "relu"}),
                                         ("back", {"$elementwise": "relu"}),
                                         ("named_submodels", {"$import": "flux.layers.basic:Chain"})])
def test_a_file_cannot_replace_a_method_of_the_models_class(tmp_path, x, name, value):
    """Bug: any attribute of a file went into the instance's __dict__, so `"forward": {"$elementwise": "relu"}` made a
    loaded Dense compute relu(x) (no W, no b) — code chosen by the file in place of the class's maths."""
    dense = flux.Dense(3, 3, rng=1, dtype=F64)
    path = tmp_path / "dense.npz"
    flux.save(dense, path)
    rewrite_description(path, lambda d: d["model"]["attributes"].update({name: value}))
    with pytest.raises(ValueError, match=f"'{name}' of Dense, which is a method or property"):
        flux.load(path)


# ---- parameters: an error changes nothing --------------------------------------------------------------------------


def test_params_update_with_one_bad_entry_changes_no_parameter():
    """Bug: `model.params.update({"W": good, "b": bad})` copied W in, then raised on b: a half-updated model."""
    dense = flux.Dense(3, 2, rng=1, dtype=F64)
    before = {k: v.copy() for k, v in dense.params.items()}
    with pytest.raises(ValueError, match="parameter b has shape"):
        dense.params.update({"W": np.ones((2, 3)), "b": np.ones(5)})
    for name, value in dense.params.items():
        np.testing.assert_array_equal(value, before[name])
    dense.params.update({"W": np.ones((2, 3)), "b": np.zeros(2)})  # and a good update still copies everything
    np.testing.assert_array_equal(dense.params["W"], np.ones((2, 3)))


# ---- kernels compute the current maths -----------------------------------------------------------------------------


class Scaled(flux.Model):
    """y = α·(W·x), α read from a private attribute."""
    W = flux.param("n", "n")

    def forward(self, x):
        return self._alpha * (self.W * x)


def test_changing_a_private_attribute_forward_reads_changes_the_kernel():
    """Bug: only public attributes re-traced the model, so after `m._alpha = 3.0` the kernel (and the derivation)
    still computed 2·W·x."""
    model = Scaled(W=np.eye(2), dtype=F64)
    model._alpha = 2.0
    x = np.ones((1, 2))
    np.testing.assert_array_equal(model(x), 2 * x)
    model._alpha = 3.0
    np.testing.assert_array_equal(model(x), 3 * x)
    model.back(np.ones((1, 2)))
    np.testing.assert_array_equal(model.grads["W"], 3 * np.ones((2, 2)))


# ---- powers: NumPy's values at 0 and ±∞, never an exception ---------------------------------------------------------


class Powers(flux.Model):
    """y = [x^{∘½}; x^{∘−1}; x^{∘−2}; f(x)], f(z) = z⁻³ a function of the user's."""

    def forward(self, x):
        return flux.concat(x ** 0.5, x ** -1, flux.hadamard_power(x, -2), inverse_cube(x))


inverse_cube = flux.elementwise("inverse_cube", lambda z: z ** -3)


def test_negative_integer_powers_and_square_roots_give_numpys_values_at_zero_and_infinity():
    """Bug: the numba tier printed x^{∘−2} as `x ** -2`, and numba's integer power raises ZeroDivisionError at 0
    (whatever the error model): backward through x ** -1, forward through x^{∘−2} or z⁻³ raised at x = 0. And
    x ** 0.5 was printed as pow(x, 0.5), +∞ at −∞ where NumPy (and the NumPy tier) give NaN."""
    model = Powers(dtype=F64)
    x = np.array([[0.0, -np.inf, np.inf, -1.0, 4.0, np.nan]])
    with np.errstate(all="ignore"):
        expected = np.concatenate([np.sqrt(x), 1 / x, x ** -2.0, x ** -3.0], axis=1)
        Δ = np.ones_like(expected)
        dx = (0.5 / np.sqrt(x) - x ** -2.0 - 2 * x ** -3.0 - 3 * x ** -4.0)
    np.testing.assert_array_equal(model(x), expected)
    np.testing.assert_array_equal(model.back(Δ), dx)
    assert flux.gradcheck(model, np.array([[0.7, 1.3, 2.0]])) < 1e-6


class TokenPowers(flux.Model):
    X = flux.tokens("d")

    def forward(self, X):
        return flux.hadamard_power(X, -2) + flux.hadamard_power(X, 0.5)


def test_powers_of_token_matrices_give_numpys_values_at_zero_and_infinity():
    """The same bug in the printer of token models: X^{∘−2} raised ZeroDivisionError at 0."""
    model = TokenPowers(dtype=F64)
    X = np.array([[[0.0, -np.inf], [4.0, 1.0]]])
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(model(X), X ** -2.0 + np.sqrt(X))
        np.testing.assert_array_equal(model.back(np.ones_like(X)), -2 * X ** -3.0 + 0.5 / np.sqrt(X))


def test_loading_different_values_into_a_layer_used_twice_is_refused(tmp_path):
    """Bug: `flux.load(file, into=Chain(l, l))` with a file of two different layers copied "0.W" and then "1.W" into
    the one array, silently dropping the file's first layer."""
    layer = flux.Dense(3, 3, rng=1, dtype=F64)
    tied = flux.Chain(layer, layer)
    before = {k: v.copy() for k, v in tied.params.items()}
    path = tmp_path / "untied.npz"
    flux.save(flux.Chain(flux.Dense(3, 3, rng=2, dtype=F64), flux.Dense(3, 3, rng=3, dtype=F64)), path)
    with pytest.raises(ValueError, match="'0.W' and '1.W' are one array"):
        flux.load(path, into=tied)
    for name, value in tied.params.items():
        np.testing.assert_array_equal(value, before[name])
    flux.save(flux.Chain(layer, layer), path)  # a tied file loads into a tied model
    assert flux.load(path, into=tied) is tied


def test_a_model_file_whose_model_contains_itself_is_a_value_error(tmp_path):
    """A crafted cycle (a Chain among its own layers) raised RecursionError out of flux.load."""
    path = tmp_path / "cycle.npz"
    flux.save(flux.Chain(flux.Dense(3, 3, rng=1, dtype=F64)), path)
    rewrite_description(path, lambda d: d["model"]["attributes"]["layers"].append({"$model": {"$ref": 0}}))
    with pytest.raises(ValueError, match="malformed model description"):
        flux.load(path)


# ---- a per-sample scalar times a product that is one --------------------------------------------------------------


class ScaledQuadraticForm(flux.Model):
    """y = Σ(x)·(xᵀ·W·x) + (xᵀ·x)·Σ(x)·x."""
    W = flux.param("n", "n")

    def forward(self, x):
        return flux.total(x) * (x.T * self.W * x) + (x.T * x) * flux.total(x) * x


def test_a_per_sample_scalar_times_a_quadratic_form_compiles_on_numba_and_is_right():
    """Bug: Σ(x)·(xᵀ·W·x) ran on the NumPy tier but the numba tier refused it ("a per-sample matrix product is not
    supported: total(x) * x.T*(W*x)"), at the first call: the results depended on the tier."""
    rng = np.random.default_rng(4)
    model = ScaledQuadraticForm(W=rng.standard_normal((3, 3)), dtype=F64)
    x = rng.standard_normal((4, 3))
    W, s = model.params["W"], x.sum(axis=1, keepdims=True)
    expected = s * np.einsum("ni,ij,nj->n", x, W, x)[:, None] + (x * x).sum(axis=1, keepdims=True) * s * x
    np.testing.assert_allclose(model(x), expected, rtol=1e-12)
    assert flux.gradcheck(model, x) < 1e-6


# ---- the maths as shown -----------------------------------------------------------------------------------------


class CubedMean(flux.Model):
    def forward(self, x):
        return flux.hadamard_power(flux.mean(x), 3)


def test_a_power_of_a_size_reads_as_a_power():
    """Bug: ((1/n)·Σx)³ read "(n_x··(−3))·Σ(x)³" and its gradient "(3/n_x··3)·…": SymPy's n**(-3) with every * made
    a ·. Its value and gradient are checked against NumPy and finite differences too."""
    text = str(CubedMean.derivation)
    assert "··" not in text and "**" not in text
    assert "(1/n_x³)·Σ(x)³" in text and "(3/n_x³)" in text
    x = np.random.default_rng(5).standard_normal((3, 4))
    np.testing.assert_allclose(CubedMean(dtype=F64)(x), x.mean(axis=1, keepdims=True) ** 3, rtol=1e-12)
    assert flux.gradcheck(CubedMean(dtype=F64), x) < 1e-6


def test_assigning_different_values_to_a_layer_used_twice_is_refused():
    """Bug: `Chain(l, l).params.update({"0.W": A, "1.W": B})` silently kept B, the last."""
    layer = flux.Dense(2, 2, rng=1, dtype=F64)
    tied = flux.Chain(layer, layer)
    before = layer.params["W"].copy()
    with pytest.raises(ValueError, match="'0.W' and '1.W' are one array"):
        tied.params.update({"0.W": np.zeros((2, 2)), "1.W": np.ones((2, 2))})
    np.testing.assert_array_equal(layer.params["W"], before)
    tied.params.update({"0.W": np.ones((2, 2)), "1.W": np.ones((2, 2))})
    np.testing.assert_array_equal(layer.params["W"], np.ones((2, 2)))


# ---- training leaves every mode as it found it ----------------------------------------------------------------------


def test_evaluate_restores_mixed_train_and_eval_modes():
    """Bug: flux.train.evaluate (and so flux.train's loss, metrics and val_loss) evaluated a model holding a training
    Dropout in evaluation mode, then called model.train(): a Dropout the user had put in evaluation mode came back
    dropping."""
    kept_off = flux.Dropout(0.5, rng=1).eval()
    model = flux.Chain(flux.Dense(3, 3, tanh, rng=1, dtype=F64), flux.Dropout(0.5, rng=0),
                       flux.Dense(3, 3, rng=2, dtype=F64), kept_off)
    data = (np.ones((4, 3)), np.zeros((4, 3)))
    evaluate(model, flux.mse, data)
    assert model.training and model.layers[1].training and not kept_off.training


@pytest.mark.parametrize("layer, attribute, value, message", [
    (lambda: flux.Dropout(0.5, rng=0), "p", 1.0, "p must be a probability"),
    (lambda: flux.Dropout(0.5, rng=0), "dtype", {"$dtype": "float16"}, "dtype must be float32 or float64"),
    (lambda: flux.LayerNorm(4, dtype=F64), "eps", -1.0, "eps"),
    (lambda: flux.RMSNorm(4, dtype=F64), "eps", "1e-5", "eps"),
    (lambda: flux.MultiHeadAttention(4, 2, dtype=F64), "heads", 3, "multiple of heads"),
])
def test_a_file_with_arguments_the_constructor_refuses_does_not_load(tmp_path, layer, attribute, value, message):
    """Bug: a loaded model skips __init__, so a file could carry what the constructor refuses (Dropout p = 1, a
    float16 dtype, a negative ε, heads that do not divide d) and fail only at its first call, or compute NaN."""
    path = tmp_path / "layer.npz"
    flux.save(layer(), path)
    rewrite_description(path, lambda description: description["model"]["attributes"].__setitem__(attribute, value))
    with pytest.raises(ValueError, match=message):
        flux.load(path)
