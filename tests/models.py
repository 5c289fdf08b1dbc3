"""Model classes shared by the tests (module level, so their kernels compile once and are cached on disk)."""
import numpy as np

import flux
from flux import hadamard, tanh, σ


class Perceptron(flux.Model):
    """The seed's perceptron: y = σ(W x + b)."""

    W = flux.param("m", "n")
    b = flux.param("m")

    def forward(self, x):
        return σ(self.W * x + self.b)


class TwoLayer(flux.Model):
    """Two layers in one forward: y = V tanh(W x + b) + c."""

    W = flux.param("h", "n")
    b = flux.param("h")
    V = flux.param("m", "h")
    c = flux.param("m")

    def forward(self, x):
        return self.V * tanh(self.W * x + self.b) + self.c


class GatedCell(flux.Model):
    """A gated cell: g = σ(Wg x + bg), y = g ⊙ tanh(Wc x + bc) + (1 − g) ⊙ x."""

    Wg = flux.param("n", "n")
    bg = flux.param("n")
    Wc = flux.param("n", "n")
    bc = flux.param("n")

    def forward(self, x):
        g = σ(self.Wg * x + self.bg)
        return hadamard(g, tanh(self.Wc * x + self.bc)) + x - hadamard(g, x)


class TwoTower(flux.Model):
    """Split, then merge by sum: y = a(x) + b(x)."""

    a = Perceptron
    b = Perceptron

    def forward(self, x):
        return self.a(x) + self.b(x)


def perceptron(m=3, n=5, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return Perceptron(W=rng.standard_normal((m, n)), b=rng.standard_normal(m), dtype=dtype)


def two_layer(n=4, h=6, m=3, seed=0):
    rng = np.random.default_rng(seed)
    return TwoLayer(W=rng.standard_normal((h, n)), b=rng.standard_normal(h), V=rng.standard_normal((m, h)),
                    c=rng.standard_normal(m), dtype=np.float64)


def gated_cell(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return GatedCell(Wg=rng.standard_normal((n, n)), bg=rng.standard_normal(n), Wc=rng.standard_normal((n, n)),
                     bc=rng.standard_normal(n), dtype=np.float64)


class LossOf(flux.Model):
    """A loss as a two-input model, so gradcheck sees its per-sample values: ℓ(z, t)."""

    def __init__(self, loss):
        super().__init__()
        self.loss = loss

    def forward(self, z, t):
        return self.loss(z, t)


class SoftmaxCrossEntropy(flux.Model):
    """crossentropy(softmax(z), t)."""

    def forward(self, z, t):
        return flux.crossentropy(flux.softmax(z), t)


class Halves(flux.Model):
    """Split x into two parts, transform each, and stack them back: [tanh(A x₁); σ(B x₂)]."""

    A = flux.param("p", "k")
    B = flux.param("q", "r")

    def forward(self, x):
        first, second = flux.split(x, 3)
        return flux.concat(tanh(self.A * first), σ(self.B * second))
