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

# pytest-xdist (`-n auto`, pyproject.toml) hands out whole test files, each to one worker (`pytest_xdist_make_scheduler`
# below), so two workers never compile one file's models at the same time: the second would compile them again
# rather than wait for the disk cache. Files whose tests build the same models form one unit: test_tiers.py replays
# test_properties.py's first feed-forward draws, after it. The longest units start first, so the run does not end
# with one worker busy on a long file while the other waits (the order of their durations from an empty cache).
SHARED_UNITS = {"test_tiers": "test_properties"}
LONGEST_FIRST = ("test_properties", "test_recurrent_step", "test_attention", "test_notebooks", "test_recurrence",
                 "test_properties_tokens", "test_trust_edges", "test_distributed", "test_step")


def unit_of(nodeid: str) -> str:
    """The unit of work a test belongs to: its file's name, or the name of the file it shares models with."""
    stem = Path(nodeid.split("::", 1)[0]).stem
    return SHARED_UNITS.get(stem, stem)


def pytest_collection_modifyitems(config, items):
    """The longest units first (each file's tests in their order; the rest in collection order)."""
    rank = {name: k for k, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(unit_of(item.nodeid), len(rank)))


def pytest_xdist_make_scheduler(config, log):
    """xdist's scheduling by scope, a scope being a unit (`unit_of`), in collection order."""
    from xdist.scheduler import LoadScopeScheduling

    class ByUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    return ByUnit(config, log)


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
