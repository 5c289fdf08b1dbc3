"""The order of a chain of matrix products over token arrays: the matrix-chain problem, with three ways to multiply.

A factor is a parameter (unbatched) or a per-sample matrix (batched), whose array holds either its transpose per
sample (the node layout, (N, c, r)) or, `transposed`, the sample itself. Multiplying two of them costs

    U·V        both parameters                        m·k·p                      (a parameter)
    W·Vₙ       parameter, node layout on the right    g·N·m·k·p, ONE GEMM over every token  (node layout)
    Vₙ·W       samples themselves on the left         g·N·m·k·p, ONE GEMM over every token  (samples themselves)
    Aₙ·Bₙ      anything else                          N·(m·k·p + c), a loop over n of np.dot   (either layout)

(g < 1: one large GEMM runs faster per flop than N small ones; c: the cost of one small call). Every dimension is
taken as NOMINAL_SIZE when planning (k/h, a head, comes out smaller), so the plan never depends on N or T.
Merging two parameters first (W_kᵀ·W_q, d×d) is thus chosen only when it is cheaper than applying them one by one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

NOMINAL_SIZE = 64
NOMINAL_BATCH = 16
GEMM_EFFICIENCY = 0.6
SAMPLE_CALL = 3000


@dataclass(frozen=True)
class Plan:
    """How to compute a run of factors: `steps` is a factor's index or (left plan, right plan)."""

    cost: float
    kind: str  # "unbatched", "batched" (node layout) or "transposed" (the samples themselves)
    shape: tuple
    steps: object


def plan_products(operands: list, size: Callable) -> dict:
    """{(i, j): {kind: the cheapest Plan of operands[i:j] giving that kind}} for every run i < j."""
    plans: dict = {}
    for i, op in enumerate(operands):
        kind = "unbatched" if not op.batched else "transposed" if op.transposed else "batched"
        plans[i, i + 1] = {kind: Plan(0.0, kind, op.shape, i)}
    count = len(operands)
    for length in range(2, count + 1):
        for i in range(count - length + 1):
            j, best = i + length, {}
            for split in reversed(range(i + 1, j)):  # ties: parameters applied to the tokens first
                for left in plans[i, split].values():
                    for right in plans[split, j].values():
                        for plan in combinations(left, right, size):
                            if plan.kind not in best or plan.cost < best[plan.kind].cost:
                                best[plan.kind] = plan
            plans[i, j] = best
    return plans


def combine(left: Plan, right: Plan, size: Callable) -> Plan:
    """The plan of left·right (see the module docstring for the three ways and their costs)."""
    flops = size(left.shape[0]) * size(left.shape[1]) * size(right.shape[1])
    shape = (left.shape[0], right.shape[1])
    base = left.cost + right.cost
    if left.kind == "unbatched" and right.kind == "unbatched":
        return Plan(base + flops, "unbatched", shape, (left, right))
    if left.kind == "unbatched" and right.kind == "batched":
        return Plan(base + GEMM_EFFICIENCY * NOMINAL_BATCH * flops, "batched", shape, (left, right))
    if left.kind == "transposed" and right.kind == "unbatched":
        return Plan(base + GEMM_EFFICIENCY * NOMINAL_BATCH * flops, "transposed", shape, (left, right))
    return Plan(base + NOMINAL_BATCH * (flops + SAMPLE_CALL), "batched", shape, (left, right))


def combinations(left: Plan, right: Plan, size: Callable) -> list:
    """Every plan of left·right: a product per sample can write either layout at the same cost."""
    plan = combine(left, right, size)
    if plan.kind == "batched" and not (left.kind == "unbatched" and right.kind == "batched"):
        return [plan, Plan(plan.cost, "transposed", plan.shape, plan.steps)]
    return [plan]


def transpose_cost(plan: Plan, size: Callable) -> float:
    """Copying a batched result into the other layout."""
    return NOMINAL_BATCH * 2.0 * size(plan.shape[0]) * size(plan.shape[1])


def token_sum_cost(left: Plan, right: Plan, size: Callable) -> float:
    """Σₙ Lₙ·Rₙ as one GEMM over every token: L in node layout, R the samples themselves."""
    return left.cost + right.cost + GEMM_EFFICIENCY * NOMINAL_BATCH * (
        size(left.shape[0]) * size(left.shape[1]) * size(right.shape[1]))
