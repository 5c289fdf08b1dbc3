"""A TransformerBlock training step (issue 17): flux against PyTorch eager and JAX jit, float32, interleaved.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.transformer [--threads 2] [--quick]

The block is pre-norm: Z = X + MHA(LN₁(X)), y = Z + W₂·relu(W₁·LN₂(Z) + b₁) + b₂, MHA without biases (PyTorch's
nn.MultiheadAttention(bias=False)), layer norms with gain and bias, ε = 1e-5. N 16, T 32, d 64, 4 heads, hidden 256;
loss = mean (y − t)², SGD lr 0.01. Every variant starts from the same parameters and batch; the first three losses
are printed side by side (same numbers: the same maths, gradients included). "flux step" is flux.compile_step
(one kernel call); "flux call" is the call path (model(X), model.back(Δ), model.update), whose back also returns
∂L/∂X, which the others do not compute.
"""
from __future__ import annotations

import argparse
import os

N, T, D, HEADS, HIDDEN, LR = 16, 32, 64, 4, 256, 0.01


def problem():
    import numpy as np

    rng = np.random.default_rng(1717)
    bound = 1 / np.sqrt(D)
    params = {name: rng.uniform(-bound, bound, size=(D, D)) for name in ("Wq", "Wk", "Wv", "Wo")}
    params.update(g1=1 + 0.1 * rng.standard_normal(D), b1=0.1 * rng.standard_normal(D),
                  g2=1 + 0.1 * rng.standard_normal(D), b2=0.1 * rng.standard_normal(D),
                  W1=rng.uniform(-bound, bound, size=(HIDDEN, D)), c1=rng.uniform(-bound, bound, size=HIDDEN),
                  W2=rng.uniform(-1 / np.sqrt(HIDDEN), 1 / np.sqrt(HIDDEN), size=(D, HIDDEN)),
                  c2=rng.uniform(-1 / np.sqrt(HIDDEN), 1 / np.sqrt(HIDDEN), size=D))
    params = {k: v.astype(np.float32) for k, v in params.items()}
    x = rng.standard_normal((N, T, D)).astype(np.float32)
    target = rng.standard_normal((N, T, D)).astype(np.float32)
    return params, x, target


def flux_model(params):
    """flux's TransformerBlock holding the problem's parameters."""
    import flux

    model = flux.TransformerBlock(D, HEADS, HIDDEN)
    names = {"ln1.γ": "g1", "ln1.β": "b1", "attention.Wq": "Wq", "attention.Wk": "Wk", "attention.Wv": "Wv",
             "attention.Wo": "Wo", "ln2.γ": "g2", "ln2.β": "b2", "up.W": "W1", "up.b": "c1", "down.W": "W2",
             "down.b": "c2"}
    model.params.update({ours: params[theirs] for ours, theirs in names.items()})
    return model


def flux_step(params, x, target):
    """The call path: model(X), model.back(Δ), model.update (its back also returns ∂L/∂X)."""
    model = flux_model(params)
    scale = 2.0 / target.size

    def step():
        y = model(x)
        difference = y - target
        model.back(difference * scale)
        model.update(lr=LR)
        return float((difference * difference).mean())

    return step


def flux_fused_step(params, x, target):
    """flux.compile_step: forward, loss, backward, checks and the update in one kernel call."""
    import flux

    train_step = flux.compile_step(flux_model(params), flux.mse, flux.SGD(LR))
    return lambda: train_step(x, target)


def torch_step(params, x, target):
    import torch

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = torch.nn.LayerNorm(D), torch.nn.LayerNorm(D)
            self.attention = torch.nn.MultiheadAttention(D, HEADS, bias=False, batch_first=True)
            self.up, self.down = torch.nn.Linear(D, HIDDEN), torch.nn.Linear(HIDDEN, D)

        def forward(self, X):
            h = self.ln1(X)
            Z = X + self.attention(h, h, h, need_weights=False)[0]
            return Z + self.down(torch.relu(self.up(self.ln2(Z))))

    block = Block()
    with torch.no_grad():
        t = {k: torch.from_numpy(v.copy()) for k, v in params.items()}
        block.ln1.weight.copy_(t["g1"]); block.ln1.bias.copy_(t["b1"])  # noqa: E702
        block.ln2.weight.copy_(t["g2"]); block.ln2.bias.copy_(t["b2"])  # noqa: E702
        block.attention.in_proj_weight.copy_(torch.cat([t["Wq"], t["Wk"], t["Wv"]]))
        block.attention.out_proj.weight.copy_(t["Wo"])
        block.up.weight.copy_(t["W1"]); block.up.bias.copy_(t["c1"])  # noqa: E702
        block.down.weight.copy_(t["W2"]); block.down.bias.copy_(t["c2"])  # noqa: E702
    optimiser = torch.optim.SGD(block.parameters(), lr=LR)
    X, target = torch.from_numpy(x), torch.from_numpy(target)

    def step():
        optimiser.zero_grad()
        loss = torch.nn.functional.mse_loss(block(X), target)
        loss.backward()
        optimiser.step()
        return float(loss.detach())

    return step


def jax_step(params, x, target):
    import jax
    import jax.numpy as jnp

    def norm(h, g, b):
        centred = h - h.mean(-1, keepdims=True)
        return g * centred / jnp.sqrt((centred * centred).mean(-1, keepdims=True) + 1e-5) + b

    def heads(h):
        return h.reshape(N, T, HEADS, D // HEADS).transpose(0, 2, 1, 3)

    def block(p, X):
        h = norm(X, p["g1"], p["b1"])
        q, k, v = heads(h @ p["Wq"].T), heads(h @ p["Wk"].T), heads(h @ p["Wv"].T)
        a = jax.nn.softmax(q @ k.transpose(0, 1, 3, 2) / jnp.sqrt(D // HEADS), axis=-1)
        Z = X + (a @ v).transpose(0, 2, 1, 3).reshape(N, T, D) @ p["Wo"].T
        return Z + jax.nn.relu(norm(Z, p["g2"], p["b2"]) @ p["W1"].T + p["c1"]) @ p["W2"].T + p["c2"]

    def loss(p, X, t):
        return jnp.mean((block(p, X) - t) ** 2)

    @jax.jit
    def update(p, X, t):
        value, grads = jax.value_and_grad(loss)(p, X, t)
        return value, jax.tree_util.tree_map(lambda w, g: w - LR * g, p, grads)

    state = {"p": {k: jnp.asarray(v) for k, v in params.items()}}
    X, t = jnp.asarray(x), jnp.asarray(target)

    def step():
        value, state["p"] = update(state["p"], X, t)
        return float(value.block_until_ready())

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--quick", action="store_true")
    arguments = parser.parse_args()
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "FLUX_NUM_THREADS"):
        os.environ[name] = str(arguments.threads)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
    from .harness import build_variant, format_seconds, measure_interleaved

    try:
        import torch

        torch.set_num_threads(arguments.threads)
    except ImportError:
        pass
    params, x, target = problem()
    builders = {"flux step": flux_fused_step, "flux call": flux_step, "torch eager": torch_step, "jax jit": jax_step}
    results, steps, estimates = {}, {}, {}
    for label, build in builders.items():
        result, step, estimate = build_variant(label, lambda build=build: build(params, x, target),
                                               warmup_seconds=0.5 if arguments.quick else 2.0,
                                               is_flux=label.startswith("flux"))
        results[label] = result
        if step is not None:
            steps[label], estimates[label] = step, estimate
    measure_interleaved(steps, estimates, results, rounds=11 if arguments.quick else 41,
                        block_seconds=0.02 if arguments.quick else 0.04)
    flux_time = min(r.median for label, r in results.items() if label.startswith("flux") and r.median)
    print(f"TransformerBlock training step: N {N}, T {T}, d {D}, {HEADS} heads, hidden {HIDDEN}, float32, "
          f"{arguments.threads} threads")
    print(f"{'variant':<14}{'time/step':>12}{'IQR':>7}{'t/t_flux':>10}  first losses / note")
    for label, r in results.items():
        if r.median is None:
            print(f"{label:<14}{r.status:>12}  {r.note}")
            continue
        ratio = f"{r.median / flux_time:.2f}" if flux_time else "n/a"
        losses = ", ".join(f"{loss:.6f}" for loss in r.losses)
        print(f"{label:<14}{format_seconds(r.median):>12}{r.spread:>7.0%}{ratio:>10}  {losses}")


if __name__ == "__main__":
    main()
