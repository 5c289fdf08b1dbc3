"""`python -m flux`: the seed's perceptron, its derived maths, a look at its generated code, and a short training."""
import numpy as np

import flux
from flux import σ


class Perceptron(flux.Model):
    """y = σ(W x + b)"""

    W = flux.param("m", "n")
    b = flux.param("m")

    def forward(self, x):
        return σ(self.W * x + self.b)


def main() -> None:
    print("A layer written once, as maths:\n")
    print("    class Perceptron(flux.Model):")
    print('        W = flux.param("m", "n")')
    print('        b = flux.param("m")')
    print("        def forward(self, x):")
    print("            return σ(self.W * x + self.b)\n")
    print("flux traced it with SymPy and derived its gradients (Perceptron.derivation):\n")
    print(Perceptron.derivation)
    print("\n...and wrote this backward kernel (Perceptron.kernels.backward.source), compiled by numba:\n")
    print(Perceptron.kernels.backward.source)

    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (200, 2))
    Y = (X[:, :1] + 2 * X[:, 1:] > 0.25).astype(float)  # a linearly separable problem
    model = Perceptron(W=rng.normal(0, 0.1, (1, 2)), b=np.zeros(1))
    history = flux.train(model, flux.binarycrossentropy, (X, Y), flux.Adam(0.05), epochs=60, batch_size=20,
                         rng=1, progress=False, metrics=["accuracy"])
    print(f"Trained on 200 points for 60 epochs: loss {history['loss'][0]:.3f} → {history['loss'][-1]:.3f}, "
          f"accuracy {history['accuracy'][-1]:.0%}")
    print(f"{model}")


if __name__ == "__main__":
    main()
