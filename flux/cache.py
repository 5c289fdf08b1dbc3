"""Generated kernel modules on disk: real `.py` files, so numba's `cache=True` keeps their machine code.

The directory is `$FLUX_CACHE_DIR`, else `$XDG_CACHE_HOME/flux` or `~/.cache/flux`, created private (mode 0700).

Trust policy — flux imports a cached module, and lets numba unpickle its cached machine code (`__pycache__/*.nbi`,
`*.nbc`), only from places no other user could have written, checked as ssh checks its keys, before every import:
* the cache directory (symbolic links resolved) must be owned by you and not writable by group or others, and every
  directory above it must be owned by you or root and not writable by group or others unless it is sticky (/tmp);
* its `__pycache__` must be owned by you and not writable by group or others (or, when NUMBA_CACHE_DIR is set, numba
  keeps the machine code there: that directory for the module, and every directory above it, checked as the cache);
* each generated module must be a regular file (not a link) owned by you and not writable by group or others; so
  must numba's files for it — except that numba's files in a `__pycache__` only you can enter (mode 0700, which flux
  creates) are tightened instead of refused, since numba creates them with your umask.
* numba's machine code for flux's own `cache=True` modules (products, fastmath, small_products, optimiser_updates),
  which numba keeps beside them or under NUMBA_CACHE_DIR, is checked the same way (root may own an installed flux's);
  when refused, those modules compile in the process without numba's cache, with a warning.
Otherwise flux warns, says why, and uses a private temporary directory for that module (for the whole process if the
directory itself is refused), so an untrusted file is never imported.

Integrity — every module carries a last line `# flux-text-sha256: <hash of the text above it>`, written with the file
and checked before importing it, with the model key and the end marker. A file whose text differs from what flux
wrote (an edited formula, a truncated or damaged file, anything added such as `raise SystemExit`) is therefore never
executed: flux warns, regenerates it from the maths and replaces it. A module that still fails to import (including
one raising SystemExit or another BaseException other than KeyboardInterrupt) is reported with a warning and
regenerated; a freshly generated one that fails is deleted and raises RuntimeError — never left in place. numba's
machine-code files whose pickles cannot be parsed (scanned with pickletools, which runs nothing) are deleted and
recompiled with a warning. The hash guards against accidents and against anyone who cannot write your files; a user
who can write your cache as you can also run code as you, which no check inside the same account can prevent.

A module is written atomically (a private temporary file, then `os.replace`), so processes compiling the same model
at once each see either nothing or a whole file. A directory that cannot be created or written also leads to a
private temporary directory with a warning. None of this ever changes a result.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import stat
import sys
import tempfile
import warnings
from pathlib import Path
from types import ModuleType
from typing import Callable

_fallback_directory: Path | None = None
_refused_directories: set[Path] = set()
_guarded_helpers: dict[str, str | None] = {}  # flux.<name> → why its machine code is not trusted, or None
_generator_hash: str | None = None
# Everything whose source decides what a generated module says: these packages (every file in them) and modules
# (cache.py: the seal written into every module).
GENERATOR_PACKAGES = ("maths", "trace", "derive", "generate", "show")
GENERATOR_MODULES = ("pipeline", "fastmath", "products", "small_products", "optimiser_updates", "blas", "step",
                     "optimisers", "cache")
SEAL = "# flux-text-sha256: "
# the first and last lines of every generated module (flux/generate/module.py writes them; cache.py checks them)
KEY_LINE = "# flux-module-key: "
END = "# end of generated module"


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


def module_file_name(name: str, key: str) -> str:
    """`name_key.py`, with every character of `name` that is not a letter, digit or _ written as _: a class made by
    type("../x", …) or named "a/b", "**" cannot put its module outside the checked cache directory."""
    return re.sub(r"\W", "_", name) + f"_{key}.py"


def load_module(name: str, key: str, generate: Callable[[], str]) -> ModuleType:
    """Import the module `name_key.py` from the cache, generating (and writing) it first if needed.

    Only a trusted file (see the module docstring) whose seal matches its text is ever imported."""
    path = trusted_directory() / module_file_name(name, key)
    refusal = untrusted_module(path)
    if refusal:
        path = private_directory() / path.name
        warnings.warn(f"flux: not trusting the cache: {refusal}; compiling {name} in {path.parent} instead (fix the "
                      "file's permissions or remove it to use the cache again)", RuntimeWarning, stacklevel=3)
    if path.exists():
        discard_damaged_machine_code(path)
        try:
            return import_file(path, key)
        except KeyboardInterrupt:
            raise
        except BaseException as error:  # a damaged or edited file (even one raising SystemExit) is rewritten
            warnings.warn(f"flux: cache file {path} could not be loaded ({type(error).__name__}: {error}); "
                          "regenerating it", RuntimeWarning, stacklevel=3)
    write_atomically(path, sealed(generate()))
    try:
        return import_file(path, key)
    except KeyboardInterrupt:
        raise
    except BaseException as error:
        path.unlink(missing_ok=True)  # never leave a module that does not load
        raise RuntimeError(f"flux: the module generated for {name} does not load ({type(error).__name__}: {error}); "
                           "this is a bug in flux, please report it") from None


def module_file(name: str, key: str, generate: Callable[[], str]) -> Path:
    """The path of the module `name_key.py`, written first if it is missing or not what flux wrote (for another
    process to import: the background compile), in the trusted cache or else a private directory."""
    path = trusted_directory() / module_file_name(name, key)
    if untrusted_module(path):
        path = private_directory() / path.name
    try:
        intact = unsealed(path.read_text(encoding="utf-8")) is not None
    except (OSError, UnicodeDecodeError):
        intact = False
    if not intact:
        write_atomically(path, sealed(generate()))
    return path


def import_trusted(path: Path, key: str) -> ModuleType:
    """Import a module `module_file` wrote (in another process), refusing it as `load_module` would."""
    refusal = untrusted_module(path)
    if refusal:
        raise PermissionError(f"flux: not trusting the cache: {refusal}")
    discard_damaged_machine_code(path)
    return import_file(path, key)


def mark_ready(path: Path) -> None:
    """Record that numba's machine code for the module at `path` is in the cache (forward and backward compiled):
    a later process runs it from its first call. Only a hint about speed; nothing is ever read from the file."""
    try:
        path.with_suffix(".ready").touch(mode=0o600)
    except OSError:
        pass


def is_ready(path: Path) -> bool:
    """Whether the module's machine code was marked ready (`mark_ready`) and the module is still there."""
    return path.with_suffix(".ready").exists() and path.exists() and bool(machine_code_files(path))


def sealed(text: str) -> str:
    """`text` with a last line holding the SHA-256 of everything before it."""
    return f"{text}{SEAL}{hashlib.sha256(text.encode()).hexdigest()}\n"


def unsealed(source: str) -> str | None:
    """The text a sealed file was written from, or None if its seal is missing or does not match it."""
    body, found, digest = source.rpartition(SEAL)
    if not found or digest != f"{hashlib.sha256(body.encode()).hexdigest()}\n":
        return None
    return body


def import_file(path: Path, key: str) -> ModuleType:
    """Import a cached module, but only if its text is exactly what flux wrote for this key (nothing runs before)."""
    body = unsealed(path.read_text(encoding="utf-8"))
    if body is None:
        raise ValueError("its text does not match the hash flux recorded when writing it (edited, truncated or "
                         "damaged)")
    if f"{KEY_LINE}{key}\n" not in body or not body.rstrip().endswith(END):
        raise ValueError("file is incomplete or was made for another model")
    for helpers in set(re.findall(r"^from flux\.(\w+) import", body, re.MULTILINE)):
        guard_helper_machine_code(helpers)  # before the module's kernels compile them (or load them from numba's cache)
    module_name = f"flux_generated_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[module_name] = module
    return module


# ---- trust: only files no other user could have written are imported ---------------------------------------------


def untrusted_file(path: Path, root_too: bool = False) -> str | None:
    """Why `path` (a file or directory) must not be trusted, or None: a link, another owner (root's files too when
    `root_too`), writable by others."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:  # removed meanwhile (another process discarding damaged files): nothing to trust
        return None
    if stat.S_ISLNK(info.st_mode):
        return f"{path} is a symbolic link"
    if info.st_uid != os.geteuid() and not (root_too and info.st_uid == 0):
        return f"{path} is owned by uid {info.st_uid}, not by you (uid {os.geteuid()})"
    if info.st_mode & 0o022:
        return f"{path} can be written by {_writers(info.st_mode)} (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def untrusted_module(path: Path) -> str | None:
    """Why the module at `path` and numba's files for it must not be used, or None (also when there is no file).
    numba's files in a private __pycache__ that are group/other-writable only through the umask are tightened."""
    if os.path.lexists(path):
        refusal = untrusted_file(path)
        if refusal:
            return refusal
    pycache = machine_code_directory(path)
    beside = pycache == path.parent / "__pycache__"
    refusal = None if beside else untrusted_elsewhere(pycache)
    if refusal or not os.path.lexists(pycache):
        return refusal
    refusal = untrusted_file(pycache) if beside else None
    if refusal:
        return refusal
    private = beside and stat.S_IMODE(os.lstat(pycache).st_mode) & 0o077 == 0
    for file in machine_code_files(path):
        refusal = untrusted_file(file)
        if refusal and private and f"{file} can be written by" in refusal:
            os.chmod(file, stat.S_IMODE(os.lstat(file).st_mode) & ~0o022)  # nobody else can enter __pycache__
        elif refusal:
            return refusal
    return None


def guard_helper_machine_code(name: str) -> str | None:
    """Why numba's cached machine code of flux's own `cache=True` module flux.<name> (products, fastmath, …) must not
    be loaded, or None; when it must not, that module's functions compile in this process without numba's cache (a
    warning says why). Checked once per process, as a generated module's is: its machine-code directory (under
    NUMBA_CACHE_DIR: it and the directories above it) and files — numba unpickles them."""
    if name in _guarded_helpers:
        return _guarded_helpers[name]
    source = Path(__file__).with_name(f"{name}.py")
    directory = machine_code_directory(source)
    refusal = None
    if directory != source.parent / "__pycache__":
        refusal = untrusted_elsewhere(directory)
    elif os.path.lexists(directory):  # beside flux's own files: an installed flux's are root's
        refusal = untrusted_file(directory, root_too=True)
    for file in machine_code_files(source) if refusal is None and os.path.lexists(directory) else ():
        refusal = refusal or untrusted_file(file, root_too=directory == source.parent / "__pycache__")
    _guarded_helpers[name] = refusal
    if refusal:
        import importlib

        from numba.core.caching import NullCache
        from numba.core.dispatcher import Dispatcher

        for function in vars(importlib.import_module(f"flux.{name}")).values():
            if isinstance(function, Dispatcher):
                function._cache = NullCache()
        warnings.warn(f"flux: not trusting numba's cached machine code of flux.{name}: {refusal}; compiling it in "
                      "this process without numba's cache (fix the permissions or remove the files to cache it again)",
                      RuntimeWarning, stacklevel=4)
    return refusal


def machine_code_files(path: Path) -> list[Path]:
    """numba's cache index (.nbi) and data (.nbc) files for the generated module at `path`."""
    return [f for f in machine_code_directory(path).glob(f"{path.stem}.*") if f.suffix in (".nbi", ".nbc")]


def machine_code_directory(path: Path) -> Path:
    """Where numba keeps the machine code of the module at `path`: the __pycache__ beside it, or — when numba's
    cache directory is set (NUMBA_CACHE_DIR), which numba's locators take first — `<that>/<dir>_<sha1 of dir>`."""
    # numba's config once imported (a .numba_config.yaml may set it); its environment variable while another thread
    # is still importing numba (the auto tier compiles in the background: the module exists, half made)
    configured = getattr(sys.modules.get("numba.core.config"), "CACHE_DIR", None)
    configured = os.environ.get("NUMBA_CACHE_DIR", "") if configured is None else configured
    if not configured:
        return path.parent / "__pycache__"
    parent = os.path.dirname(os.path.abspath(path))  # as numba's _CacheLocator.get_suitable_cache_subpath
    return Path(configured) / f"{os.path.basename(parent)}_{hashlib.sha1(parent.encode()).hexdigest()}"


def untrusted_elsewhere(directory: Path) -> str | None:
    """Why a machine-code directory under NUMBA_CACHE_DIR must not be trusted, or None: checked as the cache is, and
    before numba makes it (its nearest existing ancestor and those above), so that nobody else can fill it later."""
    existing = next(p for p in (directory, *directory.parents) if os.path.lexists(p))
    return untrusted_directory(directory) if existing == directory else untrusted_ancestors(existing)


def untrusted_directory(directory: Path) -> str | None:
    """Why the cache directory must not be used, or None: it, and everything above it, as ssh checks a key's path."""
    return untrusted_file(directory) or untrusted_ancestors(directory.parent)


def untrusted_ancestors(directory: Path) -> str | None:
    """Why a directory inside `directory` must not be trusted, or None: `directory` and every one above it must be
    owned by you or root and not writable by group or others unless sticky (/tmp)."""
    for parent in (directory, *directory.parents):
        info = os.stat(parent)
        if info.st_uid not in (0, os.geteuid()):
            return f"{parent}, above it, is owned by uid {info.st_uid}, neither you nor root"
        if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
            return (f"{parent}, above it, can be written by {_writers(info.st_mode)} (mode "
                    f"{stat.S_IMODE(info.st_mode):o}), who could replace the cache")
    return None


def _writers(mode: int) -> str:
    return " and ".join(who for who, bit in (("its group", 0o020), ("others", 0o002)) if mode & bit)


def trusted_directory() -> Path:
    """The cache directory if it can be written and trusted, else a private temporary one (with a warning, once)."""
    directory = cache_directory()
    try:
        for missing in [*reversed(directory.parents), directory]:
            if not missing.is_dir():
                missing.mkdir(mode=0o700, exist_ok=True)  # private, as XDG asks of cache directories
        directory = Path(os.path.realpath(directory))
        if not os.access(directory, os.W_OK | os.X_OK):
            raise PermissionError(f"no permission to write in {directory}")
        refusal = untrusted_directory(directory)
        if refusal is None:
            (directory / "__pycache__").mkdir(mode=0o700, exist_ok=True)  # before numba makes it with the umask
            return directory
        reason = f"is not trusted: {refusal} (fix its permissions or remove it to use it again)"
    except OSError as error:
        reason = f"is not writable ({error})"
    fallback = private_directory()
    if directory not in _refused_directories:  # once per directory and process
        _refused_directories.add(directory)
        warnings.warn(f"flux: cache directory {directory} {reason}; using {fallback} for this process",
                      RuntimeWarning, stacklevel=4)
    return fallback


def private_directory() -> Path:
    """This process's private temporary cache directory (mode 0700, made by mkdtemp), made once."""
    global _fallback_directory
    if _fallback_directory is None:
        _fallback_directory = Path(tempfile.mkdtemp(prefix="flux-cache-"))
        (_fallback_directory / "__pycache__").mkdir(mode=0o700)
    return _fallback_directory


def discard_damaged_machine_code(path: Path) -> None:
    """Delete numba's cached machine code for a module if any of it cannot be read (numba itself would raise on the
    first call instead of recompiling), with a warning; numba then compiles and caches it again."""
    import io
    import pickletools

    files = machine_code_files(path)
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


def write_atomically(path: Path, text: str) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        if path.exists() and not path.is_symlink() and path.read_text(encoding="utf-8") == text:
            os.unlink(temporary)  # same text already there: keep its timestamp, so numba's cache stays valid
            return
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
