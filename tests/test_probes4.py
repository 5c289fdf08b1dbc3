"""Regression tests for bugs found by the fourth round of probing (today's token workspace, written-parameter
refusals and layers with their own `back`).

Each test failed before its fix. Behaviour probes run on the NumPy tier (nothing to compile).
"""
import numpy as np
import pytest

import flux
from test_probes2 import F64, numpy_tier  # noqa: F401  (numpy_tier is a fixture: FLUX_TIER=numpy)


class Halved(flux.Dense):
    """A Dense whose own `back` halves Δ: a Chain holding it runs its layers in turn."""

    def back(self, Δ):
        return super().back(0.5 * Δ)


@pytest.mark.parametrize("make", [
    lambda: flux.Chain(flux.Recurrent(3, 4, 2, rng=1, dtype=F64), Halved(2, 2, rng=2, dtype=F64)),
    lambda: flux.Chain(flux.Recurrent(3, 4, 2, rng=1, dtype=F64), flux.Dense(2, 2, rng=2, dtype=F64), fuse=False),
])
def test_a_chain_run_in_turn_refuses_initial_and_carry_rather_than_ignore_them(numpy_tier, make):
    """Bug: a Chain running its layers in turn (a layer with its own back, fuse=False) dropped initial= and
    carry=True silently: chain(xs, initial=h₀) returned chain(xs), as if from zero."""
    chain = make()
    xs = np.random.default_rng(11).standard_normal((2, 4, 3))
    y = chain(xs)
    for options in ({"initial": np.ones((2, 4))}, {"carry": True}):
        with pytest.raises(TypeError, match=rf"Chain: {next(iter(options))}= cannot be applied: this Chain runs its "
                                            "layers in turn"):
            chain(xs, **options)
    np.testing.assert_array_equal(chain(xs), y)
    assert chain.back(np.ones_like(y)).shape == xs.shape


def test_step_reset_and_state_of_a_chain_run_in_turn_say_why_they_cannot_run(numpy_tier):
    """Bug: chain.reset(), chain.step(x) and chain.state of a Chain holding a layer with its own back raised
    "Chain.back: … put that layer in a Chain", naming a method not called and advice already followed."""
    chain = flux.Chain(flux.Recurrent(3, 4, 2, rng=1, dtype=F64), Halved(2, 2, rng=2, dtype=F64))
    calls = {"reset": lambda: chain.reset(), "step": lambda: chain.step(np.ones((2, 3))), "state": lambda: chain.state}
    for caller, call in calls.items():
        with pytest.raises(TypeError, match=rf"Chain.{caller}: Chain holds a sub-model that overrides Halved.back, "
                                            "so it runs its layers in turn"):
            call()
    plain = flux.Chain(flux.Recurrent(3, 4, 2, rng=1, dtype=F64), flux.Dense(2, 2, rng=2, dtype=F64))
    plain.reset()
    assert plain.step(np.ones((2, 3))).shape == (2, 2) and plain.state["0.hidden"].shape == (2, 4)
