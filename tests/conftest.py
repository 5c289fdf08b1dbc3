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
