"""The fused training step's module: forward, loss, backward and the optimiser's update in one kernel.

    train_step(x, target, θ…, scale, g…, state…, step_count, hyper…) → (mean loss, status)

The objective ℓ(f(x), t) is one derivation; its loss is the batch mean (scale = 1/N per sample) and each gradient is
Σₙ ∂ℓₙ/∂θ written into g. Before any parameter changes the kernel checks that the loss and every gradient are
finite (status −1: the loss, k: gradient k; −2: all finite, updated). The optimiser's rule (SymPy maths from
`Optimiser.rules()`, e.g. θ ← θ − η g) is `update`, applied to every entry of each flattened θ: a call of the
built-in optimiser's kernel shipped compiled in flux/optimiser_updates.py, or the rule printed into the module.
"""
from __future__ import annotations

from .feedforward import identifier, shape_checks
from .module import module_source
from .optimiser_update import update_call, update_source
from .printer import Argument, Result, describe, generate_kernel_source
from ..maths.nodes import Generated


def generate_step_source(derivation, rules, optimiser_name: str, dtype, key: str) -> str:
    """The module text: shape helpers and `train_step(x, target, θ…, scale, g…, state…, step_count, hyper…)` (a
    recurrent model's is written by `flux.generate.recurrent_step`)."""
    x, target = derivation.inputs
    inputs = [Argument(x, identifier(x.name), True), Argument(target, identifier(target.name), True)]
    params = [Argument(p, identifier(name), False) for name, p in derivation.params.items()]
    (Δ,) = derivation.upstream
    scale = Argument(Δ, "scale", True)
    gradients = [f"grad_{a.name}" for a in params]
    # the optimiser's arrays and numbers get prefixes no user's name can have (identifier() encodes opt_…, hyper_…)
    states = [f"opt_{kind}_{a.name}" for a in params for kind in rules.state]
    hyper = [f"hyper_{h}" for h in rules.hyperparameters]
    results = [Result("loss", derivation.output.xreplace({}), mode="mean")]
    results += [Result(g, derivation.gradients[a.symbol.name], mode="assign", into=g) for a, g in zip(params, gradients)]
    epilogue = ["if not math.isfinite(loss):", "    return loss, -1"]
    for k, g in enumerate(gradients):
        epilogue += [f"if not all_finite({g}):", f"    return loss, {k}"]
    epilogue += [update_call(rules, a.name, g, hyper) for a, g in zip(params, gradients)]
    epilogue.append("return loss, -2")
    kernel = generate_kernel_source(
        "train_step", inputs + params + [scale] + [Argument(Generated(g, *a.symbol.shape), g, False)
                                                     for a, g in zip(params, gradients)],
        results, doc=f"one {optimiser_name} step on the batch mean of {describe(derivation.output, width=200)}",
        extra_arguments=states + ["step_count"] + hyper, epilogue=epilogue,
    )
    docstring = f"flux fused training step for {derivation.name} with {optimiser_name} ({dtype.name}). Do not edit."
    return module_source(key, docstring, dtype, helpers=[shape_checks(params, inputs)],
                         kernels=[update_source(rules, optimiser_name), kernel])
