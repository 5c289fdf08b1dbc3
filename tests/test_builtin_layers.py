"""The built-in layers written in flux's own syntax (LayerNorm, RMSNorm, Highway, GLU, Bilinear, SkipConnection,
Dropout): each compared with a NumPy reference in float64, gradchecked, and where PyTorch is installed compared with
its function."""
import numpy as np
import pytest

import flux
from flux import GLU, Bilinear, Dense, Dropout, Highway, LayerNorm, RMSNorm, SkipConnection

N, K = 5, 6
RNG = np.random.default_rng(1414)
X = RNG.normal(size=(N, K)) * 2 + 0.5  # away from 0 mean and unit variance, so normalising changes something
X2 = RNG.normal(size=(N, 3))
F64 = np.float64


def sig(z):
    return 1 / (1 + np.exp(-z))


def layer_norm(x, γ, β, eps=1e-5):
    centred = x - x.mean(axis=1, keepdims=True)
    return γ * centred / np.sqrt((centred ** 2).mean(axis=1, keepdims=True) + eps) + β


def rms_norm(x, γ, eps=1e-5):
    return γ * x / np.sqrt((x ** 2).mean(axis=1, keepdims=True) + eps)


def with_random_params(model, seed=7):
    """Every parameter set to random values (the initial γ = 1, β = 0 would hide a swapped gain or bias)."""
    rng = np.random.default_rng(seed)
    for name, value in model.params.items():
        model.params[name] = rng.normal(size=value.shape)
    return model


@pytest.fixture(scope="module")
def layers():
    """name: (model, inputs, NumPy reference of the model's output)."""
    ln = with_random_params(LayerNorm(K, dtype=F64))
    rms = with_random_params(RMSNorm(K, dtype=F64))
    highway = with_random_params(Highway(K, rng=1, dtype=F64))
    highway_tanh = with_random_params(Highway(K, "tanh", rng=1, dtype=F64))
    glu = GLU(K, 4, rng=2, dtype=F64)
    bilinear = Bilinear(K, 3, 4, rng=3, dtype=F64)
    bilinear_one = Bilinear(K, 3, 1, rng=3, dtype=F64)
    inner = Dense(K, K, "tanh", rng=4, dtype=F64)
    skip = SkipConnection(inner)

    def highway_reference(m, f):
        t = sig(X @ m.Wt.T + m.bt)
        return t * f(X @ m.Wh.T + m.bh) + (1 - t) * X

    def bilinear_reference(m):
        W = np.stack([m.params[f"{k}.W"] for k in range(len(m.forms))])
        return np.einsum("ni,kij,nj->nk", X, W, X2) + m.b

    return {
        "LayerNorm": (ln, (X,), layer_norm(X, ln.γ, ln.β)),
        "RMSNorm": (rms, (X,), rms_norm(X, rms.γ)),
        "Highway": (highway, (X,), highway_reference(highway, lambda z: np.maximum(z, 0))),
        "Highway_tanh": (highway_tanh, (X,), highway_reference(highway_tanh, np.tanh)),
        "GLU": (glu, (X,), (X @ glu.W.T + glu.b) * sig(X @ glu.V.T + glu.c)),
        "Bilinear": (bilinear, (X, X2), bilinear_reference(bilinear)),
        "Bilinear_one_output": (bilinear_one, (X, X2), bilinear_reference(bilinear_one)),
        "SkipConnection": (skip, (X,), X + np.tanh(X @ inner.W.T + inner.b)),
    }


NAMES = ["LayerNorm", "RMSNorm", "Highway", "Highway_tanh", "GLU", "Bilinear", "Bilinear_one_output", "SkipConnection"]


@pytest.mark.parametrize("name", NAMES)
def test_each_layer_computes_its_equation(layers, name):
    model, inputs, expected = layers[name]
    np.testing.assert_allclose(model(*inputs), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_each_layer_gradchecks(layers, name):
    model, inputs, _ = layers[name]
    # The normalisations' ∂L/∂x is small against L (their output ignores a shift and a scale of x), so central
    # differences at ε = 1e-6 leave ≈ 5e-6 of rounding in it; at ε = 1e-5 the truncation is still ≈ 1e-10.
    assert flux.gradcheck(model, *inputs, eps=1e-5, seed=3) < 1e-6


@pytest.mark.parametrize("name", NAMES)
def test_each_layer_has_its_equation_in_its_docstring_and_displays(layers, name):
    model = layers[name][0]
    assert "=" in type(model).__doc__
    derivation = str(model.derivation)
    assert "∂L/∂x" in derivation and "Spread" not in derivation
    assert r"\partial L" in flux.latex(model.derivation)


def test_a_single_sample_gives_a_vector(layers):
    model, inputs, expected = layers["LayerNorm"]
    np.testing.assert_allclose(model(X[0]), expected[0], rtol=1e-12)
    assert layers["Bilinear"][0](X[0], X2[0]).shape == (4,)


def test_layer_norm_starts_as_pytorchs_and_takes_eps():
    ln = LayerNorm(K, eps=1e-3, dtype=F64)
    np.testing.assert_array_equal(ln.γ, np.ones(K))
    np.testing.assert_array_equal(ln.β, np.zeros(K))
    np.testing.assert_allclose(ln(X), layer_norm(X, 1, 0, eps=1e-3), rtol=1e-12)
    normalised = ln(X)
    np.testing.assert_allclose(normalised.mean(axis=1), 0, atol=1e-12)
    assert list(ln.params) == ["γ", "β"]


def test_float32_layer_norm_agrees_with_float64():
    ln = LayerNorm(K)
    assert ln.dtype == np.float32
    np.testing.assert_allclose(ln(X.astype(np.float32)), layer_norm(X, 1, 0), rtol=1e-5, atol=1e-5)


def test_highway_starts_by_carrying_its_input_and_takes_no_activation():
    highway = Highway(K, None, rng=0, dtype=F64)
    np.testing.assert_array_equal(highway.bt, -np.ones(K))
    t = sig(X @ highway.Wt.T - 1)
    np.testing.assert_allclose(highway(X), t * (X @ highway.Wh.T) + (1 - t) * X, rtol=1e-12)
    assert np.array_equal(Highway(K, rng=5).Wh, Highway(K, rng=5).Wh)  # seeded


def test_bilinear_parameters_are_pytorchs_weight_slices():
    bilinear = Bilinear(4, 3, 2, rng=0, dtype=F64)
    assert list(bilinear.params) == ["b", "0.W", "1.W"]
    assert bilinear.params["1.W"].shape == (4, 3)
    assert np.abs(np.concatenate([p.ravel() for p in bilinear.params.values()])).max() <= 1 / 2  # U(±1/√n1)


def test_skip_connection_around_a_function_and_a_chain():
    skip = SkipConnection(flux.tanh)
    np.testing.assert_allclose(skip(X), X + np.tanh(X), rtol=1e-12)
    chain = flux.Chain(Dense(K, 3, "relu", rng=1, dtype=F64), Dense(3, K, rng=2, dtype=F64))
    residual = SkipConnection(chain)
    assert list(residual.params) == ["layer.0.W", "layer.0.b", "layer.1.W", "layer.1.b"]
    np.testing.assert_allclose(residual(X), X + chain(X), rtol=1e-12)
    assert flux.gradcheck(residual, X, seed=1) < 1e-6


@pytest.mark.parametrize("make, message", [
    (lambda: LayerNorm(0), "LayerNorm: n must be a positive"),
    (lambda: LayerNorm("4"), "LayerNorm: n must be an integer"),
    (lambda: RMSNorm(4, eps=0), "RMSNorm: eps must be a positive"),
    (lambda: GLU(4, 0), "GLU: n_out must be a positive"),
    (lambda: Bilinear(4, 3, 2.0), "Bilinear: n_out must be an integer"),
    (lambda: Highway(4, "gelux"), "Highway: unknown activation 'gelux'"),
    (lambda: SkipConnection(3), "SkipConnection needs a model or function"),
    (lambda: Dropout(1.0), r"Dropout: p must be a probability 0 ≤ p < 1"),
    (lambda: Dropout(-0.1), "Dropout: p must be a probability"),
])
def test_bad_arguments_name_the_layer_and_the_argument(make, message):
    with pytest.raises((TypeError, ValueError), match=message):
        make()


# ---- Dropout -------------------------------------------------------------------------------------------

def expected_mask(seed, shape, p):
    """The mask Dropout(p, rng=seed) draws first: each entry kept (1) with probability 1 − p."""
    return (np.random.default_rng(seed).random(shape) >= p).astype(F64)


def test_dropout_scales_the_kept_entries_and_backpropagates_through_the_same_mask():
    drop = Dropout(0.25, rng=11)
    mask = expected_mask(11, X.shape, 0.25)
    np.testing.assert_allclose(drop(X), mask * X / 0.75, rtol=1e-15)
    Δ = RNG.normal(size=X.shape)
    np.testing.assert_allclose(drop.back(Δ), mask * Δ / 0.75, rtol=1e-15)


def test_dropout_draws_a_new_mask_per_call_and_a_seed_repeats_them():
    first, again = Dropout(0.5, rng=3), Dropout(0.5, rng=3)
    ones = np.ones((200, 50))
    a, b = first(ones), first(ones)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(again(ones), a)
    kept = (a != 0).mean()
    assert 0.47 < kept < 0.53  # 10 000 Bernoulli(½) draws: σ = 0.005
    assert set(np.unique(a)) == {0.0, 2.0}


def test_a_saved_dropout_goes_on_drawing_the_same_masks(tmp_path):
    drop = Dropout(0.5, rng=np.random.default_rng(8))
    drop(X)
    flux.save(flux.Chain(drop), tmp_path / "dropout.npz")
    loaded = flux.load(tmp_path / "dropout.npz")[0]
    np.testing.assert_array_equal(loaded(X), drop(X))
    loaded._rng_state = dict(loaded._rng_state, bit_generator="seed")  # a file naming something else is refused
    with pytest.raises(ValueError, match="unknown random bit generator 'seed'"):
        loaded(X)


def test_dropout_is_the_identity_in_evaluation_and_with_p_zero():
    drop = Dropout(0.5, rng=0).eval()
    assert drop.training is False
    np.testing.assert_array_equal(drop(X), X)
    Δ = RNG.normal(size=X.shape)
    np.testing.assert_array_equal(drop.back(Δ), Δ)
    with pytest.raises(RuntimeError, match="no forward pass"):
        drop.back(Δ)  # an evaluation pass, too, is back-propagated once
    np.testing.assert_array_equal(Dropout(0.0)(X), X)


def test_dropout_with_a_given_mask_gradchecks_in_both_inputs():
    drop = Dropout(0.3)
    mask = expected_mask(5, X.shape, 0.3)
    np.testing.assert_allclose(drop(X, mask), mask * X / 0.7, rtol=1e-15)
    assert flux.gradcheck(drop, X, mask, seed=2) < 1e-6
    assert "m ⊙ x" in str(drop.derivation)


def test_train_and_eval_reach_every_sub_model():
    chain = flux.Chain(Dense(K, 4, "relu", rng=1, dtype=F64), Dropout(0.5),
                       SkipConnection(flux.Chain(Dropout(0.1), Dense(4, 4, rng=2, dtype=F64))))
    assert chain.eval() is chain
    assert [m.training for m in (chain, chain[1], chain[2], chain[2].layer, chain[2].layer[0])] == [False] * 5
    chain.train()
    assert chain[2].layer[0].training is True


def chain_with_dropout(seed=21):
    return flux.Chain(Dense(K, 8, "tanh", rng=1, dtype=F64), Dropout(0.5, rng=seed), Dense(8, 2, rng=2, dtype=F64))


def test_a_chain_with_dropout_runs_its_layers_in_turn_while_training_and_fuses_in_evaluation():
    chain = chain_with_dropout()
    first, mask, last = chain.layers
    hidden = np.tanh(X @ first.W.T + first.b)
    m = expected_mask(21, hidden.shape, 0.5)
    np.testing.assert_allclose(chain(X), (m * hidden / 0.5) @ last.W.T + last.b, rtol=1e-12)
    Δ = RNG.normal(size=(N, 2))
    dx = chain.back(Δ)
    dhidden = (Δ @ last.W) * m / 0.5 * (1 - hidden ** 2)
    np.testing.assert_allclose(dx, dhidden @ first.W, rtol=1e-12)
    np.testing.assert_allclose(chain.grads["0.W"], dhidden.T @ X, rtol=1e-12)
    np.testing.assert_allclose(chain.grads["2.W"], Δ.T @ (m * hidden / 0.5), rtol=1e-12)
    chain.eval()
    np.testing.assert_allclose(chain(X), hidden @ last.W.T + last.b, rtol=1e-12)
    assert "Dropout" not in str(chain.derivation) and "m" not in chain.derivation.gradients
    assert flux.gradcheck(chain, X, seed=4) < 1e-6


def test_flux_train_trains_a_chain_with_dropout_step_by_step():
    from flux.step import TrainStep
    from flux.train import default_step, evaluate

    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(64, K))
    targets = inputs[:, :2] * 2
    chain = chain_with_dropout()
    assert not isinstance(default_step(chain, flux.mse, flux.SGD(0.1)), TrainStep)
    before = flux.mse(chain.eval()(inputs), targets)
    history = flux.train(chain.train(), flux.mse, (inputs, targets), flux.Adam(1e-2), epochs=10, rng=0,
                         progress=False)
    assert len(history["loss"]) == 10
    assert chain.training and chain[1].training  # still training: flux.train evaluates in evaluation mode, then back
    np.testing.assert_allclose(evaluate(chain, flux.mse, (inputs, targets))["loss"],
                               flux.mse(chain.eval()(inputs), targets), rtol=1e-6)
    assert flux.mse(chain(inputs), targets) < before / 2


def test_dropout_in_training_mode_inside_another_fused_model_is_a_definition_error():
    class Regularised(flux.Model):
        dense = Dense
        drop = Dropout

        def forward(self, x):
            return self.drop(self.dense(x))

    model = Regularised(dense=Dense(K, 3, rng=0, dtype=F64), drop=Dropout(0.5))
    with pytest.raises(flux.DefinitionError, match=r"Dropout\(0.5\) is in training mode inside a model compiled"):
        model(X)
    model.eval()
    np.testing.assert_allclose(model(X), model.dense(X), rtol=1e-12)


# ---- against PyTorch, where it is installed ----------------------------------------------------------------

def test_layer_norm_matches_torch(layers):
    torch = pytest.importorskip("torch")
    ln = layers["LayerNorm"][0]
    expected = torch.nn.functional.layer_norm(torch.tensor(X), (K,), torch.tensor(ln.γ), torch.tensor(ln.β),
                                              eps=1e-5).numpy()
    np.testing.assert_allclose(ln(X), expected, rtol=1e-12, atol=1e-12)


def test_rms_norm_and_bilinear_match_torch(layers):
    torch = pytest.importorskip("torch")
    rms = layers["RMSNorm"][0]
    expected = torch.nn.functional.rms_norm(torch.tensor(X), (K,), torch.tensor(rms.γ), eps=1e-5).numpy()
    np.testing.assert_allclose(rms(X), expected, rtol=1e-12, atol=1e-12)
    bilinear = layers["Bilinear"][0]
    weight = torch.tensor(np.stack([bilinear.params[f"{k}.W"] for k in range(4)]))
    expected = torch.nn.functional.bilinear(torch.tensor(X), torch.tensor(X2), weight, torch.tensor(bilinear.b))
    np.testing.assert_allclose(bilinear(X, X2), expected.numpy(), rtol=1e-12, atol=1e-12)
