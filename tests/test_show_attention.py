"""The display of attention (flux.show.attention): the scores S, the weights A, Δ_A and the softmax Jacobian
Δ_S = A ⊙ (Δ_A − 1·(1ᵀ(A ⊙ Δ_A))) named, transposed products read as transposes; display only."""
from sympy import HadamardProduct, Transpose

import flux
from flux.layers.attention import MultiHeadAttention
from flux.maths.graph import topological_order


class SelfAttention(flux.Model):
    Wq = flux.param("k", "d"); Wk = flux.param("k", "d"); Wv = flux.param("v", "d")  # noqa: E702
    X = flux.tokens("d")

    def forward(self, X):
        Q, K, V = self.Wq * X, self.Wk * X, self.Wv * X
        return V * flux.softmax(K.T * Q / flux.sqrt(self.k), axis=0)


def lines(model) -> list:
    return [line.strip() for line in repr(model.derivation).splitlines()]


def test_attention_reads_as_a_textbook_writes_it():
    shown = lines(SelfAttention)
    for line in ("S = (1/sqrt(k))·Xᵀ·Wkᵀ·Wq·X", "A = softmax↓(S)", "y = Wv·X·A", "Δ_A = Xᵀ·Wvᵀ·Δ",
                 "Δ_S = (Δ_A − (1·(1ᵀ·(Δ_A ⊙ A)))) ⊙ A", "∂L/∂Wq = (1/sqrt(k))·Wk·X·Δ_S·Xᵀ",
                 "∂L/∂Wk = (1/sqrt(k))·Wq·X·Δ_Sᵀ·Xᵀ", "∂L/∂Wv = Δ·Aᵀ·Xᵀ"):
        assert line in shown, (line, shown)
    latex = flux.latex(SelfAttention.derivation)
    assert r"\Delta_S &= (\Delta_A - (\mathbf{1}\, (\mathbf{1}^{\top} (\Delta_A \odot A)))) \odot A" in latex
    assert r"\Delta_S^{\top}" in latex


def test_a_causal_mask_and_several_heads():
    class Causal(SelfAttention):
        def forward(self, X):
            Q, K, V = self.Wq * X, self.Wk * X, self.Wv * X
            return V * flux.softmax(flux.causal(K.T * Q / flux.sqrt(self.k)), axis=0)

    shown = lines(Causal)
    assert "A = softmax↓(causal(S))" in shown and "Δ_S = mask((Δ_A − (1·(1ᵀ·(Δ_A ⊙ A)))) ⊙ A)" in shown
    heads = lines(MultiHeadAttention(4, 2))
    assert {"A₁ = softmax↓(S₁)", "A₂ = softmax↓(S₂)", "Δ_S₂ = (Δ_A₂ − (1·(1ᵀ·(Δ_A₂ ⊙ A₂)))) ⊙ A₂"} <= set(heads)


def test_names_are_for_reading_only():
    """The derivation's gradients keep the traced maths: no transpose of a ⊙ product, the softmax written out."""
    gradients = SelfAttention.derivation.gradients
    text = str(gradients["Wk"])
    repr(SelfAttention.derivation)
    assert str(gradients["Wk"]) == text and "softmax" in text
    assert not any(isinstance(node, Transpose) and isinstance(node.arg, HadamardProduct)
                   for node in topological_order([gradients["Wk"]]))
