"""Regression tests for bugs found by the fifth round of probing flux: what the maths shows against what the kernels
compute, hostile model files, the kernel cache, and training hooks.

Each test failed before its fix (the commit naming the bug). Behaviour probes run on the NumPy tier (nothing to
compile); numeric ones on numba too, with small models that share their kernels through the session's cache.
"""
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

import flux
from test_probes2 import F64, numpy_tier  # noqa: F401  (numpy_tier is a fixture: FLUX_TIER=numpy)


# ---- the maths shown: a division by a product reads as one ---------------------------------------------------------


class OverProduct(flux.Model):
    """y = x ⊘ (W·x) ⊘ (x + 2)."""
    W = flux.param("n", "n")

    def forward(self, x):
        return x / flux.hadamard(self.W * x, x + 2)


def test_a_division_by_a_matrix_product_keeps_its_parentheses():
    """Bug: a ⊘ divisor was parenthesised only below ⊙'s precedence, so x / (W·x) read `x ⊘ W·x` — (x ⊘ W)·x to a
    reader — while the same product as a ⊙ factor read `(W·x) ⊙ x`."""
    text = repr(OverProduct.derivation)
    assert "y = x ⊘ (W·x) ⊘ (x + 2)" in text
    assert "∂L/∂x = δ₁ ⊙ (W·x) + Δ ⊘ (W·x) ⊘ (x + 2) + Wᵀ·δ₂" in text
    assert r"y &= x \oslash (W x) \oslash (x + 2)" in flux.latex(OverProduct.derivation)


# ---- model files: refused before anything is inflated -------------------------------------------------------------


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array)
    return buffer.getvalue()


def members_of(path) -> dict:
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def write_archive(path, members: list, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return path


@pytest.fixture
def saved_dense(tmp_path):
    path = tmp_path / "dense.npz"
    flux.save(flux.Dense(3, 2, rng=0), path)
    return path


@pytest.mark.parametrize("member", ["param/W.npy", "junk.npy"])
def test_a_zip_bomb_is_refused_before_it_is_inflated(numpy_tier, saved_dense, tmp_path, member):
    """Bug: a 20 KB member of deflated zeros declaring 20 MB (a 4 MB one: 4 GB) was inflated into memory — a member
    flux never uses included — before any check; the file loaded (or failed after allocating it all)."""
    zeros = bytes(20 * 2 ** 20)
    members = {**members_of(saved_dense), member: npy_bytes(np.zeros(1, np.float32))[:128] + zeros}
    bomb = write_archive(tmp_path / "bomb.npz", list(members.items()), zipfile.ZIP_DEFLATED)
    assert bomb.stat().st_size < 100_000
    with pytest.raises(ValueError, match=rf"bomb.npz is refused: its compressed members would inflate from \d+ to "
                                         rf"\d+ bytes \(more than 100×; {member} from"):
        flux.load(bomb)
    with pytest.raises(ValueError, match="bomb.npz is refused"):
        flux.load_optimiser(bomb)
    small = write_archive(tmp_path / "compressed.npz", list(members_of(saved_dense).items()), zipfile.ZIP_DEFLATED)
    assert flux.load(small).params["W"].shape == (2, 3)  # a compressed file of a few zeros still loads


def test_a_member_named_twice_is_refused(numpy_tier, saved_dense, tmp_path):
    """Bug: two members named param/W.npy loaded the last one without a word (other zip readers show the first), so a
    file could show one set of weights to a reviewer's tool and load another."""
    import warnings

    members = list(members_of(saved_dense).items()) + [("param/W.npy", npy_bytes(np.full((2, 3), 7, np.float32)))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate it is asked to write
        twice = write_archive(tmp_path / "twice.npz", members)
    with pytest.raises(ValueError, match="twice.npz is refused: it holds 4 members, two of them named 'param/W.npy'"):
        flux.load(twice)


def test_a_member_that_is_no_array_is_named(numpy_tier, saved_dense, tmp_path):
    """Bug: a param/W.npy member holding text (or a zip symlink entry) failed as "malformed description
    (AttributeError("'bytes' object has no attribute 'shape'"))"."""
    members = {**members_of(saved_dense), "param/W.npy": b"/etc/passwd"}
    odd = write_archive(tmp_path / "odd.npz", list(members.items()))
    with pytest.raises(ValueError, match="odd.npz cannot be read — its entry 'param/W' is not a NumPy array"):
        flux.load(odd)


# ---- the kernel cache: flux's own cache=True helpers are checked as generated modules are ---------------------------

PLANTED = """
import os, pickle, sys
from pathlib import Path
import numpy as np
from flux import cache, products
index = Path(products.add_into._cache._cache_file._index_path)  # where numba looks for add_into's machine code
index.parent.mkdir(parents=True, exist_ok=True)
class Planted:
    def __reduce__(self):
        return (os.system, (f"touch {sys.argv[1]}",))
index.write_bytes(pickle.dumps(Planted()))
os.chown(index, 65534, 65534)
path = Path(sys.argv[2]) / "m_float64_0123.py"
path.write_text(cache.sealed("# flux-module-key: k\\nfrom flux.products import add_into\\n\\n\\ndef f(c, v):\\n"
                             "    add_into(c, v, 2.0)\\n\\n# end of generated module\\n"))
c = np.zeros(3)
cache.import_file(path, "k").f(c, np.ones(3))
print(c)
"""


@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="gives a file to another user: root")
def test_machine_code_of_flux_own_helpers_under_numba_cache_dir_is_checked(tmp_path):
    """Bug: with NUMBA_CACHE_DIR set, numba keeps flux.products' (fastmath's, optimiser_updates') machine code under
    it, and unpickled an index another user planted there when a kernel calling add_into compiled: code ran as you.
    The generated modules' files were checked; flux's own were not. Now they are checked as the cache is, and when
    refused compile without numba's cache, with a warning."""
    import subprocess
    import sys

    (tmp_path / "modules").mkdir()
    ran = tmp_path / "ran"
    environment = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba"),
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(flux.__file__).parent.parent),
                                                               os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", PLANTED, str(ran), str(tmp_path / "modules")], env=environment,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "[2. 2. 2.]" in done.stdout and not ran.exists()
    assert "not trusting numba's cached machine code of flux.products" in done.stderr
    assert "add_into-" in done.stderr and "is owned by uid 65534" in done.stderr


# ---- back or update set on an instance: honoured by flux.train and a Chain, refused by a fused step -----------------


def test_back_or_update_set_on_an_instance_is_called_or_refused_never_skipped(numpy_tier):
    """Bug: the checks for a model's own `back`/`update` read its class only, so `model.update = frozen` (or
    `layer.back = clipped`) set on the instance was skipped without a word by flux.train (it used the fused step),
    compile_step and a fused Chain: the frozen bias moved, Δ was not clipped."""
    rng = np.random.default_rng(4)
    x, t = rng.standard_normal((8, 3)), rng.standard_normal((8, 2))
    frozen = flux.Dense(3, 2, rng=1, dtype=F64)

    def update_all_but_the_bias(optimiser=None, *, lr=None):
        frozen.grads["b"][...] = 0
        flux.Dense.update(frozen, optimiser, lr=lr)

    frozen.update = update_all_but_the_bias
    b, W = frozen.params["b"].copy(), frozen.params["W"].copy()
    flux.train(frozen, flux.mse, (x, t), flux.SGD(0.1), epochs=2, batch_size=4)
    assert np.array_equal(frozen.params["b"], b) and not np.array_equal(frozen.params["W"], W)
    with pytest.raises(TypeError, match=r"compile_step: Dense overrides Dense.update \(set on the instance\)"):
        flux.compile_step(frozen, flux.mse, flux.SGD(0.1))

    clipped, calls = flux.Dense(3, 2, rng=1, dtype=F64), []

    def clip_then_back(Δ):
        calls.append(len(Δ))
        return flux.Dense.back(clipped, np.clip(Δ, -1e-3, 1e-3))

    clipped.back = clip_then_back
    chain = flux.Chain(flux.Dense(3, 3, rng=2, dtype=F64), clipped)
    y = chain(x)
    chain.back(np.ones_like(y))
    assert calls == [8]  # the Chain runs the layer with its own back alone, and calls it
    with pytest.raises(TypeError, match=r"Chain holds a sub-model that overrides Dense.back \(set on the instance\)"):
        flux.compile_step(chain, flux.mse, flux.SGD(0.1))


def test_a_numba_cache_dir_others_can_write_is_refused_before_numba_fills_it(monkeypatch, tmp_path):
    """Bug: a generated module's machine-code directory under NUMBA_CACHE_DIR was checked only once it existed, so the
    first process trusted a NUMBA_CACHE_DIR anyone could write (mode 777) and let numba fill it; flux's own helpers'
    was never checked. Both are now refused before numba makes the directory."""
    from numba.core import config
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    from flux import cache, fastmath

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setattr(config, "CACHE_DIR", str(shared))
    module = tmp_path / "m_float32_0123.py"
    assert not cache.machine_code_directory(module).exists()
    assert "shared, above it, can be written by its group and others" in cache.untrusted_module(module)
    monkeypatch.setattr(cache, "_guarded_helpers", {})
    helpers = [f for f in vars(fastmath).values() if isinstance(f, Dispatcher)]
    for function in helpers:
        monkeypatch.setattr(function, "_cache", function._cache)  # restored after the test
    with pytest.warns(RuntimeWarning, match="not trusting numba's cached machine code of flux.fastmath: .*shared"):
        assert cache.guard_helper_machine_code("fastmath")
    assert helpers and all(isinstance(f._cache, NullCache) for f in helpers)
    shared.chmod(0o755)
    assert cache.untrusted_module(module) is None


# ---- a file (or an assignment) with what the constructor would turn into something else -----------------------------


@pytest.mark.parametrize("make, attribute, value, message", [
    (lambda: flux.Dense(3, 2), "activation", "relu", r"Dense: activation 'relu' must be the function itself \(flux.relu\)"),
    (lambda: flux.PositionalEncoding(4), "d", -2, "PositionalEncoding: d must be a positive integer"),
])
def test_an_attribute_the_constructor_would_convert_or_refuse_is_refused_when_loaded(numpy_tier, tmp_path, make,
                                                                                     attribute, value, message):
    """Bug: a file's activation "relu" (a name, which Dense(…, "relu") turns into flux.relu) loaded and failed at the
    first call with "Dense.forward cannot be traced: TypeError: 'str' object is not callable"; a PositionalEncoding
    with d = −2 loaded."""
    from test_probes import rewrite_description

    path = tmp_path / "layer.npz"
    flux.save(make(), path)
    rewrite_description(path, lambda description: description["model"]["attributes"].__setitem__(attribute, value))
    with pytest.raises(ValueError, match=message):
        flux.load(path)
    built = make()
    built(np.ones((1, 3, 4) if attribute == "d" else (1, 3), np.float32))
    with pytest.raises(TypeError, match=message):
        setattr(built, attribute, value)


def test_a_chain_puts_back_gradients_when_a_back_set_on_an_instance_raises(numpy_tier):
    """As for a class's own back (tests/test_trust_edges): a `back` set on a layer instance that raises leaves the
    layers above it without the gradients they had just added."""
    def refuses(Δ):
        raise ValueError("no gradient today")

    below, above = flux.Dense(3, 3, rng=1, dtype=F64), flux.Dense(3, 2, rng=2, dtype=F64)
    below.back = refuses
    chain = flux.Chain(below, above)
    y = chain(np.ones((4, 3)))
    with pytest.raises(ValueError, match="no gradient today"):
        chain.back(np.ones_like(y))
    assert not any(g.any() for g in chain.grads.values())
