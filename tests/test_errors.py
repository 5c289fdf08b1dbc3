"""Bad input gets a clear error naming the model and the symbol; nothing is left half-updated."""
import numpy as np
import pytest

from models import perceptron

rng = np.random.default_rng(7)


def snapshot(model):
    return {k: v.copy() for k, v in model.params.items()}, {k: v.copy() for k, v in model.grads.items()}


def assert_unchanged(model, before):
    params, grads = before
    for k, v in model.params.items():
        np.testing.assert_array_equal(v, params[k])
    for k, v in model.grads.items():
        np.testing.assert_array_equal(v, grads[k])


@pytest.fixture
def trained():
    """A perceptron with some gradient accumulated, so a failed call could visibly damage it."""
    p = perceptron()
    p(rng.standard_normal((2, 5)))
    p.back(np.ones((2, 3)))
    return p


@pytest.mark.parametrize("bad, error, message", [
    (np.zeros((4, 6)), ValueError, r"Perceptron: input x must have 5 features along its last axis, got shape \(4, 6\)"),
    (np.zeros((2, 4, 6)), ValueError, r"Perceptron: input x must have 5 features along its last axis, got shape "
                                      r"\(2, 4, 6\)"),  # (N, T, 5) is N·T samples, as for PyTorch's Linear
    (np.zeros(()), ValueError, r"Perceptron: input x must have shape \(N, 5\) or \(5,\)"),
    # integers are accepted when exactly representable (test_run); 2⁵³ + 1 is not, in float64
    (np.full((4, 5), 2**53 + 1), TypeError, "Perceptron: input x must be a floating-point array, got dtype int64"),
    (np.full((4, 5), 2**64 - 1, dtype=np.uint64), TypeError, "input x must be a floating-point array, got dtype uint64"),
    (np.zeros((4, 5), dtype=complex), TypeError, "input x must be a floating-point array, got dtype complex128"),
    (np.array([[object()] * 5]), TypeError, "input x must be a floating-point array, got dtype object"),
])
def test_bad_inputs(trained, bad, error, message):
    before = snapshot(trained)
    with pytest.raises(error, match=message):
        trained(bad)
    assert_unchanged(trained, before)


def test_back_errors(trained):
    before = snapshot(trained)
    with pytest.raises(RuntimeError, match=r"Perceptron.back: there is no forward pass"):
        trained.back(np.ones((2, 3)))  # the fixture's forward was already back-propagated
    trained(rng.standard_normal((2, 5)))
    with pytest.raises(ValueError, match=r"Perceptron.back: Δ must have the output's shape \(2, 3\), got \(2, 4\)"):
        trained.back(np.ones((2, 4)))
    with pytest.raises(TypeError, match="Δ must be a floating-point array"):
        trained.back(np.full((2, 3), 2**53 + 1))
    assert_unchanged(trained, before)
    trained.back(np.ones((2, 3)))
    with pytest.raises(RuntimeError, match="each forward pass can be back-propagated once"):
        trained.back(np.ones((2, 3)))


def test_update_without_gradient():
    p = perceptron()
    with pytest.raises(RuntimeError, match="Perceptron.update: no gradient has been accumulated"):
        p.update(lr=0.1)


def test_construction_errors():
    with pytest.raises(TypeError, match="Perceptron needs the parameter b"):
        flux_perceptron(W=np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"parameter W must have 2 dimension\(s\) \(m × n\), got shape \(3,\)"):
        flux_perceptron(W=np.zeros(3), b=np.zeros(3))
    with pytest.raises(ValueError, match="parameter b has 4 along 'm'"):
        flux_perceptron(W=np.zeros((3, 5)), b=np.zeros(4))
    with pytest.raises(TypeError, match="Perceptron has no parameter or sub-model c"):
        flux_perceptron(W=np.zeros((3, 5)), b=np.zeros(3), c=1)


def flux_perceptron(**kwargs):
    from models import Perceptron

    return Perceptron(**kwargs)
