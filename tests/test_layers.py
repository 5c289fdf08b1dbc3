"""Composition: Chain, sub-models, Parallel/Concat, slices; each compiled whole and checked numerically."""
import numpy as np
import pytest

import flux
from flux import Chain, Concat, Dense, Parallel, relu, tanh, σ
from models import Halves, TwoTower, perceptron

rng = np.random.default_rng(3)


def mlp(dtype=np.float64):
    return Chain(Dense(5, 8, relu, rng=1, dtype=dtype), Dense(8, 6, σ, rng=2, dtype=dtype),
                 Dense(6, 3, tanh, rng=3, dtype=dtype))


def test_three_layer_chain_gradcheck():
    assert flux.gradcheck(mlp(), rng.standard_normal((6, 5))) < 1e-6


def test_chain_is_one_compiled_call_and_matches_layer_by_layer():
    m = mlp()
    x = rng.standard_normal((4, 5))
    expected = x
    for layer in m.layers:
        expected = layer(expected)
    np.testing.assert_allclose(m(x), expected, rtol=1e-12)
    assert list(m.params) == ["0.W", "0.b", "1.W", "1.b", "2.W", "2.b"]
    assert m.params["1.W"] is m.layers[1].W  # the chain's parameters are its layers' arrays
    assert "0.W" in str(m.derivation.gradients)


def test_chain_back_and_update_reach_every_layer():
    m = mlp()
    x = rng.standard_normal((4, 5))
    m(x)
    m.back(np.ones((4, 3)))
    assert all(g.any() for g in m.grads.values())
    before = m.layers[0].W.copy()
    m.update(lr=0.1)
    assert not np.array_equal(before, m.layers[0].W)
    assert not any(g.any() for g in m.grads.values())


def test_kernels_are_shared_between_chains_of_the_same_structure():
    a = Chain(Dense(7, 4, relu, rng=0), Dense(4, 2))
    b = Chain(Dense(3, 9, relu, rng=1), Dense(9, 5))
    assert a.kernels is b.kernels
    assert Chain(Dense(7, 4, tanh), Dense(4, 2)).kernels is not a.kernels


def test_dense_initialisation_is_reproducible_and_scaled():
    assert np.array_equal(Dense(100, 50, relu, rng=5).W, Dense(100, 50, relu, rng=5).W)
    assert abs(Dense(1000, 200, relu, rng=0).W.std() - np.sqrt(2 / 1000)) < 0.002
    assert np.abs(Dense(100, 50, rng=0).W).max() <= np.sqrt(6 / 150)
    assert not Dense(4, 3).b.any()


def test_two_tower_split_and_merge():
    model = TwoTower(a=perceptron(seed=1), b=perceptron(seed=2))
    x = rng.standard_normal((5, 5))
    np.testing.assert_allclose(model(x), model.a(x) + model.b(x))
    assert list(model.params) == ["a.W", "a.b", "b.W", "b.b"]
    assert flux.gradcheck(model, x) < 1e-6


def test_concat_of_two_branches():
    model = Concat(Dense(4, 3, tanh, rng=0, dtype=np.float64), Dense(4, 2, σ, rng=1, dtype=np.float64))
    x = rng.standard_normal((5, 4))
    y = model(x)
    assert y.shape == (5, 5)
    np.testing.assert_allclose(y[:, :3], model.branches[0](x))
    assert flux.gradcheck(model, x) < 1e-6


def test_parallel_sum():
    model = Parallel(Dense(4, 3, tanh, rng=0, dtype=np.float64), Dense(4, 3, rng=1, dtype=np.float64), join="sum")
    assert flux.gradcheck(model, rng.standard_normal((3, 4))) < 1e-6


def test_slice_split():
    model = Halves(A=rng.standard_normal((2, 3)), B=rng.standard_normal((4, 5)), dtype=np.float64)
    x = rng.standard_normal((6, 8))
    np.testing.assert_allclose(model(x)[:, :2], np.tanh(x[:, :3] @ model.A.T))
    assert flux.gradcheck(model, x) < 1e-6


def test_mismatched_layer_sizes_are_refused_naming_both_parameters():
    with pytest.raises(ValueError, match="1.W has 5 along axis 1 but 0.W has 4 along axis 0"):
        Chain(Dense(3, 4), Dense(5, 2))(np.zeros((1, 3), dtype=np.float32))


def test_layers_with_different_dtypes_are_refused():
    with pytest.raises(TypeError, match="different dtypes"):
        Chain(Dense(3, 4, dtype=np.float64), Dense(4, 2))


def test_unfused_chain_agrees_with_the_fused_one():
    fused, unfused = mlp(), mlp()
    unfused.fuse = False
    x, Δ = rng.standard_normal((5, 5)), rng.standard_normal((5, 3))
    np.testing.assert_allclose(unfused(x), fused(x), rtol=1e-12)
    np.testing.assert_allclose(unfused.back(Δ), fused.back(Δ), rtol=1e-12)
    for name, g in fused.grads.items():
        np.testing.assert_allclose(unfused.grads[name], g, rtol=1e-12)
    twice = Chain(Dense(3, 3, tanh, rng=0, dtype=np.float64), tanh, fuse=False)  # one function object, two tapes
    assert flux.gradcheck(Chain(twice, tanh, fuse=False), rng.standard_normal((4, 3))) < 1e-6


# ---- Dense's arguments (issue 12, item 15): activations by name, NumPy functions refused, integer sizes ----------

@pytest.mark.parametrize("name, function", [("relu", flux.relu), ("sigmoid", flux.σ), ("σ", flux.σ),
                                            ("tanh", flux.tanh), ("softmax", flux.softmax)])
def test_an_activation_given_by_name_is_flux_function(name, function):
    by_name, by_object = Dense(4, 3, name, rng=0), Dense(4, 3, function, rng=0)
    assert by_name.activation is function
    np.testing.assert_array_equal(by_name.params["W"], by_object.params["W"])  # relu: He initialisation too
    if name == "relu":
        x = rng.standard_normal((2, 4)).astype(np.float32)
        np.testing.assert_array_equal(by_name(x), by_object(x))


def test_an_unknown_activation_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"Dense: unknown activation 'rleu'.*'tanh', 'relu'"):
        Dense(4, 3, "rleu")


@pytest.mark.parametrize("function, advice", [(np.tanh, "flux.tanh"), (np.exp, "flux.exp"),
                                              (np.abs, "flux.abs"), (np.maximum, "flux's functions")])
def test_a_numpy_activation_says_which_flux_function_to_use(function, advice):
    with pytest.raises(TypeError, match=rf"NumPy/math function.*{advice}"):
        Dense(4, 3, function)


def test_sizes_must_be_integers():
    with pytest.raises(TypeError, match=r"Dense: n_in must be an integer.*'4'"):
        Dense("4", 3)
    with pytest.raises(TypeError, match="n_out"):
        Dense(4, 3.0)
    with pytest.raises(ValueError, match="n_out must be a positive"):
        Dense(4, 0)
    with pytest.raises(TypeError, match="activation is a flux function"):
        Dense(4, 3, 5)
    assert Dense(np.int64(4), 3).params["W"].shape == (3, 4)
