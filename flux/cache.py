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

_fallback_directory: Path | None = None
_generator_hash: str | None = None
# Everything whose source decides what a generated module says: these packages (every file in them) and modules.
GENERATOR_PACKAGES = ("maths", "trace", "derive", "generate", "show")
GENERATOR_MODULES = ("pipeline", "fastmath", "step", "optimisers")


def cache_directory() -> Path:
    """Where generated modules live: $FLUX_CACHE_DIR or ~/.cache/flux."""
    configured = os.environ.get("FLUX_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "flux"


def module_key(*parts: str) -> str:
    """A short stable hash naming a module: of `parts` and of flux's own code generator, so that a cached
    module made by another version of flux is never read."""
    digest = hashlib.sha256("\x00".join((generator_hash(),) + parts).encode()).hexdigest()
    return digest[:20]


def generator_hash() -> str:
    """A hash of the source of every flux module that decides what generated code says (a missing one is an
    error, never hashed as empty: a key that ignored it would hand out modules made by other code)."""
    global _generator_hash
    if _generator_hash is None:
        package = Path(__file__).resolve().parent
        files = [package / f"{name}.py" for name in GENERATOR_MODULES]
        for folder in GENERATOR_PACKAGES:
            if not (package / folder / "__init__.py").is_file():
                raise FileNotFoundError(f"flux: the generator package {package / folder} is missing")
            files += sorted((package / folder).rglob("*.py"))
        digest = hashlib.sha256()
        for path in files:
            digest.update(path.relative_to(package).as_posix().encode() + b"\x00" + path.read_bytes())
        _generator_hash = digest.hexdigest()
    return _generator_hash


def load_module(name: str, key: str, generate: Callable[[], str]) -> ModuleType:
    """Import the module `name_key.py` from the cache, generating (and writing) it first if needed."""
    directory = writable_directory()
    path = directory / f"{name}_{key}.py"
    if path.exists():
        discard_damaged_machine_code(path)
        try:
            return import_file(path, key)
        except Exception as error:  # a damaged file is rewritten, never trusted
            warnings.warn(f"flux: cache file {path} could not be loaded ({type(error).__name__}: {error}); "
                          "regenerating it", RuntimeWarning, stacklevel=3)
    source = generate()
    write_atomically(path, source)
    return import_file(path, key)


def discard_damaged_machine_code(path: Path) -> None:
    """Delete numba's cached machine code for a module if any of it cannot be read (numba itself would raise on the
    first call instead of recompiling), with a warning; numba then compiles and caches it again."""
    import io
    import pickletools

    files = [f for f in (path.parent / "__pycache__").glob(f"{path.stem}.*") if f.suffix in (".nbi", ".nbc")]
    for file in files:
        try:  # scan the pickles without running them: an index is two (version, then data), a data file one
            stream = io.BytesIO(file.read_bytes())
            for _ in range(2 if file.suffix == ".nbi" else 1):
                for _ in pickletools.genops(stream):
                    pass
        except Exception as error:
            warnings.warn(f"flux: numba's cached machine code {file} could not be read ({type(error).__name__}: "
                          f"{error}); recompiling", RuntimeWarning, stacklevel=4)
            for damaged in files:
                damaged.unlink(missing_ok=True)
            return


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
