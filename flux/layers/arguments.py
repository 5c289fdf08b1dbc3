"""The checks the built-in layers' constructors share: each error names the layer, the argument and what it got."""
from __future__ import annotations

from typing import Any

import numpy as np


def check_size(layer: str, name: str, size: Any) -> None:
    """A number of features: a positive integer."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise TypeError(f"{layer}: {name} must be an integer number of features, got {size!r} ({type(size).__name__})")
    if size < 1:
        raise ValueError(f"{layer}: {name} must be a positive number of features, got {size}")


def check_epsilon(layer: str, eps: Any) -> None:
    """ε inside a root: a positive number."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.integer, np.floating)) or not eps > 0:
        raise ValueError(f"{layer}: eps must be a positive number (it keeps the root away from 0), got {eps!r}")


def check_probability(layer: str, p: Any) -> None:
    """A drop probability: 0 ≤ p < 1 (p = 1 would drop everything and divide by 0)."""
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)) or not 0 <= p < 1:
        raise ValueError(f"{layer}: p must be a probability 0 ≤ p < 1 of dropping each entry, got {p!r}")
