"""Shared test setup: one kernel cache for the whole session, so each model compiles once."""
import os
from pathlib import Path

import pytest

# Compiled kernels are shared across tests (and across runs) through the on-disk cache.
os.environ.setdefault("FLUX_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".flux_cache"))
# The suite runs on the numba tier, deterministically (no background compile, no switch); tests/test_tiers.py runs
# the NumPy tier and the switch on purpose.
os.environ.setdefault("FLUX_TIER", "numba")

from flux import cache, pipeline  # noqa: E402  (after the cache directory is chosen)


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """A fresh FLUX_CACHE_DIR (not yet created) and empty in-memory caches, so the test compiles, or imports from
    disk, from scratch."""
    directory = tmp_path / "cache"
    monkeypatch.setenv("FLUX_CACHE_DIR", str(directory))
    monkeypatch.setattr(cache, "_fallback_directory", None)
    forget_compiled_programs(monkeypatch)
    return directory


def forget_compiled_programs(monkeypatch):
    """Empty the in-memory derivations and programs (models built afterwards look at the disk cache again)."""
    monkeypatch.setattr(pipeline, "_programs", {})
    monkeypatch.setattr(pipeline, "_derivations", {})


# ---- scheduling on the xdist workers (`--dist loadfile`, pyproject.toml) -------------------------------------------
# Compiling kernels is most of the suite's time. A file's tests share compiled models (module fixtures, the same
# model in several tests), so each file runs on one worker; files that compile the same kernels run on one worker one
# after the other, so the second finds them in memory instead of compiling them again at once on the other worker.
SHARED_KERNELS = {
    "test_token_step.py": "test_attention.py",  # MultiHeadAttention and the TransformerBlock (causal)
    "test_tiers.py": "test_properties.py",  # the random layers (test_tiers draws test_properties' examples)
    "test_recurrence.py": "test_recurrent_step.py",  # Recurrent, LSTM, GRU, Chain(LSTM, Dense(σ)), LearnableStart
}
# The slowest groups start first, so the last group to start is a short one (longest processing time first; the
# rest follow in collection order). Measured with `--durations` and compile times; update when they change.
SLOWEST_FIRST = ["test_attention.py", "test_properties.py", "test_recurrent_step.py", "test_notebooks.py",
                 "test_properties_tokens.py", "test_recurrence.py", "test_functions.py", "test_token_kept.py",
                 "test_edge_cases.py", "test_trust_files.py", "test_probes2.py", "test_language.py"]


def kernel_group(path: str) -> str:
    """The group of a test file (a path or a node id): its own name, or the file's it shares kernels with."""
    name = Path(path.split("::", 1)[0]).name
    return SHARED_KERNELS.get(name, name)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The slowest groups first, each group's files together (a stable sort: otherwise the collection's order)."""
    rank = {name: position for position, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(kernel_group(item.nodeid), len(rank)))


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: without it installed, pytest runs the files in turn
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """With `--dist loadfile`: one unit of work per group of files (kernel_group), in the collection's order."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class KernelGroupScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return kernel_group(nodeid)

    config.option.loadscopereorder = False  # keep SLOWEST_FIRST (xdist would sort the groups by number of tests)
    return KernelGroupScheduling(config, log)


@pytest.fixture
def split_batches(monkeypatch):
    """set(n): n threads and no least work, so that every fused step of more than one sample cuts its batch into
    parts (flux.run.threads); `set.parts` records how many parts each split step ran."""
    import flux.run.threads
    import flux.step

    monkeypatch.setattr(flux.run.threads, "PARALLEL_WORK", 0)
    monkeypatch.setattr(flux.run.threads, "RECURRENT_PARALLEL_WORK", 0)
    monkeypatch.setattr(flux.run.threads, "_threads", None)
    parts = []

    def recording(calls):
        parts.append(len(calls))
        return flux.run.threads.run_parts(calls)

    monkeypatch.setattr(flux.step, "run_parts", recording)  # the fused steps' one caller (TrainStep._split)

    def set_threads(count: int) -> None:
        flux.set_num_threads(count)
    set_threads.parts = parts
    return set_threads
