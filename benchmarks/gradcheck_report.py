"""Worst gradcheck error (float64, against central finite differences) of every model the issues name.

    python benchmarks/gradcheck_report.py      (from the repository root)
"""
import sys, numpy as np, flux
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parent.parent / 'tests'))
from models import perceptron, two_layer, gated_cell, TwoTower, Halves, LossOf, SoftmaxCrossEntropy
from flux import Chain, Dense, Concat, relu, σ, tanh
rng = np.random.default_rng(0)
oh = lambda n,k: np.eye(k)[rng.integers(0,k,n)]
cases = {
 "Perceptron": (perceptron(), (rng.standard_normal((7,5)),)),
 "two layers in one forward": (two_layer(), (rng.standard_normal((7,4)),)),
 "gated cell (hadamard, tanh, σ)": (gated_cell(), (rng.standard_normal((7,4)),)),
 "3-layer Chain relu/σ/tanh": (Chain(Dense(5,8,relu,rng=1,dtype=np.float64),Dense(8,6,σ,rng=2,dtype=np.float64),Dense(6,3,tanh,rng=3,dtype=np.float64)), (rng.standard_normal((6,5)),)),
 "TwoTower split/merge": (TwoTower(a=perceptron(seed=1), b=perceptron(seed=2)), (rng.standard_normal((5,5)),)),
 "Concat of two branches": (Concat(Dense(4,3,tanh,rng=0,dtype=np.float64), Dense(4,2,σ,rng=1,dtype=np.float64)), (rng.standard_normal((5,4)),)),
 "slice split": (Halves(A=rng.standard_normal((2,3)), B=rng.standard_normal((4,5)), dtype=np.float64), (rng.standard_normal((6,8)),)),
 "softmax + crossentropy": (SoftmaxCrossEntropy(), (rng.standard_normal((4,6)), oh(4,6))),
 "logitcrossentropy at ±1000": (LossOf(flux.logitcrossentropy), (np.array([[1000.0,-1000.0,0.0],[-1000.0,1000.0,999.0]]), np.array([[0.0,1,0],[0,0,1]]))),
}
for name,(m,args) in cases.items():
    kw = {"eps":1e-4} if "1000" in name else {}
    print(f"{name}: {flux.gradcheck(m,*args,**kw):.1e}")
for name, make in [("Recurrent", lambda: flux.Recurrent(3,5,2,rng=0,dtype=np.float64)), ("LSTM", lambda: flux.LSTM(3,5,rng=0,dtype=np.float64)), ("GRU", lambda: flux.GRU(3,5,rng=0,dtype=np.float64))]:
    for T in (1,2,7):
        m = make()
        init = {n: rng.standard_normal((2, 5)) for n in type(m).declared_states()}  # random h₀: checks ∂L/∂h₀ too
        print(f"{name} T={T}: {flux.gradcheck(m, rng.standard_normal((2,T,3)), initial=init):.1e}")
