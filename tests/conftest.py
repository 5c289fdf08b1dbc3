"""Shared test setup: one kernel cache for the whole session, so each model compiles once."""
import os
from pathlib import Path

# Compiled kernels are shared across tests (and across runs) through the on-disk cache.
os.environ.setdefault("FLUX_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".flux_cache"))
