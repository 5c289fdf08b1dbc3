"""One model, several threads: forward calls run in parallel and are correct; `back` never mixes up batches.

The kernels release the GIL (numba nogil=True), so threads really run at the same time. A model keeps one forward
pass for `back` (its tape); forward and back of one model belong to one thread, one pair at a time, and `back` of a
forward pass made by another thread raises instead of computing gradients of the wrong batch.
"""
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import flux
from models import perceptron, two_layer

THREADS = 8
rng = np.random.default_rng(3)


def run_in_threads(function, arguments, threads=THREADS):
    """Run function(*a) for every a, all threads released at once by a barrier so that calls really overlap."""
    barrier = threading.Barrier(min(threads, len(arguments)))

    def task(a):
        barrier.wait()
        return function(*a)

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(task, arguments))


def test_forward_calls_from_many_threads_are_correct():
    model = two_layer(n=16, h=64, m=8)
    batches = [rng.standard_normal((256, 16)) for _ in range(THREADS)]
    expected = [model(x) for x in batches]

    def many_calls(x, k):
        return [model(x) for _ in range(20)]

    for k, results in enumerate(run_in_threads(many_calls, [(x, k) for k, x in enumerate(batches)])):
        for y in results:
            np.testing.assert_array_equal(y, expected[k])


def test_a_shared_activation_function_follows_each_callers_precision():
    """flux.tanh is one object; float32 and float64 callers must each get their own precision and values."""
    inputs = [rng.standard_normal((64, 5)).astype(np.float32 if k % 2 else np.float64) for k in range(THREADS)]

    def calls(x):
        return [flux.tanh(x) for _ in range(50)]

    for x, results in zip(inputs, run_in_threads(calls, [(x,) for x in inputs])):
        for y in results:
            assert y.dtype == x.dtype
            np.testing.assert_allclose(y, np.tanh(x), rtol=1e-6 if x.dtype == np.float32 else 1e-15)


def test_back_of_another_threads_forward_pass_is_refused_and_changes_nothing():
    model = perceptron()
    x_a, x_b, Δ = rng.standard_normal((4, 5)), rng.standard_normal((4, 5)), rng.standard_normal((4, 3))
    with ThreadPoolExecutor(1) as a, ThreadPoolExecutor(1) as b:
        a.submit(model, x_a).result()
        b.submit(model, x_b).result()  # overwrites the tape: A's forward pass is gone
        before = {k: g.copy() for k, g in model.grads.items()}
        with pytest.raises(RuntimeError, match="Perceptron.back: the forward pass to back-propagate was made by "
                                               "another thread"):
            a.submit(model.back, Δ).result()
        for k, g in model.grads.items():
            np.testing.assert_array_equal(g, before[k])
        dx = b.submit(model.back, Δ).result()  # B's own pair still works, with B's batch
    reference = perceptron()
    reference(x_b)
    np.testing.assert_allclose(dx, reference.back(Δ), rtol=1e-14)
    for k, g in model.grads.items():
        np.testing.assert_allclose(g, reference.grads[k], rtol=1e-14)


def test_forward_and_back_racing_on_one_model_are_correct_or_refused():
    """Whatever the interleaving: each `back` either returns its own batch's ∂L/∂x or raises; the accumulated
    gradients are exactly the sum over the backs that succeeded."""
    model = two_layer(n=6, h=32, m=4)
    batches = [(rng.standard_normal((64, 6)), rng.standard_normal((64, 4))) for _ in range(THREADS)]
    expected = []
    for x, Δ in batches:
        reference = two_layer(n=6, h=32, m=4)
        reference(x)
        expected.append((reference.back(Δ), reference.grads))

    def train_steps(k):
        x, Δ = batches[k]
        succeeded = 0
        for _ in range(25):
            model(x)
            try:
                dx = model.back(Δ)
            except RuntimeError as error:
                message = str(error)
                assert "made by another thread" in message or "no forward pass" in message, message
                continue
            np.testing.assert_allclose(dx, expected[k][0], rtol=1e-12)
            succeeded += 1
        return succeeded

    counts = run_in_threads(train_steps, [(k,) for k in range(THREADS)])
    assert sum(counts) > 0
    for name, g in model.grads.items():
        total = sum(count * grads[name] for count, (_, grads) in zip(counts, expected))
        np.testing.assert_allclose(g, total, rtol=1e-10, atol=1e-12)


def test_each_thread_training_its_own_model_gives_the_sequential_result():
    batches = [(rng.standard_normal((32, 5)), rng.standard_normal((32, 3))) for _ in range(THREADS)]

    def train(x, Δ):
        model = perceptron()
        for _ in range(10):
            model(x)
            model.back(Δ)
            model.update(lr=0.01)
        return model.params

    sequential = [train(x, Δ) for x, Δ in batches]
    for got, want in zip(run_in_threads(train, batches), sequential):
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])


def test_recurrent_forward_calls_from_many_threads_are_correct():
    model = flux.GRU(3, 8, rng=0, dtype=np.float64)
    sequences = [rng.standard_normal((4, 12, 3)) for _ in range(THREADS)]
    expected = [model(xs) for xs in sequences]
    results = run_in_threads(lambda xs: [model(xs) for _ in range(10)], [(xs,) for xs in sequences])
    for want, got in zip(expected, results):
        for ys in got:
            np.testing.assert_array_equal(ys, want)


def test_a_training_step_splits_its_batch_into_near_equal_parts(monkeypatch):
    from flux.run import threads

    monkeypatch.setattr(threads, "_threads", None)
    monkeypatch.setenv("FLUX_NUM_THREADS", "3")
    assert flux.get_num_threads() == 3
    work = threads.PARALLEL_WORK
    assert threads.batch_parts(16, work) == [(0, 5), (5, 10), (10, 16)]
    assert threads.batch_parts(2, work) == [(0, 1), (1, 2)]  # at most one part per sample
    assert threads.batch_parts(16, work - 1) == [(0, 16)]  # too little work to wake a thread
    flux.set_num_threads(1)
    assert threads.batch_parts(16, 10 ** 9) == [(0, 16)]
    for bad in (0, -1, 2.0, True, "2"):
        with pytest.raises(ValueError, match="flux.set_num_threads: expected a whole number"):
            flux.set_num_threads(bad)
    assert flux.get_num_threads() == 1
    monkeypatch.setattr(threads, "_threads", None)
    for bad in ("two", "0", "-2", "1.5"):
        monkeypatch.setenv("FLUX_NUM_THREADS", bad)
        with pytest.raises(ValueError, match=f"FLUX_NUM_THREADS must be a whole number of threads ≥ 1, got '{bad}'"):
            threads.batch_parts(2, 0)  # refused by any step, not only by one large enough to split


def test_parts_run_at_once_and_an_error_is_raised_after_every_part_ended():
    from flux.run.threads import run_parts

    barrier, ended = threading.Barrier(3, timeout=10), []

    def part(k):
        def run():
            barrier.wait()  # all three at once, or the barrier times out
            ended.append(k)
            if k == 0:
                raise KeyError("part 0")
            return k
        return run

    assert run_parts([lambda: 1, lambda: 2]) == [1, 2]
    with pytest.raises(KeyError, match="part 0"):
        run_parts([part(0), part(1), part(2)])
    assert sorted(ended) == [0, 1, 2]


def test_one_blas_thread_holds_until_the_last_thread_leaves_its_block():
    """`single_threaded_blas` is entered by several threads at once (a step's parts): the count is set to one by
    the first and restored by the last, not by the first to leave while another still runs its products."""
    from flux.blas import single_threaded_blas

    get, set_ = single_threaded_blas.functions()
    if get is None:
        pytest.skip("SciPy's BLAS is not OpenBLAS: flux leaves its threads alone")
    before = get()
    set_(2)
    try:
        first, second = single_threaded_blas(), single_threaded_blas()
        first.__enter__()
        second.__enter__()
        assert get() == 1
        first.__exit__(None, None, None)
        assert get() == 1  # the second block still runs
        second.__exit__(None, None, None)
        assert get() == 2
    finally:
        set_(before)


def test_one_fused_step_shared_by_threads_runs_one_call_at_a_time():
    """A step's gradient buffers are its own: eight threads stepping one model on one batch end where as many
    steps on one thread do (unguarded, two calls wrote the same buffers)."""
    x, t = rng.standard_normal((20000, 5)), rng.standard_normal((20000, 3))  # long kernels: calls overlap
    shared, alone = perceptron(), perceptron()
    step, reference = flux.compile_step(shared, flux.mse, flux.Momentum(0.01)), \
        flux.compile_step(alone, flux.mse, flux.Momentum(0.01))
    run_in_threads(lambda: [step(x, t) for _ in range(5)], [()] * THREADS)
    for _ in range(5 * THREADS):
        reference(x, t)
    for name, value in alone.params.items():
        np.testing.assert_allclose(shared.params[name], value, rtol=1e-12, err_msg=name)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork on this platform")
def test_a_forked_child_runs_parts_on_threads_of_its_own():
    """After a fork the child has none of the parent's pool threads: parts submitted to the parent's pool would wait
    forever (a training step that never returns in a forked worker)."""
    from flux.run.threads import run_parts

    assert run_parts([lambda: 1, lambda: 2]) == [1, 2]  # the parent's pool exists, its thread running
    child = os.fork()
    if child == 0:  # the child: exit 0 when the parts ran, 1 when they failed; the parent's timeout catches a hang
        code = 1
        try:
            code = 0 if run_parts([lambda: 3, lambda: 4]) == [3, 4] else 1
        finally:
            os._exit(code)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        done, status = os.waitpid(child, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(child, 9)
    os.waitpid(child, 0)
    pytest.fail("the forked child's run_parts did not return in 20 s")
