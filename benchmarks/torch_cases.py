"""PyTorch eager, written as a PyTorch user would: nn modules where they exist, torch.optim.SGD, loss.backward().

Importing this module raises ImportError when PyTorch is not installed; the table then shows "n/a".
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .problems import Problem


def tiny(problem: Problem):
    return _mlp(problem, nn.Tanh(), lambda z: F.mse_loss(z, torch.from_numpy(problem.target)))


def mlp(problem: Problem):
    labels = torch.from_numpy(problem.labels)
    return _mlp(problem, nn.ReLU(), lambda z: F.cross_entropy(z, labels))


wide = mlp


def _mlp(problem: Problem, activation: nn.Module, loss_of):
    s = problem.sizes
    model = nn.Sequential(nn.Linear(s["n_in"], s["n_hidden"]), activation, nn.Linear(s["n_hidden"], s["n_out"]))
    _load(problem, [model[0].weight, model[0].bias, model[2].weight, model[2].bias])
    optimiser = torch.optim.SGD(model.parameters(), lr=problem.lr)
    x = torch.from_numpy(problem.x)

    def step():
        optimiser.zero_grad(set_to_none=True)
        loss = loss_of(model(x))
        loss.backward()
        optimiser.step()
        return loss.item()

    return step


def rnn(problem: Problem):
    """The seed's Recurrent has no nn module (nn.RNN has no σ and no output layer): a loop over time steps."""
    params = [nn.Parameter(torch.from_numpy(v.copy())) for v in problem.params.values()]
    Wxh, Whh, bh, Wxy, Why, by = params
    optimiser = torch.optim.SGD(params, lr=problem.lr)
    x, target = torch.from_numpy(problem.x), torch.from_numpy(problem.target)
    N, T, _ = problem.x.shape

    def step():
        optimiser.zero_grad(set_to_none=True)
        A = x @ Wxh.T + bh
        h = torch.zeros(N, Whh.shape[0])
        hs = []
        for t in range(T):
            h = torch.sigmoid(A[:, t] + h @ Whh.T)
            hs.append(h)
        y = torch.sigmoid(x @ Wxy.T + torch.stack(hs, dim=1) @ Why.T + by)
        loss = F.mse_loss(y, target)
        loss.backward()
        optimiser.step()
        return loss.item()

    return step


def lstm(problem: Problem):
    """nn.LSTM (one fused C++ op per time step). It has two biases: b_ih = b and b_hh = 0 at the start."""
    step = _fused_recurrent_step(problem, nn.LSTM)
    step.note = "nn.LSTM has a second bias b_hh (starts at 0, also trained), so losses after the first step differ slightly"
    return step


def gru(problem: Problem):
    """nn.GRU (one fused C++ op per time step). Its candidate is n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)) (the
    reset gate after the product), not flux's r ⊙ h before it: the same cost, other losses."""
    step = _fused_recurrent_step(problem, nn.GRU)
    step.note = "nn.GRU puts the reset gate after its product (flux's GRU before it) and has a second bias"
    step.comparable = False
    return step


def _fused_recurrent_step(problem: Problem, layer_class):
    """An SGD step of PyTorch's fused recurrent layer (nn.LSTM, nn.GRU) on the problem's weights, b_hh = 0."""
    s = problem.sizes
    model = layer_class(s["n_in"], s["n_hidden"], batch_first=True)
    _load(problem, [model.weight_ih_l0, model.weight_hh_l0, model.bias_ih_l0])
    with torch.no_grad():
        model.bias_hh_l0.zero_()
    optimiser = torch.optim.SGD(model.parameters(), lr=problem.lr)
    x, target = torch.from_numpy(problem.x), torch.from_numpy(problem.target)

    def step():
        optimiser.zero_grad(set_to_none=True)
        hs, _ = model(x)
        loss = F.mse_loss(hs, target)
        loss.backward()
        optimiser.step()
        return loss.item()

    return step


def _load(problem: Problem, tensors: list) -> None:
    with torch.no_grad():
        for tensor, value in zip(tensors, problem.params.values()):
            tensor.copy_(torch.from_numpy(value))


def transformer(problem: Problem):
    """The TransformerBlock case: benchmarks/transformer.py's torch step."""
    from .transformer import torch_step

    return torch_step(problem.copy_params(), problem.x, problem.target)
