"""Regression tests for bugs found by the sixth round of probing flux — today's fused steps with their batch cut
into parts over threads (flux.run.threads), and a Chain run in turn putting back gradients when a user's back
raises — plus the split cases not tested elsewhere (class labels, token and recurrent, last=True).

Each regression test failed before its fix (the commit naming the bug). The split steps reuse the maths of
tests/test_positional.py and tests/test_recurrent_step.py, so their kernels come from the session's cache.
"""
import os
import threading
import time

import numpy as np
import pytest

import flux
from test_positional import Mix
from test_probes2 import F64, numpy_tier  # noqa: F401  (numpy_tier is a fixture: FLUX_TIER=numpy)

rng = np.random.default_rng(606)


# ---- a Chain run in turn: the failing user layer's own gradients are put back too ----------------------------------


class Checked(flux.Dense):
    """A user's own back: flux's (which adds this layer's gradients), then a check of Δ that may raise."""

    def back(self, Δ):
        out = super().back(Δ)
        if not np.all(np.abs(Δ) < 10):
            raise ValueError("Checked: Δ too large")
        return out


def checked_chain() -> flux.Chain:
    return flux.Chain(flux.Dense(3, 4, flux.tanh, rng=1, dtype=F64), Checked(4, 4, flux.tanh, rng=2, dtype=F64),
                      flux.Dense(4, 2, rng=3, dtype=F64))


def test_a_user_back_that_raises_after_adding_its_gradients_leaves_none(numpy_tier):
    """Bug: the Chain put back the gradients of the layers above the user's layer, not the user's layer's own
    (added by flux's back inside it before it raised): the next update silently applied them with the next batch's."""
    chain, reference = checked_chain(), checked_chain()
    x = rng.standard_normal((5, 3))
    y = chain(x)
    with pytest.raises(ValueError, match="Δ too large"):
        chain.back(100 * np.ones_like(y))
    assert not any(g.any() for g in chain.grads.values())
    for model in (chain, reference):  # the next step is exactly a fresh model's
        y = model(x)
        model.back(np.ones_like(y))
        model.update(flux.SGD(0.1))
    for key, value in reference.params.items():
        np.testing.assert_array_equal(chain.params[key], value, err_msg=key)


# ---- the shared pool: replaced by one step while another submits its parts ------------------------------------------


def test_a_pool_replaced_while_a_step_submits_still_runs_its_parts(monkeypatch):
    """Bug: a step needing more threads shut the shared pool down between another step's `pool()` and its
    `submit`: that step raised RuntimeError('cannot schedule new futures after shutdown')."""
    import flux.run.threads as threads

    monkeypatch.setattr(threads, "_pool", (0, None))
    other = []

    class Interrupted(threads.ThreadPoolExecutor):
        def submit(self, *arguments, **options):
            if not other:  # another thread's step, with more parts, asks for a larger pool just now
                other.append(threading.Thread(target=lambda: other.append(threads.run_parts([lambda: 0] * 4))))
                other[0].start()
                other[0].join(0.3)
            return super().submit(*arguments, **options)

    monkeypatch.setattr(threads, "ThreadPoolExecutor", Interrupted)
    assert threads.run_parts([lambda: 1, lambda: 2]) == [1, 2]
    other[0].join()
    assert other[1] == [0, 0, 0, 0]
    threads._pool[1].shutdown()


# ---- split = one thread, for the cases not tested elsewhere ---------------------------------------------------------


def same_training(make, loss, optimiser, batches, split_batches, last=False) -> list:
    """Train two copies, one on one thread and one split in `count` parts; equal losses, parameters, state."""
    split_model, plain_model = make(), make()
    options = {"last": True} if last else {}
    split_step = flux.compile_step(split_model, loss, optimiser(), **options)
    plain_step = flux.compile_step(plain_model, loss, optimiser(), **options)
    for x, target, count in batches:
        split_batches(1)
        expected = plain_step(x, target)
        split_batches(count)
        assert split_step(x, target) == pytest.approx(expected, rel=1e-12)
    for key, value in plain_model.params.items():
        np.testing.assert_allclose(split_model.params[key], value, rtol=1e-11, atol=1e-13, err_msg=key)
    for kind, table in plain_step.optimiser.state.items():
        for key, value in table.items():
            np.testing.assert_allclose(split_step.optimiser.state[kind][key], value, rtol=1e-11, atol=1e-13)
    assert split_step.optimiser.step_count == len(batches)
    return split_batches.parts


def token_chain() -> flux.Chain:
    """tests/test_positional.py's token part: Mix then a per-token Dense to 3 classes."""
    values = np.random.default_rng(7)
    return flux.Chain(Mix(W=values.normal(size=(4, 4)) / 2, dtype=F64), flux.Dense(4, 3, rng=6, dtype=F64))


def test_token_step_with_class_labels_split_is_the_one_thread_step(split_batches):
    batches = [(rng.standard_normal((n, steps, 4)), rng.integers(0, 3, (n, steps)), count)
               for n, steps, count in [(5, 4, 2), (5, 2, 3), (2, 3, 4), (7, 3, 3)]]  # uneven parts; N < threads
    parts = same_training(token_chain, flux.logitcrossentropy, lambda: flux.SGD(0.1), batches, split_batches)
    assert parts == [2, 3, 2, 3]


@pytest.mark.parametrize("last", [False, True])
def test_recurrent_step_with_class_labels_split_is_the_one_thread_step(split_batches, last):
    """tests/test_recurrent_step.py's labelled chain; last=True: one label per sequence, at its last step."""
    def model():
        return flux.Chain(flux.Recurrent(3, 4, 3, rng=0, dtype=F64), flux.softmax)

    batches = [(rng.standard_normal((n, steps, 3)), rng.integers(0, 3, (n,) if last else (n, steps)), count)
               for n, steps, count in [(5, 4, 2), (5, 3, 3), (2, 2, 3)]]  # T changes; N < threads
    parts = same_training(model, flux.crossentropy, lambda: flux.SGD(0.1), batches, split_batches, last=last)
    assert parts == [2, 3, 2]


# ---- unclear errors --------------------------------------------------------------------------------------------------


def test_a_target_of_the_wrong_shape_names_the_class_labels_a_loss_takes(split_batches):
    """Was: "the target must have shape (4, 3, 3), got (4, 4)" for a loss that takes labels (N, T) too — the labels'
    shape, the one most callers passed, was not named."""
    split_batches(2)
    step = flux.compile_step(token_chain(), flux.logitcrossentropy, flux.SGD(0.1))
    labels = r"must have shape \(4, 3, 3\), or class labels of shape \(4, 3\) .*got \(4, 4\)"
    with pytest.raises(ValueError, match=labels):
        step(rng.standard_normal((4, 3, 4)), rng.integers(0, 3, (4, 4)))
    recurrent = flux.Chain(flux.Recurrent(3, 4, 3, rng=0, dtype=F64), flux.softmax)
    step = flux.compile_step(recurrent, flux.crossentropy, flux.SGD(0.1), last=True)
    with pytest.raises(ValueError, match=r"must have shape \(4, 3\), or class labels of shape \(4,\), got \(4, 5\)"):
        step(rng.standard_normal((4, 5, 3)), rng.integers(0, 3, (4, 5)))
    step = flux.compile_step(flux.Recurrent(3, 4, 3, rng=0, dtype=F64), flux.mse, flux.SGD(0.1))
    with pytest.raises(ValueError, match=r"must have shape \(4, 5, 3\), got \(4, 5\)"):  # mse takes no labels
        step(rng.standard_normal((4, 5, 3)), rng.integers(0, 3, (4, 5)))


# ---- a fork while another thread is inside a step ------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork on this platform")
def test_a_child_forked_during_another_threads_step_can_call_that_step():
    """Bug: the step's lock (one call at a time) was copied into the child held by a thread the child does not
    have: the child's first call of the step waited forever (a forked worker that never returns)."""
    step = flux.compile_step(token_chain(), flux.logitcrossentropy, flux.SGD(0.1))
    x, labels = rng.standard_normal((2, 3, 4)), rng.integers(0, 3, (2, 3))
    step(x, labels)  # compiled for these arrays here: the child only runs it
    inside, leave = threading.Event(), threading.Event()

    def a_call_in_progress():
        with step._lock:  # as a call of the step on this thread holds it
            inside.set()
            leave.wait()

    caller = threading.Thread(target=a_call_in_progress)
    caller.start()
    inside.wait()
    try:
        child = os.fork()
        if child == 0:  # exit 0 when the step ran; the parent's timeout catches a hang
            code = 1
            try:
                code = 0 if np.isfinite(step(x, labels)) else 1
            finally:
                os._exit(code)
        assert exit_code(child, seconds=10) == 0
    finally:
        leave.set()
        caller.join()


def exit_code(child: int, seconds: float) -> int:
    """The forked child's exit code; killed, and the test failed, when it has not exited within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(child, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(child, 9)
    os.waitpid(child, 0)
    pytest.fail(f"the forked child did not return in {seconds} s")
