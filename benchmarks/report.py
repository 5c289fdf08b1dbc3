"""The one table, its footnotes, and the issue-7 targets checked against the numbers just measured."""
from __future__ import annotations

from .harness import Result, format_seconds

LOSS_TOLERANCE = 1e-3  # relative; float32 sums in different orders agree far better than this


def print_table(sections: list[tuple[str, str, list[Result]]]) -> None:
    """sections: (case key, title, rows). Ratio = this row's time / the fastest flux row's time (>1: flux faster)."""
    header = (f"{'variant':<44} {'time/step':>10} {'IQR':>5} {'t/t_flux':>8} {'fastest':>9}  {'loss check':<14} note")
    print(header)
    print("─" * len(header))
    notes: list[str] = []
    for key, title, rows in sections:
        print(title)
        flux_time = best_flux_time(rows)
        reference = (next((r for r in rows if r.label == "numpy" and r.losses), None)  # else JAX's (no NumPy GRU)
                     or next((r for r in rows if r.label == "jax jit" and r.losses), None))
        for row in rows:
            spread = "" if row.spread is None else f"{100 * row.spread:.0f}%"
            if row.status != "ok":
                time_text = row.status
            else:
                time_text = format_seconds(row.median)
            ratio = "" if row.median is None or flux_time is None or key == "startup" else f"{row.median / flux_time:.2f}"
            marker = ""
            if row.note:
                notes.append(row.note)
                marker = f"[{len(notes)}]"
            fastest = "" if row.best is None else format_seconds(row.best)
            print(f"  {row.label:<42} {time_text:>10} {spread:>5} {ratio:>8} {fastest:>9}  "
                  f"{loss_check(row, reference):<14} {marker}")
    print("─" * len(header))
    print("t/t_flux: time of the row ÷ time of the fastest flux row of the case (> 1 means flux is faster).")
    print("fastest: the fastest round's time per step (least disturbed by other processes; not used in ratios).")
    print("IQR: interquartile range of the per-round times ÷ median (start-up rows: max − min over runs ÷ median).")
    print(f"loss check: largest relative difference from NumPy's losses over the first 3 steps (ok < {LOSS_TOLERANCE:g}).")
    for number, note in enumerate(notes, 1):
        print(f"[{number}] {note}")
    print()


def best_flux_time(rows: list[Result]) -> float | None:
    times = [r.median for r in rows if r.is_flux and r.median is not None]
    return min(times) if times else None


def loss_check(row: Result, reference: Result | None) -> str:
    if row.is_floor or not row.losses or row.median is None:
        return ""
    if row is reference:
        return "reference"
    if not row.comparable:
        return "own init"
    if reference is None or None in row.losses:
        return "-"
    worst = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(row.losses, reference.losses))
    return f"{'ok' if worst < LOSS_TOLERANCE else 'DIFFERS'} {worst:.0e}"


# ---- targets (issue 7, and the benchmark lines of issues 3, 4 and 5) ------------------------------------------

SPEEDUP_TARGETS = [  # (case, baseline row, flux must be at least this many times faster, source)
    ("tiny", "torch eager", 10, "issue 7"), ("tiny", "jax jit", 2, "issue 7"), ("tiny", "numpy", 1, "issue 3"),
    ("mlp", "torch eager", 1.5, "issue 7"), ("mlp", "jax jit", 1, "issue 7"), ("mlp", "numpy", 1, "issue 3"),
    ("rnn", "torch eager", 10, "issue 7"), ("rnn", "jax jit", 2, "issue 7"), ("rnn", "numpy", 1, "issue 4"),
    ("lstm", "torch eager", 10, "issue 7"), ("lstm", "jax jit", 2, "issue 7"), ("lstm", "numpy", 1, "issue 4"),
]


def print_targets(sections: list[tuple[str, str, list[Result]]]) -> None:
    by_case = {key: {row.label: row for row in rows} for key, _, rows in sections}
    lines = []
    for case, baseline, factor, source in SPEEDUP_TARGETS:
        if case not in by_case:
            continue
        rows = by_case[case]
        flux_time = best_flux_time(list(rows.values()))
        base = rows.get(baseline)
        text = f"{case}: flux ≥ {factor:g}× faster than {baseline}"
        if flux_time is None or base is None or base.median is None:
            lines.append((source, text, "n/a"))
        else:
            speedup = base.median / flux_time
            lines.append((source, text, f"{verdict(speedup >= factor)} ({speedup:.2f}×)"))
    if "wide" in by_case:
        rows = by_case["wide"]
        flux_time, floor = best_flux_time(list(rows.values())), rows.get("floor: GEMMs")
        text = "wide: flux within 1.25× of the matrix-product floor"
        if flux_time is None or floor is None or floor.median is None:
            lines.append(("issue 7", text, "n/a"))
        else:
            lines.append(("issue 7", text, f"{verdict(flux_time <= 1.25 * floor.median)} "
                                           f"({flux_time / floor.median:.2f}× the floor)"))
    if "mlp" in by_case:
        step, call = by_case["mlp"].get("flux step"), by_case["mlp"].get("flux call")
        text = "mlp: fused flux step ≥ 1.3× faster than forward, back and update called separately"
        if step is None or call is None or step.median is None or call.median is None:
            lines.append(("issue 5", text, "n/a"))
        else:
            speedup = call.median / step.median
            lines.append(("issue 5", text, f"{verdict(speedup >= 1.3)} ({speedup:.2f}×)"))
    if "startup" in by_case:
        for label, row in by_case["startup"].items():
            if label == "import flux":
                limit, text = 1.0, "import flux under 1 s"
            elif label.endswith("cached start"):
                limit, text = 0.5, f"{label.split(':')[0]}: cached start under 0.5 s beyond import flux"
            else:
                continue
            if row.median is None:
                lines.append(("issue 7", text, "n/a"))
            else:
                lines.append(("issue 7", text, f"{verdict(row.median < limit)} ({format_seconds(row.median)})"))
    if not lines:
        return
    print("targets")
    width = max(len(text) for _, text, _ in lines)
    for source, text, outcome in lines:
        print(f"  {source:<8} {text:<{width}}  {outcome}")


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"
