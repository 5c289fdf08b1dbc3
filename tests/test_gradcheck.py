"""flux.gradcheck itself: it reports a wrong gradient, and not the rounding of central differences.

A gradient that is 1e-9 of the loss's scale (a parameter that barely matters) is resolved by (L₊ − L₋)/2ε only to
≈ u·Σ|R ⊙ y|/ε ≈ 1e-10: gradcheck used to report such a correct gradient 10–100 % "wrong" (a random recurrent cell
of test_properties with another seed failed at 3e-5; Richardson extrapolation agreed with the derived gradient).
"""
from __future__ import annotations

import numpy as np
import pytest

import flux


class Faint(flux.Model):
    """y = W·x + c·(V·x) with c = 1e-9: ∂L/∂V is a billionth of ∂L/∂W."""
    W = flux.param("m", "n")
    V = flux.param("m", "n")

    def forward(self, x):
        return self.W * x + 1e-9 * (self.V * x)


@pytest.fixture(scope="module")
def faint():
    rng = np.random.default_rng(0)
    return Faint(W=rng.standard_normal((3, 4)), V=rng.standard_normal((3, 4)), dtype=np.float64), \
        rng.standard_normal((2, 4))


def test_a_correct_faint_gradient_is_not_reported(faint):
    model, x = faint
    assert flux.gradcheck(model, x) < 1e-6


def test_a_wrong_gradient_is_reported(faint):
    model, x = faint

    class Wrong(Faint):
        def back(self, delta):
            dx = super().back(delta)
            self.grads["W"][...] *= 1.001  # a 0.1 % error in a gradient of ordinary size
            return dx

    wrong = Wrong(W=np.asarray(model.W).copy(), V=np.asarray(model.V).copy(), dtype=np.float64)
    with pytest.raises(flux.GradientCheckError, match=r"W: relative error 9\.99e-04"):
        flux.gradcheck(wrong, x)


def test_a_wrong_faint_gradient_is_reported_when_it_is_resolvable(faint):
    model, x = faint

    class Wrong(Faint):
        def back(self, delta):
            dx = super().back(delta)
            self.grads["V"][...] *= 2  # twice the faint gradient: off by 3e-9, which ε = 1e-4 resolves
            return dx

    wrong = Wrong(W=np.asarray(model.W).copy(), V=np.asarray(model.V).copy(), dtype=np.float64)
    with pytest.raises(flux.GradientCheckError) as failure:
        flux.gradcheck(wrong, x, eps=1e-4)
    assert "W: relative error" in str(failure.value)
    assert float(str(failure.value).split("V: relative error ")[1].split()[0]) > 1e-6
