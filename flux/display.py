"""Showing the maths: plain text for terminals, LaTeX for notebooks and papers."""
from __future__ import annotations

import numpy as np


def derivation_text(derivation) -> str:
    """The maths and gradients of a derivation as readable text."""
    import sympy

    lines = [f"{derivation.name}:"]
    names = ["y"] if len(derivation.outputs) == 1 else [f"y{k}" for k in range(1, len(derivation.outputs) + 1)]
    for name, out in zip(names, derivation.outputs):
        lines.append(f"  {name} = {sympy.sstr(out)}")
    for name, previous, new in derivation.states:
        lines.append(f"  {name}[t] = {sympy.sstr(new)}")
    for name, gradient in derivation.gradients.items():
        lines.append(f"  ∂L/∂{name} = {sympy.sstr(gradient)}")
    return "\n".join(lines)


def model_text(model) -> str:
    """`Perceptron(W: 3×5, b: 3; float32; 18 parameters)`."""
    shapes = ", ".join(f"{n}: {'×'.join(map(str, p.shape))}" for n, p in model.params.items())
    count = model.parameter_count
    return f"{type(model).__name__}({shapes}{'; ' if shapes else ''}{model.dtype}; {count} parameters)"


def class_latex(cls) -> str | None:
    return None


def model_latex(model) -> str | None:
    return None


def derivation_latex(derivation) -> str:
    import sympy

    return r" \\ ".join(sympy.latex(o) for o in derivation.outputs)


__all__ = ["derivation_text", "model_text", "np"]
