"""Built-in layers, written in the same syntax as user layers: activations, basic (Dense, Chain, Parallel),
normalisation (LayerNorm, RMSNorm), gates (Highway, GLU, Bilinear, SkipConnection), dropout, recurrent."""
