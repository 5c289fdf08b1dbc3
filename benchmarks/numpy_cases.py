"""The same maths written by hand in NumPy, written well: buffers allocated once, BLAS through `np.matmul`,
in-place ufuncs, input projections of whole sequences as one matrix product, time-major recurrences.

Each function takes a `Problem` and returns `step()`, which runs forward, loss, backward and the SGD update and
returns the loss. Gradients of the input x are not computed: a training step does not need them.
"""
from __future__ import annotations

import numpy as np

from .problems import Problem

f32 = np.float32


def tiny(problem: Problem):
    """y = W2 tanh(W1 x + b1) + b2, L = mean (y − t)²."""
    return _mlp(problem, "tanh", "mse")


def mlp(problem: Problem):
    """z = W2 relu(W1 x + b1) + b2, L = logitcrossentropy(z, k)."""
    return _mlp(problem, "relu", "logitcrossentropy")


wide = mlp


def wide_floor(problem: Problem):
    """Only the matrix products of the wide MLP's step: x W1ᵀ, h W2ᵀ (forward); Δᵀh, Δ W2, δᵀx (backward)."""
    p = problem.copy_params()
    W1, W2, x = p["W1"], p["W2"], problem.x
    N, H, O = x.shape[0], W1.shape[0], W2.shape[0]
    h, z, dz = np.empty((N, H), f32), np.empty((N, O), f32), np.full((N, O), 0.01, f32)
    gW1, gW2, dh = np.empty_like(W1), np.empty_like(W2), np.empty((N, H), f32)

    def step():
        np.matmul(x, W1.T, out=h)
        np.matmul(h, W2.T, out=z)
        np.matmul(dz.T, h, out=gW2)
        np.matmul(dz, W2, out=dh)
        np.matmul(dh.T, x, out=gW1)

    return step


def _mlp(problem: Problem, activation: str, loss: str):
    p = problem.copy_params()
    W1, b1, W2, b2 = p["W1"], p["b1"], p["W2"], p["b2"]
    x, t, lr = problem.x, problem.target, f32(problem.lr)
    N, H, O = x.shape[0], W1.shape[0], W2.shape[0]
    h, z, dz, dh, work = (np.empty((N, H), f32), np.empty((N, O), f32), np.empty((N, O), f32),
                          np.empty((N, H), f32), np.empty((N, H), f32))
    grads = {name: np.empty_like(value) for name, value in p.items()}
    gW1, gb1, gW2, gb2 = grads["W1"], grads["b1"], grads["W2"], grads["b2"]
    rows = np.arange(N)
    labels = problem.labels

    def step():
        np.matmul(x, W1.T, out=h)
        np.add(h, b1, out=h)
        if activation == "tanh":
            np.tanh(h, out=h)
        else:
            np.maximum(h, 0, out=h)
        np.matmul(h, W2.T, out=z)
        np.add(z, b2, out=z)
        if loss == "mse":
            np.subtract(z, t, out=dz)
            value = float(np.vdot(dz, dz)) / dz.size
            np.multiply(dz, f32(2 / dz.size), out=dz)
        else:  # softmax cross-entropy on logits, max-shifted
            zmax = z.max(axis=1, keepdims=True)
            np.subtract(z, zmax, out=dz)
            picked = dz[rows, labels]
            np.exp(dz, out=dz)
            total = dz.sum(axis=1, keepdims=True)
            value = float(np.log(total).mean() - picked.mean())
            np.divide(dz, total, out=dz)
            dz[rows, labels] -= 1
            np.multiply(dz, f32(1 / N), out=dz)
        np.matmul(dz.T, h, out=gW2)
        dz.sum(axis=0, out=gb2)
        np.matmul(dz, W2, out=dh)
        if activation == "tanh":  # tanh' = 1 − h²
            np.multiply(h, h, out=work)
            np.subtract(1, work, out=work)
            np.multiply(dh, work, out=dh)
        else:
            np.multiply(dh, h > 0, out=dh)
        np.matmul(dh.T, x, out=gW1)
        dh.sum(axis=0, out=gb1)
        sgd(p, grads, lr)
        return value

    return step


def rnn(problem: Problem):
    """h_t = σ(Wxh x_t + Whh h_{t−1} + bh), y_t = σ(Wxy x_t + Why h_t + by), L = mean (y − t)², full BPTT."""
    p = problem.copy_params()
    Wxh, Whh, bh, Wxy, Why, by = (p[k] for k in ("Wxh", "Whh", "bh", "Wxy", "Why", "by"))
    grads = {name: np.empty_like(value) for name, value in p.items()}
    x, lr = problem.x, f32(problem.lr)
    N, T, F = x.shape
    H, O = Whh.shape[0], Why.shape[0]
    target = problem.target.transpose(1, 0, 2)  # a time-major view of the targets
    xs = np.empty((T, N, F), f32)
    X2 = xs.reshape(T * N, F)
    A = np.empty((T, N, H), f32)  # input part of the hidden pre-activation
    Hs = np.zeros((T + 1, N, H), f32)  # Hs[0] = h_0 = 0
    Y, work = np.empty((T, N, O), f32), np.empty((T, N, O), f32)
    dHy, S, dA = np.empty((T, N, H), f32), np.empty((T, N, H), f32), np.empty((T, N, H), f32)
    carry = np.empty((N, H), f32)
    H_all, H_prev = Hs[1:].reshape(T * N, H), Hs[:-1].reshape(T * N, H)
    Y2, work2, A2, dA2, dHy2 = (a.reshape(T * N, -1) for a in (Y, work, A, dA, dHy))

    def step():
        np.copyto(xs, x.transpose(1, 0, 2))
        np.matmul(X2, Wxh.T, out=A2)
        np.add(A2, bh, out=A2)
        for t in range(T):
            h = Hs[t + 1]
            np.matmul(Hs[t], Whh.T, out=h)
            np.add(h, A[t], out=h)
            sigmoid_(h)
        np.matmul(X2, Wxy.T, out=Y2)
        np.matmul(H_all, Why.T, out=work2)
        np.add(Y2, work2, out=Y2)
        np.add(Y2, by, out=Y2)
        sigmoid_(Y2)
        # loss and its gradient through the output sigmoid: dZy = 2(y − t)/size ⊙ y(1 − y)
        np.subtract(Y, target, out=work)
        value = float(np.vdot(work, work)) / work.size
        np.multiply(work, f32(2 / work.size), out=work)
        np.multiply(work, Y, out=work)
        np.subtract(1, Y, out=Y)
        np.multiply(work, Y, out=work)
        np.matmul(work2.T, X2, out=grads["Wxy"])
        np.matmul(work2.T, H_all, out=grads["Why"])
        work2.sum(axis=0, out=grads["by"])
        np.matmul(work2, Why, out=dHy2)
        # σ'(a_t) = h_t(1 − h_t) for every t at once, then the backward recurrence
        np.subtract(1, Hs[1:], out=S)
        np.multiply(S, Hs[1:], out=S)
        carry.fill(0)
        for t in range(T - 1, -1, -1):
            np.add(dHy[t], carry, out=dA[t])
            dA[t] *= S[t]
            if t:
                np.matmul(dA[t], Whh, out=carry)
        np.matmul(dA2.T, X2, out=grads["Wxh"])
        np.matmul(dA2.T, H_prev, out=grads["Whh"])
        dA2.sum(axis=0, out=grads["bh"])
        sgd(p, grads, lr)
        return value

    return step


def lstm(problem: Problem):
    """LSTM with gates [i, f, g, o] = [σ, σ, tanh, σ](W x_t + U h_{t−1} + b), c_t = f⊙c_{t−1} + i⊙g,
    h_t = o⊙tanh(c_t); L = mean (h − t)² over every h_t; full BPTT."""
    p = problem.copy_params()
    W, U, b = p["W"], p["U"], p["b"]
    grads = {name: np.empty_like(value) for name, value in p.items()}
    x, lr = problem.x, f32(problem.lr)
    N, T, F = x.shape
    H = U.shape[1]
    target = problem.target.transpose(1, 0, 2)
    xs = np.empty((T, N, F), f32)
    X2 = xs.reshape(T * N, F)
    G = np.empty((T, N, 4 * H), f32)  # pre-activations, then activated gates in place
    Hs, Cs = np.zeros((T + 1, N, H), f32), np.zeros((T + 1, N, H), f32)
    TC = np.empty((T, N, H), f32)  # tanh(c_t)
    mix = np.empty((T, N, 3, H), f32)  # what multiplies dc for gates i, f, g: [g, c_{t−1}, i]
    D = np.empty((T, N, 4 * H), f32)  # derivative of each gate's activation
    OD = np.empty((T, N, H), f32)  # o ⊙ (1 − tanh² c): ∂h/∂c
    dH, dG = np.empty((T, N, H), f32), np.empty((T, N, 4 * H), f32)
    dh, dc, work = np.empty((N, H), f32), np.empty((N, H), f32), np.empty((N, 4 * H), f32)
    G2, dG2, dG4 = G.reshape(T * N, 4 * H), dG.reshape(T * N, 4 * H), dG.reshape(T, N, 4, H)
    H_all, H_prev = Hs[1:].reshape(T * N, H), Hs[:-1].reshape(T * N, H)
    i_, f_, g_, o_ = slice(0, H), slice(H, 2 * H), slice(2 * H, 3 * H), slice(3 * H, 4 * H)

    def step():
        np.copyto(xs, x.transpose(1, 0, 2))
        np.matmul(X2, W.T, out=G2)
        np.add(G2, b, out=G2)
        for t in range(T):
            g = G[t]
            np.matmul(Hs[t], U.T, out=work)
            g += work
            sigmoid_(g[:, : 2 * H])
            np.tanh(g[:, g_], out=g[:, g_])
            sigmoid_(g[:, o_])
            c = Cs[t + 1]
            np.multiply(g[:, f_], Cs[t], out=c)
            np.multiply(g[:, i_], g[:, g_], out=dc)
            np.add(c, dc, out=c)
            np.tanh(c, out=TC[t])
            np.multiply(g[:, o_], TC[t], out=Hs[t + 1])
        np.subtract(Hs[1:], target, out=dH)
        value = float(np.vdot(dH, dH)) / dH.size
        np.multiply(dH, f32(2 / dH.size), out=dH)
        # everything the backward recurrence multiplies by, for all t at once
        np.subtract(1, G, out=D)
        np.multiply(D, G, out=D)  # σ' = s(1 − s) …
        np.multiply(G[..., g_], G[..., g_], out=D[..., g_])
        np.subtract(1, D[..., g_], out=D[..., g_])  # … and tanh' = 1 − g²
        np.multiply(TC, TC, out=OD)
        np.subtract(1, OD, out=OD)
        np.multiply(OD, G[..., o_], out=OD)
        np.copyto(mix[:, :, 0], G[..., g_])
        np.copyto(mix[:, :, 1], Cs[:-1])
        np.copyto(mix[:, :, 2], G[..., i_])
        dh.fill(0)
        dc.fill(0)
        for t in range(T - 1, -1, -1):
            np.add(dh, dH[t], out=dh)
            np.multiply(dh, OD[t], out=work[:, :H])
            np.add(dc, work[:, :H], out=dc)
            d = dG[t]
            np.multiply(dh, TC[t], out=d[:, o_])
            np.multiply(mix[t], dc[:, None, :], out=dG4[t, :, :3])
            np.multiply(d, D[t], out=d)
            np.multiply(dc, G[t, :, f_], out=dc)
            if t:
                np.matmul(d, U, out=dh)
        np.matmul(dG2.T, X2, out=grads["W"])
        np.matmul(dG2.T, H_prev, out=grads["U"])
        dG2.sum(axis=0, out=grads["b"])
        sgd(p, grads, lr)
        return value

    return step


def sigmoid_(a: np.ndarray) -> None:
    """a ← σ(a) = 1 / (1 + e^{−a}), in place."""
    np.negative(a, out=a)
    np.exp(a, out=a)
    np.add(a, 1, out=a)
    np.reciprocal(a, out=a)


def sgd(params: dict, grads: dict, lr: np.float32) -> None:
    """W ← W − lr ∂L/∂W for every parameter."""
    for name, value in params.items():
        g = grads[name]
        g *= lr
        value -= g
