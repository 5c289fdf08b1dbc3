"""Normalisation layers, written in the same syntax as user layers: per sample (per token of a sequence, inside a
model that declares flux.tokens), over its n features.

    norm = flux.LayerNorm(64)          # y = γ ⊙ (x − μ)/√(σ² + ε) + β
    norm = flux.RMSNorm(64)            # y = γ ⊙ x/√(mean(x²) + ε)

Both are PyTorch's (torch.nn.LayerNorm / torch.nn.RMSNorm over the last axis): the variance is the biased one (the
mean of squares, divided by n), ε sits inside the root, γ starts at 1 and β at 0.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..model import Model
from ..trace.language import hadamard, hadamard_power, mean, param
from .activations import sqrt
from .arguments import check_epsilon, check_size


class LayerNorm(Model):
    """Layer normalisation (Ba, Kiros & Hinton 2016), per sample over its n features:

        μ = (1/n) Σᵢ xᵢ,   σ² = (1/n) Σᵢ (xᵢ − μ)²,   y = γ ⊙ (x − μ) / √(σ² + ε) + β

    with a learnable gain γ ∈ ℝⁿ (initially 1) and bias β ∈ ℝⁿ (initially 0), ε = 1e-5 (`eps=`), as PyTorch's
    `nn.LayerNorm(n)`.
    """

    γ = param("n")
    β = param("n")
    eps = 1e-5  # the class's maths (LayerNorm.derivation) reads the default

    def __init__(self, n: int, *, eps: float = 1e-5, dtype: Any = None):
        check_size(type(self).__name__, "n", n)
        check_epsilon(type(self).__name__, eps)
        super().__init__(γ=np.ones(n), β=np.zeros(n), dtype=dtype)
        self.eps = float(eps)

    def _check_attributes(self) -> None:
        super()._check_attributes()
        check_epsilon(type(self).__name__, self.eps)

    def forward(self, x):
        centred = x - mean(x)
        variance = mean(hadamard_power(centred, 2))  # elementwise also on a sequence's d×T matrix
        return hadamard(self.γ, centred / sqrt(variance + self.eps)) + self.β


class RMSNorm(Model):
    """Root-mean-square normalisation (Zhang & Sennrich 2019), per sample over its n features:

        y = γ ⊙ x / √((1/n) Σᵢ xᵢ² + ε)

    with a learnable gain γ ∈ ℝⁿ (initially 1), ε = 1e-5 (`eps=`), as PyTorch's `nn.RMSNorm(n, eps=1e-5)`.
    """

    γ = param("n")
    eps = 1e-5  # the class's maths (RMSNorm.derivation) reads the default

    def __init__(self, n: int, *, eps: float = 1e-5, dtype: Any = None):
        check_size(type(self).__name__, "n", n)
        check_epsilon(type(self).__name__, eps)
        super().__init__(γ=np.ones(n), dtype=dtype)
        self.eps = float(eps)

    def _check_attributes(self) -> None:
        super()._check_attributes()
        check_epsilon(type(self).__name__, self.eps)

    def forward(self, x):
        return hadamard(self.γ, x / sqrt(mean(hadamard_power(x, 2)) + self.eps))

