"""Generated kernel modules on disk: real `.py` files, so numba's `cache=True` keeps their machine code.

The directory is `$FLUX_CACHE_DIR`, else `~/.cache/flux`. A module is written atomically (a temporary file,
then `os.replace`), so processes compiling the same model at once each see either nothing or a whole file.
A file that fails to load (truncated, corrupted, stale) is regenerated with a warning; a directory that cannot
be written leads to a private temporary directory, also with a warning. Neither ever changes a result.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
import warnings
from pathlib import Path
from types import ModuleType
from typing import Callable

CODEGEN_VERSION = "1"  # bump when generated code changes meaning: old cache files are then never read
_fallback_directory: Path | None = None


def cache_directory() -> Path:
    """Where generated modules live: $FLUX_CACHE_DIR or ~/.cache/flux."""
    configured = os.environ.get("FLUX_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "flux"


def module_key(*parts: str) -> str:
    """A short stable hash naming a module."""
    digest = hashlib.sha256("\x00".join((CODEGEN_VERSION,) + parts).encode()).hexdigest()
    return digest[:20]


def load_module(name: str, key: str, generate: Callable[[], str]) -> ModuleType:
    """Import the module `name_key.py` from the cache, generating (and writing) it first if needed."""
    directory = writable_directory()
    path = directory / f"{name}_{key}.py"
    if path.exists():
        try:
            return import_file(path, key)
        except Exception as error:  # a damaged file is rewritten, never trusted
            warnings.warn(f"flux: cache file {path} could not be loaded ({type(error).__name__}: {error}); "
                          "regenerating it", RuntimeWarning, stacklevel=3)
    source = generate()
    write_atomically(path, source)
    return import_file(path, key)


def import_file(path: Path, key: str) -> ModuleType:
    source = path.read_text(encoding="utf-8")
    if f"# flux-module-key: {key}\n" not in source or not source.rstrip().endswith("# end of generated module"):
        raise ValueError("file is incomplete or was made for another model")
    module_name = f"flux_generated_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[module_name] = module
    return module


def write_atomically(path: Path, text: str) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        if path.exists() and path.read_text(encoding="utf-8") == text:
            os.unlink(temporary)  # same text already there: keep its timestamp, so numba's cache stays valid
            return
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def writable_directory() -> Path:
    """The cache directory if it can be written, else a private temporary one (with a warning, once)."""
    global _fallback_directory
    directory = cache_directory()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=directory, prefix=".probe", delete=True)
        probe.close()
        return directory
    except OSError as error:
        if _fallback_directory is None:
            _fallback_directory = Path(tempfile.mkdtemp(prefix="flux-cache-"))
            warnings.warn(f"flux: cache directory {directory} is not writable ({error}); using "
                          f"{_fallback_directory} for this process", RuntimeWarning, stacklevel=3)
        return _fallback_directory
