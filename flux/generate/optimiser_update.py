"""The optimiser's update rule as a kernel: `update(θ, g, state…, step_count, hyper…)` on one flattened parameter.

The rule is SymPy maths from `Optimiser.rules()` (e.g. θ ← θ − η g; Adam's m, v and bias corrections), printed
entry by entry, so every fused training step (feed-forward, recurrent) applies exactly the maths `update(opt)`
evaluates with NumPy.

The built-in optimisers' kernels are printed once, into flux/optimiser_updates.py (`python -m
flux.generate.optimiser_update` writes it; tests/test_optimiser_updates.py checks it is what the rules print), which
numba compiles once per dtype and caches for every model. A fused step's module then holds only a small `update`
that calls the shipped kernel (≈ 0.5 s less numba compile per module); any other rule is printed into the module.
"""
from __future__ import annotations

import functools
from pathlib import Path

import sympy
from sympy.printing.pycode import pycode

from .module import JIT, OPTIMISER_UPDATES

SHIPPED_FILE = Path(__file__).resolve().parent.parent / "optimiser_updates.py"


def printed_updates(rules) -> dict:
    """Each updated quantity's new value as Python code in θ, g, <state>_old, hyper_<name> and step_count."""
    symbol_names = {rules.theta: "θ", rules.gradient: "g", rules.step: "step_count"}
    symbol_names.update({s: f"{name}_old" for name, s in rules.state.items()})
    symbol_names.update({s: f"hyper_{name}" for name, s in rules.hyperparameters.items()})
    return {updated: scalar_code(expr, symbol_names) for updated, expr in rules.updates.items()}


def update_source(rules, optimiser_name: str) -> str:
    """A kernel `update(θ_, g_, state_…, step_count, hyper_…)` applying the optimiser's rule to every entry of one
    flattened parameter: a call of the shipped kernel when flux/optimiser_updates.py holds exactly this rule, else
    the rule printed in full (`rule_kernel_source`)."""
    shipped = shipped_update(rules, optimiser_name)
    if shipped is None:
        return rule_kernel_source(rules, optimiser_name)
    arguments = ", ".join(update_arguments(rules))
    return "\n".join([f"def update({arguments}):", f'    """{optimiser_name}: {rule_summary(rules)} (flux.optimiser_'
                      'updates, compiled once for every model)"""', f"    {shipped}({arguments})"])


def rule_kernel_source(rules, optimiser_name: str, name: str = "update") -> str:
    """The rule printed entry by entry: `name(θ_, g_, state_…, step_count, hyper_…)`."""
    printed = printed_updates(rules)
    states = list(rules.state)
    lines = [f"def {name}({', '.join(update_arguments(rules))}):",
             f'    """{optimiser_name}: {rule_summary(rules)}"""',
             "    for i in range(θ_.size):", "        θ = θ_[i]", "        g = g_[i]"]
    lines += [f"        {s}_old = {s}_[i]" for s in states]
    lines += [f"        {s}_[i] = {printed[s]}" for s in states]
    lines.append(f"        θ_[i] = {printed['θ']}")
    return "\n".join(lines)


def update_arguments(rules) -> list[str]:
    """θ_, g_, one array per state, step_count, one number per hyper-parameter."""
    hyper = [f"hyper_{h}" for h in rules.hyperparameters]
    return ["θ_", "g_"] + [f"{s}_" for s in rules.state] + ["step_count"] + hyper


def update_call(rules, parameter: str, gradient: str, hyper: list[str]) -> str:
    """The fused step's call of `update` for one parameter array: flat views of θ, g and its optimiser states."""
    states = "".join(f", opt_{kind}_{parameter}.reshape(-1)" for kind in rules.state)
    numbers = "".join(", " + h for h in hyper)
    return f"update({parameter}.reshape(-1), {gradient}.reshape(-1){states}, step_count{numbers})"


def rule_summary(rules) -> str:
    return "; ".join(f"{t} ← {sympy.sstr(e)}" for t, e in rules.updates.items())


def shipped_name(optimiser_name: str) -> str:
    """The name of an optimiser's kernel in flux/optimiser_updates.py: adam_update for Adam."""
    return f"{optimiser_name.lower()}_update"


def shipped_update(rules, optimiser_name: str) -> str | None:
    """The shipped kernel that is exactly this rule printed (same name, same text), or None."""
    name = shipped_name(optimiser_name)
    if name not in OPTIMISER_UPDATES:
        return None
    return name if f"{JIT}\n{rule_kernel_source(rules, optimiser_name, name)}\n" in shipped_text() else None


@functools.cache
def shipped_text() -> str:
    return SHIPPED_FILE.read_text(encoding="utf-8")


def shipped_module_source(optimisers: list[type]) -> str:
    """The text of flux/optimiser_updates.py: each optimiser class's rule as a cache=True numba kernel."""
    kernels = [f"{JIT}\n{rule_kernel_source(cls.rules(), cls.__name__, shipped_name(cls.__name__))}\n"
               for cls in optimisers]
    body = "\n\n".join(kernels)
    imports = ["import math", ""] if "math." in body else []  # not imports_for: it would import these from here
    return "\n".join([f'"""{SHIPPED_DOC}"""'] + imports + ["from numba import njit", "", "", body])


SHIPPED_DOC = """The built-in optimisers' update rules as numba kernels, compiled once (per dtype) for every model.

    <name>_update(θ_, g_, state_…, step_count, hyper_…): every entry of the flattened parameter θ_ (and its state)
    updated from the gradient g_ by the optimiser's rule, printed from `Optimiser.rules()`.

Generated by `python -m flux.generate.optimiser_update` from flux/optimisers.py; do not edit
(tests/test_optimiser_updates.py checks it is what the rules print). A fused training step's `update` calls these
instead of compiling its own copy (flux/generate/optimiser_update.py).
"""


def scalar_code(expr, names: dict) -> str:
    """Python code for a scalar SymPy expression with symbols renamed (math.sqrt etc.)."""
    renamed = expr.xreplace({s: sympy.Symbol(n) for s, n in names.items()})
    return pycode(renamed, fully_qualified_modules=True)


def main() -> None:
    """Write flux/optimiser_updates.py from the built-in optimisers' rules."""
    from ..optimisers import BUILT_IN

    SHIPPED_FILE.write_text(shipped_module_source(list(BUILT_IN)), encoding="utf-8")
    print(f"wrote {SHIPPED_FILE}")


if __name__ == "__main__":
    main()
