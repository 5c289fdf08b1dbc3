"""gradcheck: every derived gradient against central finite differences."""
from __future__ import annotations

import numpy as np

from .run.state import runtime_of


class GradientCheckError(AssertionError):
    """A derived gradient disagrees with finite differences."""


def gradcheck(model, *inputs: np.ndarray, eps: float | None = None, tolerance: float = 1e-6,
              max_entries: int = 64, seed: int = 0, raise_on_failure: bool = True,
              initial: dict | None = None) -> float:
    """The worst relative error ‖g − ĝ‖/max(‖g‖, ‖ĝ‖, r/tolerance) over every parameter and input gradient, where
    r ≈ 4·u·Σ|R ⊙ y|/ε per entry is what central differences resolve (u the unit roundoff of the model's dtype):
    a gradient too faint for differences to check to `tolerance` is checked as far as they can.

    L = Σ R ⊙ model(x) for a fixed random R, so Δ = R; ĝ is (L(θ + ε) − L(θ − ε)) / 2ε on up to `max_entries`
    entries of each array. The model's parameters and gradients are left exactly as they were.
    Use float64 models: float32 cannot resolve errors near 1e-6.
    A recurrent model takes sequences; `initial` ({state name: (N, size) array}) also checks ∂L/∂h₀ (`state_grads`).
    """
    from .layers.dropout import Dropout, draws_masks

    if draws_masks(model) and not (isinstance(model, Dropout) and len(inputs) == 2):  # a mask drawn on every call:
        # the differences would compare different functions (a Dropout given its mask m is checked in x and m)
        name = type(model).__name__
        raise TypeError(f"gradcheck: {name} holds a Dropout in training mode, which draws a new mask on every call, "
                        f"so finite differences cannot check its gradients; call {name.lower()}.eval() first")
    rng = np.random.default_rng(seed)
    dtype = model.dtype if model.params else np.result_type(*inputs, np.float32)
    inputs = [np.array(x, dtype=dtype) for x in inputs]
    eps = eps if eps is not None else (1e-6 if dtype == np.float64 else 1e-2)
    saved_grads = {k: g.copy() for k, g in model.grads.items()}
    had_grads = runtime_of(model).has_grads
    options = {} if initial is None else {"initial": {k: np.array(v, dtype=dtype) for k, v in initial.items()}}
    outputs = model(*inputs, **options)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    weights = [rng.standard_normal(np.shape(o)) for o in outputs]
    # what central differences can resolve: each L is a sum of terms Σ|R ⊙ y| rounded at the model's precision, so
    # (L₊ − L₋)/2ε carries ≈ 4·u·Σ|R ⊙ y|/ε of noise per entry (an array whose gradient is 1e-9 of the loss's scale
    # is otherwise "wrong" by 10–100 % of pure rounding)
    noise = 4 * np.finfo(dtype).eps * float(sum(np.sum(np.abs(w * y)) for w, y in zip(weights, outputs))) / eps

    def loss() -> float:
        ys = model(*inputs, **options)
        ys = ys if isinstance(ys, tuple) else (ys,)
        return float(sum(np.sum(w * y) for w, y in zip(weights, ys)))

    try:
        model.zero_grad()
        derived = model.back(tuple(weights) if len(weights) > 1 else weights[0])
        derived = derived if isinstance(derived, tuple) else (derived,)
        analytic = {f"input {i}": g for i, g in enumerate(derived)}
        analytic.update({k: g.copy() for k, g in model.grads.items()})
        analytic.update({f"initial {k}": g for k, g in (model.state_grads.items() if initial is not None else ())})
        targets = {f"input {i}": x for i, x in enumerate(inputs)}
        targets.update(model.params)
        targets.update({f"initial {k}": v for k, v in options.get("initial", {}).items()})
        worst, report = 0.0, []
        for name, array in targets.items():
            flat = array.reshape(-1)
            picks = rng.choice(flat.size, size=min(flat.size, max_entries), replace=False) if flat.size else []
            numeric = np.zeros(len(picks))
            for k, index in enumerate(picks):
                original = flat[index]
                flat[index] = original + eps
                plus = loss()
                flat[index] = original - eps
                minus = loss()
                flat[index] = original
                numeric[k] = (plus - minus) / (2 * eps)
            derived_values = analytic[name].reshape(-1)[picks] if len(picks) else np.zeros(0)
            # relative to the gradient, or to the smallest one whose error at `tolerance` differences resolve
            resolved = noise * np.sqrt(len(picks)) / tolerance
            scale = max(np.linalg.norm(derived_values), np.linalg.norm(numeric), resolved)
            error = float(np.linalg.norm(derived_values - numeric) / scale) if scale > 0 else 0.0
            report.append(f"  {name}: relative error {error:.2e}")
            worst = max(worst, error)
    finally:
        for k, g in model.grads.items():
            g[...] = saved_grads[k]
        model._set_has_grads(had_grads)
        runtime_of(model).drop_tape()
    if raise_on_failure and worst > tolerance:
        raise GradientCheckError(f"gradcheck of {type(model).__name__} failed (tolerance {tolerance:.0e}):\n"
                                 + "\n".join(report))
    return worst
