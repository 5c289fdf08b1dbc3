"""What a fused training step would silently skip, refused before it runs.

`flux.compile_step` fuses forward, loss, backward and the optimiser's update into one kernel: it never calls a
model's `back` or `update`, and it never reads `model.grads`. So
* a class that overrides `back` or `update` (freezing a parameter in `update`, clipping Δ in `back`) would be trained
  as if it did not: `compile_step` refuses it, naming the method, and `flux.train` trains such a model step by step
  through its own methods (a sub-model's are refused there too: the model's own fused `back` would not call them);
* gradients that `model.back` accumulated and no `update` applied would be left out of the step and applied by the
  next `update`, stale: the step refuses to run while the model holds them (PyTorch's `optimizer.step()` would
  have included them).
"""
from __future__ import annotations

import functools

from .run.state import runtime_of

FUSED_AWAY = ("back", "update")  # what the fused step does itself instead of calling the model's method


def overridden_methods(model, *, submodels: bool = True) -> list[str]:
    """"Class.method" for each of `back` and `update` that the model's class, or a sub-model's, defines outside
    flux (flux's own layers override them knowing what the fused step does), or that is set on the instance."""
    from .run.sequences import walk_submodels

    found = []
    for sub in [model, *(walk_submodels(model) if submodels else ())]:
        for name in FUSED_AWAY:
            method = own_method(sub, name)
            if method is not None and method not in found:
                found.append(method)
    return found


def own_method(model, name: str) -> str | None:
    """"Owner.name" when the model's `name` ("back" or "update") is its own: set on the instance (`model.back = …`)
    or defined by its class outside flux; else None."""
    if name in vars(model):
        return f"{type(model).__name__}.{name} (set on the instance)"
    return user_method(type(model), name)


@functools.cache
def user_method(cls: type, name: str) -> str | None:
    """"Owner.name" when the class's `name` is defined outside flux, else None (flux.Model defines both)."""
    owner = next(k for k in cls.__mro__ if name in vars(k))
    return f"{owner.__name__}.{name}" if owner.__module__.partition(".")[0] != "flux" else None


def refuse_skipped_submodel_methods(model, method: str, caller: str | None = None) -> None:
    """A TypeError when a sub-model's class defines `method` ("back" or "update") outside flux: the model's kernels,
    derived from its whole maths, never call a sub-model's `back`, and its `update` applies every parameter's
    gradient itself (a Chain runs a layer with its own `back` alone instead: flux.layers.basic.Chain.parts).
    `caller`: a Chain's step/reset/state, which need those whole-maths kernels to carry a state through."""
    own = overridden_methods(model, submodels=False)
    skipped = [m for m in overridden_methods(model) if m.endswith(f".{method}") and m not in own]
    if skipped:
        name = type(model).__name__
        if caller is not None:
            raise TypeError(f"{name}.{caller}: {name} holds a sub-model that overrides {', '.join(skipped)}, so it "
                            "runs its layers in turn and has no kernels of its whole maths to carry a state through "
                            f"(step, reset, state); use the recurrent layer's own {caller} and call the others on its "
                            "output. Nothing was changed")
        why = ("its kernels, derived from its whole maths, never call it; put that layer in a Chain (which runs it "
               "on its own)" if method == "back" else "it applies every parameter's gradient itself")
        raise TypeError(f"{name}.{method}: {name} holds a sub-model that overrides {', '.join(skipped)}, and {why} "
                        f"or make the change in a class around {name}. Nothing was changed")


def refuse_overridden_methods(model, caller: str) -> None:
    """A TypeError naming every `back`/`update` override a fused step would skip, and what to do instead."""
    skipped, name = overridden_methods(model), type(model).__name__
    if not skipped:
        return
    own = skipped == overridden_methods(model, submodels=False)
    advice = ("train it with flux.train, which calls them step by step" if own else
              f"nor does {name}'s own back, which runs its layers fused; make the change in a class around {name}")
    raise TypeError(f"{caller}: {name} {'overrides' if own else 'holds a sub-model that overrides'} "
                    f"{', '.join(skipped)}, which a fused step never calls (it computes the gradients and the update "
                    f"in one kernel); {advice}")


def refuse_pending_gradients(model) -> None:
    """A RuntimeError when `model.back` has accumulated gradients that no update applied yet."""
    runtime = model.__dict__.get("_runtime") or runtime_of(model)  # on every fused step: no import, no call
    if runtime.has_grads:
        if not any(g.any() for g in model.flat_arrays()[1]):  # zeroed through a model sharing the arrays (a
            runtime.has_grads = False  # Chain's fused part, whose parent's update zeroed them): nothing pending
            return
        name = type(model).__name__
        raise RuntimeError(f"{name} holds gradients accumulated by back() and not yet applied; a fused step would "
                           f"leave them out and the next update would apply them stale: call the model's update(…) or "
                           "zero_grad() first. Nothing was changed")
