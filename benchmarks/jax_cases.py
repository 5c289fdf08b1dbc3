"""JAX: `jax.jit` of value_and_grad plus the SGD update, parameters donated; recurrences with `lax.scan`.

Each step blocks until the new parameters are computed (JAX dispatches asynchronously).
Importing this module raises ImportError when JAX is not installed; the table then shows "n/a".
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from .problems import Problem


def tiny(problem: Problem):
    def loss(p, x, t):
        y = jnp.tanh(x @ p["W1"].T + p["b1"]) @ p["W2"].T + p["b2"]
        return jnp.mean((y - t) ** 2)

    return _trained(problem, loss)


def mlp(problem: Problem):
    def loss(p, x, t):
        z = jax.nn.relu(x @ p["W1"].T + p["b1"]) @ p["W2"].T + p["b2"]
        return -jnp.mean(jnp.sum(t * jax.nn.log_softmax(z, axis=1), axis=1))

    return _trained(problem, loss)


wide = mlp


def rnn(problem: Problem):
    def loss(p, x, t):
        xs = jnp.swapaxes(x, 0, 1)  # time-major for scan

        def cell(h, a):
            h = jax.nn.sigmoid(a + h @ p["Whh"].T)
            return h, h

        h0 = jnp.zeros((x.shape[0], p["Whh"].shape[0]), x.dtype)
        _, hs = lax.scan(cell, h0, xs @ p["Wxh"].T + p["bh"])
        y = jax.nn.sigmoid(xs @ p["Wxy"].T + hs @ p["Why"].T + p["by"])
        return jnp.mean((y - jnp.swapaxes(t, 0, 1)) ** 2)

    return _trained(problem, loss)


def lstm(problem: Problem):
    H = problem.sizes["n_hidden"]

    def loss(p, x, t):
        xs = jnp.swapaxes(x, 0, 1)

        def cell(carry, z):
            h, c = carry
            z = z + h @ p["U"].T
            i, f, g, o = (jax.nn.sigmoid(z[:, :H]), jax.nn.sigmoid(z[:, H:2 * H]), jnp.tanh(z[:, 2 * H:3 * H]),
                          jax.nn.sigmoid(z[:, 3 * H:]))
            c = f * c + i * g
            h = o * jnp.tanh(c)
            return (h, c), h

        zero = jnp.zeros((x.shape[0], H), x.dtype)
        _, hs = lax.scan(cell, (zero, zero), xs @ p["W"].T + p["b"])
        return jnp.mean((hs - jnp.swapaxes(t, 0, 1)) ** 2)

    return _trained(problem, loss)


def gru(problem: Problem):
    """flux's GRU: the reset gate multiplies h before its product, n = tanh(Wn x + Un (r ⊙ h) + bn)."""
    H = problem.sizes["n_hidden"]

    def loss(p, x, t):
        xs = jnp.swapaxes(x, 0, 1)

        def cell(h, z):
            rz = jax.nn.sigmoid(z[:, :2 * H] + h @ p["U"][:2 * H].T)
            r, u = rz[:, :H], rz[:, H:]
            n = jnp.tanh(z[:, 2 * H:] + (r * h) @ p["U"][2 * H:].T)
            h = h - u * h + u * n
            return h, h

        zero = jnp.zeros((x.shape[0], H), x.dtype)
        _, hs = lax.scan(cell, zero, xs @ p["W"].T + p["b"])
        return jnp.mean((hs - jnp.swapaxes(t, 0, 1)) ** 2)

    return _trained(problem, loss)


def _trained(problem: Problem, loss):
    lr = problem.lr

    def train_step(params, x, t):
        value, grads = jax.value_and_grad(loss)(params, x, t)
        return jax.tree.map(lambda p, g: p - lr * g, params, grads), value

    train_step = jax.jit(train_step, donate_argnums=0)
    params = {name: jnp.asarray(value) for name, value in problem.copy_params().items()}
    x, t = jnp.asarray(problem.x), jnp.asarray(problem.target)

    def step():
        nonlocal params
        params, value = train_step(params, x, t)
        jax.block_until_ready(params)
        return value

    return step


def transformer(problem: Problem):
    """The TransformerBlock case: benchmarks/transformer.py's jax step."""
    from .transformer import jax_step

    return jax_step(problem.copy_params(), problem.x, problem.target)
