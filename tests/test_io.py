"""save/load: bit-exact round trips, architectures rebuilt, resumed training identical, bad files refused whole."""
import json

import numpy as np
import pytest

import flux
from flux import Chain, Dense, Parallel, relu, tanh, σ
from models import Perceptron, TwoTower, perceptron


class Scaled(flux.Model):
    """y = s·tanh(W x): plain configuration (a float, a tuple, a dict, a dtype, an array) besides the parameter."""

    W = flux.param("m", "n")

    def __init__(self, W, scale=2.0, **settings):
        super().__init__(W=W, dtype=np.float64)
        self.scale, self.labels, self.settings = scale, ("a", "b"), dict(settings)
        self.mask = np.array([1.0, 0.0])

    def forward(self, x):
        return tanh(self.W * x) * self.scale


MINE = [Perceptron, TwoTower, Scaled]  # this file's own model classes: loading them is allowed explicitly


def separable(n=64, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, size=(n, 2))
    return X, (X[:, 0] - X[:, 1] > 0).astype(np.float64)[:, None]


def assert_same_params(a, b):
    assert list(a.params) == list(b.params)
    for k in a.params:
        assert a.params[k].dtype == b.params[k].dtype
        np.testing.assert_array_equal(a.params[k], b.params[k])


def test_round_trip_is_bit_exact(tmp_path):
    model = perceptron(m=3, n=5, dtype=np.float32)
    model.params["W"][0, 0] = np.nextafter(np.float32(1), np.float32(2))
    flux.save(model, tmp_path / "p.npz")
    loaded = flux.load(tmp_path / "p.npz", classes=MINE)
    assert type(loaded) is Perceptron and loaded.dtype == np.float32
    assert_same_params(model, loaded)
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    np.testing.assert_array_equal(model(x), loaded(x))
    assert all(not g.any() for g in loaded.grads.values()) and set(loaded.grads) == set(model.params)


def test_chains_dense_layers_and_activation_functions_round_trip(tmp_path):
    model = Chain(Dense(2, 4, relu, rng=0, dtype=np.float64), Dense(4, 1, σ, rng=1, dtype=np.float64))
    flux.save(model, tmp_path / "chain.npz")
    loaded = flux.load(tmp_path / "chain.npz")
    assert type(loaded) is Chain and len(loaded) == 2
    assert loaded[0].activation is flux.relu and loaded[1].activation is flux.σ
    assert_same_params(model, loaded)
    x = np.random.default_rng(1).standard_normal((3, 2))
    np.testing.assert_array_equal(model(x), loaded(x))


def test_nested_models_configuration_and_shared_layers_round_trip(tmp_path):
    tower = TwoTower(a=perceptron(m=2, n=3), b=perceptron(m=2, n=3, seed=1))
    scaled = Scaled(np.ones((2, 2)), scale=0.5, mode="fast", depth=3)
    shared = Dense(3, 3, dtype=np.float64, rng=2)
    model = Parallel(Chain(shared, shared), Dense(3, 2, tanh, dtype=np.float64, rng=3), join="sum")
    for original in (tower, scaled, model):
        flux.save(original, tmp_path / "m.npz")
        loaded = flux.load(tmp_path / "m.npz", classes=MINE)
        assert type(loaded) is type(original)
        assert_same_params(original, loaded)
    flux.save(scaled, tmp_path / "s.npz")
    loaded_scaled = flux.load(tmp_path / "s.npz", classes=MINE)
    assert loaded_scaled.scale == 0.5 and loaded_scaled.labels == ("a", "b")
    assert loaded_scaled.settings == {"mode": "fast", "depth": 3} and loaded_scaled.dtype == np.float64
    np.testing.assert_array_equal(loaded_scaled.mask, scaled.mask)
    flux.save(model, tmp_path / "shared.npz")
    loaded = flux.load(tmp_path / "shared.npz")
    assert loaded.branches[0][0] is loaded.branches[0][1] and loaded.join == "sum"


def test_save_load_and_continue_training_equals_uninterrupted_training(tmp_path):
    X, Y = separable()
    rng = np.random.default_rng(5)
    W = rng.standard_normal((1, 2))

    def run(model, optimiser, generator, epochs):
        flux.train(model, flux.binarycrossentropy, (X, Y), optimiser, epochs=epochs, batch_size=8, rng=generator)

    straight = Perceptron(W=W, b=np.zeros(1), dtype=np.float64)
    run(straight, flux.Adam(lr=0.05), np.random.default_rng(11), epochs=4)

    first = Perceptron(W=W, b=np.zeros(1), dtype=np.float64)
    generator, optimiser = np.random.default_rng(11), flux.Adam(lr=0.05)
    run(first, optimiser, generator, epochs=2)
    flux.save(first, tmp_path / "checkpoint.npz", optimiser=optimiser)
    del first, optimiser
    resumed = flux.load(tmp_path / "checkpoint.npz", classes=MINE)
    resumed_optimiser = flux.load_optimiser(tmp_path / "checkpoint.npz")
    assert type(resumed_optimiser) is flux.Adam and resumed_optimiser.step_count == 16
    run(resumed, resumed_optimiser, generator, epochs=2)
    assert_same_params(straight, resumed)


def test_load_into_an_existing_model(tmp_path):
    source, target = perceptron(m=2, n=3, seed=0), perceptron(m=2, n=3, seed=1)
    target(np.ones((1, 3)))
    flux.save(source, tmp_path / "p.npz")
    assert flux.load(tmp_path / "p.npz", into=target) is target
    assert_same_params(source, target)
    with pytest.raises(RuntimeError, match="no forward pass"):
        target.back(np.ones((1, 2)))  # the tape made with the old parameters is gone


def test_load_into_a_mismatched_architecture_names_the_parameter_and_leaves_it_untouched(tmp_path):
    flux.save(perceptron(m=2, n=3), tmp_path / "small.npz")
    big = perceptron(m=4, n=3, seed=2)
    before = {k: p.copy() for k, p in big.params.items()}
    with pytest.raises(ValueError, match=r"parameter 'W' has shape \(2, 3\) in .* but \(4, 3\) in Perceptron"):
        flux.load(tmp_path / "small.npz", into=big)
    assert_same_params(big, type(big)(**before, dtype=np.float64))
    tower = TwoTower(a=perceptron(m=2, n=3), b=perceptron(m=2, n=3, seed=1))
    with pytest.raises(ValueError, match="'a.W'"):
        flux.load(tmp_path / "small.npz", into=tower)
    with pytest.raises(ValueError, match="float64 in .* but float32"):
        flux.load(tmp_path / "small.npz", into=perceptron(m=2, n=3, dtype=np.float32))


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_corrupt_or_truncated_files_raise_a_clear_error_and_never_half_load(tmp_path, damage):
    path = tmp_path / "p.npz"
    flux.save(perceptron(m=2, n=3), path, optimiser=flux.SGD(lr=0.1))
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) * 2 // 3]
    elif damage == "flip":  # a byte inside the stored W array: the zip CRC catches it
        start = data.find(b"\x93NUMPY", data.find(b"param/W"))
        data[start + 150] ^= 0xFF
    elif damage == "garbage":
        data = bytearray(b"not a model at all" * 10)
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    target = perceptron(m=2, n=3, seed=4)
    before = {k: p.copy() for k, p in target.params.items()}
    with pytest.raises(ValueError, match="truncated or corrupted|not a flux model"):
        flux.load(path)
    with pytest.raises(ValueError, match="truncated or corrupted|not a flux model"):
        flux.load(path, into=target)
    with pytest.raises(ValueError, match="truncated or corrupted|not a flux model"):
        flux.load_optimiser(path)
    for k, p in target.params.items():
        np.testing.assert_array_equal(p, before[k])


def test_a_file_that_is_not_a_flux_model(tmp_path):
    np.savez(tmp_path / "other.npz", W=np.ones(3))
    with pytest.raises(ValueError, match="not a flux model"):
        flux.load(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError):
        flux.load(tmp_path / "missing.npz")


def test_an_unsaveable_attribute_is_named_and_the_old_file_survives(tmp_path):
    path = tmp_path / "p.npz"
    model = perceptron(m=2, n=3)
    flux.save(model, path)
    model.callback = lambda: None
    with pytest.raises(TypeError, match=r"model\.callback = <function"):
        flux.save(model, path)
    assert_same_params(flux.load(path, classes=MINE), model)
    assert [p.name for p in tmp_path.iterdir()] == ["p.npz"]  # no temporary file left behind


def test_a_class_that_is_not_allowed_is_a_clear_error(tmp_path):
    path = tmp_path / "p.npz"
    flux.save(perceptron(m=2, n=3), path)
    arrays = dict(np.load(path))
    description = json.loads(str(arrays.pop("__flux__")))
    description["model"]["class"] = "models:NoSuchModel"
    np.savez(path, **arrays, __flux__=np.array(json.dumps(description)))
    with pytest.raises(ValueError, match="'models:NoSuchModel'.*neither one of flux's classes.*classes=.*into=model"):
        flux.load(path, classes=MINE)


def test_optimiser_state_round_trip_and_mismatch(tmp_path):
    model = perceptron(m=2, n=3)
    optimiser = flux.RMSProp(lr=0.01, rho=0.5)
    for name, g in model.grads.items():
        g.fill(1.0)
    model._set_has_grads(True)
    model.update(optimiser)
    flux.save(model, tmp_path / "p.npz", optimiser=optimiser)
    restored = flux.load_optimiser(tmp_path / "p.npz")
    assert restored.hyperparameters == optimiser.hyperparameters and restored.step_count == 1
    for k, a in optimiser.state["a"].items():
        np.testing.assert_array_equal(restored.state["a"][k], a)
    into = flux.RMSProp()
    assert flux.load_optimiser(tmp_path / "p.npz", into=into) is into and into.rho == 0.5
    adam = flux.Adam()
    with pytest.raises(ValueError, match="belongs to 'RMSProp'"):
        flux.load_optimiser(tmp_path / "p.npz", into=adam)
    assert adam.step_count == 0
    flux.save(model, tmp_path / "bare.npz")
    with pytest.raises(ValueError, match="no optimiser state"):
        flux.load_optimiser(tmp_path / "bare.npz")
    with pytest.raises(ValueError, match="'W'"):
        flux.save(perceptron(m=4, n=3), tmp_path / "q.npz", optimiser=optimiser)
