"""flux's MultiHeadAttention against PyTorch's nn.MultiheadAttention (bias=False, weights copied): forward, ∂L/∂X and
every weight gradient, with and without a causal mask, in float64. Runs where PyTorch is installed."""
import numpy as np
import pytest

import flux

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("causal", [False, True])
def test_multi_head_attention_agrees_with_pytorch(causal):
    d, heads, N, T = 8, 2, 3, 5
    rng = np.random.default_rng(17)
    model = flux.MultiHeadAttention(d, heads, causal=causal, rng=4, dtype=np.float64)
    reference = torch.nn.MultiheadAttention(d, heads, bias=False, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        p = model.params
        reference.in_proj_weight.copy_(torch.from_numpy(np.vstack([p["Wq"], p["Wk"], p["Wv"]])))
        reference.out_proj.weight.copy_(torch.from_numpy(p["Wo"]))
    X = rng.normal(size=(N, T, d))
    R = rng.normal(size=(N, T, d))
    x = torch.tensor(X, requires_grad=True)
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1) if causal else None  # True: key after query
    y, _ = reference(x, x, x, need_weights=False, attn_mask=mask)
    (y * torch.from_numpy(R)).sum().backward()

    np.testing.assert_allclose(model(X), y.detach().numpy(), rtol=1e-10, atol=1e-12)
    dX = model.back(R)
    np.testing.assert_allclose(dX, x.grad.numpy(), rtol=1e-10, atol=1e-12)
    grads = model.grads
    in_proj = reference.in_proj_weight.grad.numpy()
    for k, name in enumerate(("Wq", "Wk", "Wv")):
        np.testing.assert_allclose(grads[name], in_proj[k * d:(k + 1) * d], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads["Wo"], reference.out_proj.weight.grad.numpy(), rtol=1e-10, atol=1e-12)
