"""The optimiser's update rule as a kernel: `update(θ, g, state…, step_count, hyper…)` on one flattened parameter.

The rule is SymPy maths from `Optimiser.rules()` (e.g. θ ← θ − η g; Adam's m, v and bias corrections), printed
entry by entry, so both fused training steps (feed-forward and recurrent) apply exactly the maths `update(opt)`
evaluates with NumPy.
"""
from __future__ import annotations

import sympy
from sympy.printing.pycode import pycode


def printed_updates(rules) -> dict:
    """Each updated quantity's new value as Python code in θ, g, <state>_old, hyper_<name> and step_count."""
    symbol_names = {rules.theta: "θ", rules.gradient: "g", rules.step: "step_count"}
    symbol_names.update({s: f"{name}_old" for name, s in rules.state.items()})
    symbol_names.update({s: f"hyper_{name}" for name, s in rules.hyperparameters.items()})
    return {updated: scalar_code(expr, symbol_names) for updated, expr in rules.updates.items()}


def update_source(rules, optimiser_name: str) -> str:
    """A kernel applying the optimiser's rule to every entry of one flattened parameter."""
    printed = printed_updates(rules)
    states = list(rules.state)
    hyper = [f"hyper_{h}" for h in rules.hyperparameters]
    arguments = ", ".join(["θ_", "g_"] + [f"{s}_" for s in states] + ["step_count"] + hyper)
    maths = "; ".join(f"{t} ← {sympy.sstr(e)}" for t, e in rules.updates.items())
    lines = [f"def update({arguments}):", f'    """{optimiser_name}: {maths}"""',
             "    for i in range(θ_.size):", "        θ = θ_[i]", "        g = g_[i]"]
    lines += [f"        {s}_old = {s}_[i]" for s in states]
    lines += [f"        {s}_[i] = {printed[s]}" for s in states]
    lines.append(f"        θ_[i] = {printed['θ']}")
    return "\n".join(lines)


def scalar_code(expr, names: dict) -> str:
    """Python code for a scalar SymPy expression with symbols renamed (math.sqrt etc.)."""
    renamed = expr.xreplace({s: sympy.Symbol(n) for s, n in names.items()})
    return pycode(renamed, fully_qualified_modules=True)
