"""Files are data and the cache is trusted only when it is ours: loading never runs code a file names, the compile
cache refuses files others could have written and never runs an edited module, and save writes like a careful editor.
"""
import hashlib
import json
import os
import stat
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

import flux
from flux import cache
from conftest import forget_compiled_programs
from models import Perceptron, perceptron

TESTS = Path(__file__).resolve().parent
as_root = pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="creates device nodes / chowns: root")


def rewrite_description(path: Path, change) -> None:
    """Edit the JSON description inside a saved file, as a hostile file's author would."""
    arrays = dict(np.load(path))
    description = json.loads(str(arrays.pop("__flux__")))
    change(description)
    np.savez(path, **arrays, __flux__=np.array(json.dumps(description)))


def saved_perceptron(path: Path, optimiser=None) -> Path:
    flux.save(perceptron(m=2, n=3), path, optimiser=optimiser)
    return path


# ---- item 8: loading runs nothing a file names ----------------------------------------------------------------------


@pytest.mark.parametrize("named", ["os:system", "subprocess:run", "posix:abort", "builtins:eval", "flux.io:os.system"])
def test_a_model_file_naming_a_function_is_refused_by_name(tmp_path, named):
    path = saved_perceptron(tmp_path / "p.npz")
    rewrite_description(path, lambda d: d["model"].update({"class": named}))
    with pytest.raises(ValueError, match=f"names '{named}', which is neither one of flux's classes.*classes=\\["):
        flux.load(path, classes=[Perceptron])


def test_an_attribute_naming_a_function_is_refused_and_never_called(tmp_path):
    path = saved_perceptron(tmp_path / "p.npz")
    rewrite_description(path, lambda d: d["model"]["attributes"].update(hook={"$import": "os:abort"}))
    with pytest.raises(ValueError, match="names 'os:abort'"):
        flux.load(path, classes=[Perceptron])


@pytest.fixture
def booby_trapped_module(tmp_path, monkeypatch):
    """A module on sys.path whose import creates a marker file (what a hostile file would name)."""
    marker = tmp_path / "imported"
    name = "flux_test_booby_trap"
    (tmp_path / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Model: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, marker
    sys.modules.pop(name, None)


def test_a_model_file_naming_a_module_does_not_import_it(tmp_path, booby_trapped_module):
    name, marker = booby_trapped_module
    path = saved_perceptron(tmp_path / "p.npz")
    rewrite_description(path, lambda d: d["model"].update({"class": f"{name}:Model"}))
    with pytest.raises(ValueError, match=f"'{name}:Model'"):
        flux.load(path)
    rewrite_description(path, lambda d: d["model"].update(
        {"class": "models:Perceptron", "attributes": {**d["model"]["attributes"], "x": {"$import": f"{name}:Model"}}}))
    with pytest.raises(ValueError, match=f"'{name}:Model'"):
        flux.load(path, classes=[Perceptron])
    assert not marker.exists() and name not in sys.modules


def test_an_optimiser_file_naming_a_command_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    path = saved_perceptron(tmp_path / "p.npz", optimiser=flux.SGD(lr=0.1))
    rewrite_description(path, lambda d: d["optimiser"].update(
        {"class": "subprocess:run", "hyperparameters": {"args": f"touch {marker}", "shell": True}}))
    with pytest.raises(ValueError, match="names 'subprocess:run'.*load_optimiser\\(path, classes="):
        flux.load_optimiser(path)
    assert not marker.exists()


def test_a_file_naming_os_abort_does_not_end_the_process(tmp_path):
    """The issue's reproduction, in a child process so that a regression cannot take the test run down with it."""
    path = saved_perceptron(tmp_path / "p.npz", optimiser=flux.SGD(lr=0.1))
    rewrite_description(path, lambda d: (d["optimiser"].update({"class": "os:abort", "hyperparameters": {}}),
                                         d["model"]["attributes"].update(hook={"$import": "os:abort"})))
    child = textwrap.dedent(f"""
        import flux
        from models import Perceptron
        for load in (lambda: flux.load_optimiser({str(path)!r}), lambda: flux.load({str(path)!r}, classes=[Perceptron])):
            try:
                load()
            except ValueError as error:
                print("refused:", error)
    """)
    environment = dict(os.environ, PYTHONPATH=f"{TESTS.parent}{os.pathsep}{TESTS}")
    done = subprocess.run([sys.executable, "-c", child], env=environment, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("refused: ") == 2 and done.stdout.count("names 'os:abort'") == 2, done.stdout


class Doubled(flux.Model):
    """y = 2·W x: a user's own class, loadable only when the caller allows it."""

    W = flux.param("m", "n")

    def __init__(self, W):
        super().__init__(W=W, dtype=np.float64)
        self.transform = np.sqrt  # a module-level function attribute (stored by import path)

    def forward(self, x):
        return (self.W * x) * 2.0


@flux.register
class Registered(Doubled):
    pass


class Slower(flux.SGD):
    pass


def test_classes_the_caller_allows_or_registers_load(tmp_path, monkeypatch):
    monkeypatch.setattr(flux.io, "_registered", dict(flux.io._registered))  # this test's registrations end with it
    flux.save(Doubled(np.ones((2, 3))), tmp_path / "d.npz")
    with pytest.raises(ValueError, match="'test_trust_files:Doubled'.*classes=\\[Doubled\\].*register\\(Doubled\\)"):
        flux.load(tmp_path / "d.npz")
    with pytest.raises(ValueError, match="'numpy:sqrt'"):  # an attribute's function must be allowed too
        flux.load(tmp_path / "d.npz", classes=[Doubled])
    loaded = flux.load(tmp_path / "d.npz", classes=[Doubled, np.sqrt])
    assert type(loaded) is Doubled and loaded.transform is np.sqrt
    np.testing.assert_array_equal(loaded.W, np.ones((2, 3)))
    flux.register(np.sqrt)
    flux.save(Registered(np.full((2, 3), 0.5)), tmp_path / "r.npz")
    assert type(flux.load(tmp_path / "r.npz")) is Registered  # registered with the decorator: no classes= needed
    with pytest.raises(TypeError, match="expected a class"):
        flux.register(3)


def test_an_optimiser_of_a_class_the_caller_allows_loads(tmp_path):
    path = saved_perceptron(tmp_path / "p.npz", optimiser=Slower(lr=0.25))
    with pytest.raises(ValueError, match="'test_trust_files:Slower'"):
        flux.load_optimiser(path)
    restored = flux.load_optimiser(path, classes=[Slower])
    assert type(restored) is Slower and restored.lr == 0.25
    with pytest.raises(ValueError, match="not a flux.Optimiser class"):
        _load_as(path, Perceptron)


def _load_as(path, cls):
    """load_optimiser with the file claiming the optimiser is `cls` (allowed, but of the wrong kind)."""
    rewrite_description(path, lambda d: d["optimiser"].update({"class": f"{cls.__module__}:{cls.__qualname__}"}))
    return flux.load_optimiser(path, classes=[cls])


# ---- item 15: what is not a flux file says so ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["npy", "npz", "text"])
def test_a_file_that_is_not_a_flux_file_says_what_a_flux_file_is(tmp_path, kind):
    path = tmp_path / f"x.{kind}"
    if kind == "npy":
        np.save(path, np.ones(3))
    elif kind == "npz":
        np.savez(path, weights=np.ones(3), bias=np.zeros(1))
    else:
        path.write_text("W = 1, 2, 3\n")
    for load in (flux.load, flux.load_optimiser):
        with pytest.raises(ValueError, match=f"{path.name} is not a flux model file.*written by flux.save") as error:
            load(path)
        assert str(path) in str(error.value)
    if kind == "npz":
        with pytest.raises(ValueError, match="archive of bias, weights without a '__flux__' entry"):
            flux.load(path)


# ---- item 10: save writes through links, only regular files, and keeps permissions -------------------------------


def test_save_through_a_symbolic_link_replaces_the_target_and_keeps_the_link(tmp_path):
    (tmp_path / "models").mkdir()
    target = tmp_path / "models" / "real.npz"
    saved_perceptron(target)
    link = tmp_path / "latest.npz"
    link.symlink_to(Path("models") / "real.npz")  # relative, as `ln -s` makes them
    model = perceptron(m=2, n=3, seed=7)
    flux.save(model, link)
    assert link.is_symlink() and os.readlink(link) == str(Path("models") / "real.npz")
    np.testing.assert_array_equal(flux.load(target, classes=[Perceptron]).W, model.W)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["real.npz"]  # no temporary file left
    dangling = tmp_path / "next.npz"
    dangling.symlink_to(tmp_path / "models" / "new.npz")
    flux.save(model, dangling)
    assert dangling.is_symlink() and (tmp_path / "models" / "new.npz").is_file()


@pytest.mark.parametrize("kind", ["directory", "fifo", pytest.param("device", marks=as_root)])
def test_save_refuses_a_path_that_is_not_a_regular_file(tmp_path, kind):
    path = tmp_path / "thing"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 7))  # a /dev/full of our own
    check = {"directory": stat.S_ISDIR, "fifo": stat.S_ISFIFO, "device": stat.S_ISCHR}[kind]
    name = {"directory": "a directory", "fifo": "a FIFO", "device": "a character device"}[kind]
    with pytest.raises(ValueError, match=f"thing is {name}; flux.save only writes regular files"):
        flux.save(perceptron(m=2, n=3), path)
    assert check(os.lstat(path).st_mode)
    link = tmp_path / "link"
    link.symlink_to(path)
    with pytest.raises(ValueError, match=f"which leads to .*thing\\) is {name}"):
        flux.save(perceptron(m=2, n=3), link)
    assert check(os.lstat(path).st_mode) and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "thing"]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o600, 0o664])
def test_save_keeps_an_existing_files_permissions(tmp_path, mode):
    path = saved_perceptron(tmp_path / "p.npz")
    path.chmod(mode)
    flux.save(perceptron(m=2, n=3, seed=3), path)
    assert stat.S_IMODE(path.stat().st_mode) == mode


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_a_new_file_gets_the_mode_open_would_give(tmp_path, umask):
    old = os.umask(umask)
    try:
        flux.save(perceptron(m=2, n=3), tmp_path / "p.npz")
        with open(tmp_path / "plain", "w"):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "p.npz").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "p.npz").stat().st_mode) == stat.S_IMODE((tmp_path / "plain").stat().st_mode)


@as_root
def test_save_as_root_keeps_the_files_owner(tmp_path):
    path = saved_perceptron(tmp_path / "p.npz")
    os.chown(path, 65534, 65534)
    flux.save(perceptron(m=2, n=3, seed=3), path)
    assert (path.stat().st_uid, path.stat().st_gid) == (65534, 65534)


# ---- item 9: the compile cache is trusted only when no one else could have written it -----------------------------

x = np.random.default_rng(0).standard_normal((4, 5))


def reference():
    """The perceptron's output and weight gradient, computed with NumPy."""
    model = perceptron()
    y = 1 / (1 + np.exp(-(x @ model.W.T + model.b)))
    return y, (y * (1 - y)).T @ x


def run_perceptron():
    model = perceptron()
    y = model(x)
    model.back(np.ones_like(y))
    return y, model.grads["W"]


def assert_correct(results):
    for got, want in zip(results, reference()):
        np.testing.assert_allclose(got, want, rtol=1e-12)


def module_file(directory: Path) -> Path:
    (path,) = directory.glob("perceptron_float64_*.py")
    return path


def run_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_correct(run_perceptron())


def hostile_but_sealed(path: Path, marker: Path) -> None:
    """Rewrite a cached module so that importing it creates `marker`, with a valid seal: only the trust checks on the
    file's owner and mode can stop it."""
    key_line, rest = unsealed(path.read_text(encoding="utf-8")).split("\n", 1)
    path.write_text(seal(f"{key_line}\nopen({str(marker)!r}, 'w').close()\n{rest}"), encoding="utf-8")


SEAL = "# flux-text-sha256: "


def seal(text: str) -> str:
    """What flux writes as a module's last line: the SHA-256 of the text above it (written out here, so that this
    file states the format instead of trusting cache.sealed)."""
    return f"{text}{SEAL}{hashlib.sha256(text.encode()).hexdigest()}\n"


def unsealed(text: str) -> str:
    body, found, _ = text.rpartition(SEAL)
    return body if found else text


def test_the_cache_directory_and_its_files_are_created_private(private_cache):
    run_without_warnings()
    assert stat.S_IMODE(private_cache.stat().st_mode) == 0o700
    assert stat.S_IMODE((private_cache / "__pycache__").stat().st_mode) == 0o700
    assert stat.S_IMODE(module_file(private_cache).stat().st_mode) == 0o600
    text = module_file(private_cache).read_text(encoding="utf-8")
    assert seal(unsealed(text)) == text


@pytest.mark.parametrize("situation", ["world-writable", "group-writable", pytest.param("another owner", marks=as_root),
                                       "writable parent", "a symbolic link's target is writable"])
def test_an_untrusted_cache_directory_is_refused_with_a_warning(private_cache, tmp_path, situation):
    directory = private_cache
    if situation == "writable parent":
        (tmp_path / "shared").mkdir()
        (tmp_path / "shared").chmod(0o777)  # anyone could rename our cache away and put theirs in its place
        directory = tmp_path / "shared" / "cache"
        os.environ["FLUX_CACHE_DIR"] = str(directory)  # restored by the fixture's monkeypatch
    directory.mkdir()
    if situation == "world-writable":
        directory.chmod(0o777)
    elif situation in ("group-writable", "a symbolic link's target is writable"):
        directory.chmod(0o770)
    elif situation == "another owner":
        os.chown(directory, 65534, 65534)
    if situation == "a symbolic link's target is writable":
        (tmp_path / "link").symlink_to(directory)
        os.environ["FLUX_CACHE_DIR"] = str(tmp_path / "link")
    reason = {"world-writable": "can be written by its group and others", "group-writable": "can be written by its group",
              "another owner": "owned by uid 65534", "writable parent": "above it, can be written by",
              "a symbolic link's target is writable": "can be written by its group"}[situation]
    with pytest.warns(RuntimeWarning, match=f"cache directory .* is not trusted: .*{reason}.* using .* for this process"):
        assert_correct(run_perceptron())
    assert not list(directory.glob("*.py"))  # nothing was written there, nothing read from it


def test_a_sticky_world_writable_parent_like_tmp_is_fine(private_cache, tmp_path, monkeypatch):
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp").chmod(0o1777)
    monkeypatch.setenv("FLUX_CACHE_DIR", str(tmp_path / "tmp" / "cache"))
    run_without_warnings()
    assert module_file(tmp_path / "tmp" / "cache")


@pytest.mark.parametrize("situation", ["world-writable", "group-writable", pytest.param("another owner", marks=as_root),
                                       "a symbolic link"])
def test_a_cached_module_someone_else_could_have_written_is_never_imported(private_cache, monkeypatch, tmp_path,
                                                                           situation):
    run_without_warnings()
    path = module_file(private_cache)
    marker = tmp_path / "hostile code ran"
    hostile_but_sealed(path, marker)
    if situation == "world-writable":
        path.chmod(0o666)
    elif situation == "group-writable":
        path.chmod(0o620)
    elif situation == "another owner":
        os.chown(path, 65534, 65534)
    else:
        elsewhere = tmp_path / "elsewhere.py"
        path.rename(elsewhere)
        path.symlink_to(elsewhere)
    forget_compiled_programs(monkeypatch)
    with pytest.warns(RuntimeWarning, match="not trusting the cache: .*perceptron_float64_.* compiling perceptron"):
        assert_correct(run_perceptron())
    assert not marker.exists()


def test_numbas_files_are_refused_unless_only_we_can_reach_them(private_cache, monkeypatch):
    run_without_warnings()
    pycache = private_cache / "__pycache__"
    compiled = sorted(p for p in pycache.iterdir() if p.name.startswith("perceptron_float64_"))
    assert compiled, "numba wrote no cache next to the generated module"
    for p in compiled:
        p.chmod(0o664)  # what numba makes under umask 002: harmless inside a __pycache__ only we can enter
    forget_compiled_programs(monkeypatch)
    run_without_warnings()
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in compiled)  # tightened
    pycache.chmod(0o755)  # now others can enter: a group-writable pickle there could be theirs
    compiled[0].chmod(0o666)
    forget_compiled_programs(monkeypatch)
    with pytest.warns(RuntimeWarning, match=f"not trusting the cache: .*{compiled[0].name} can be written by"):
        assert_correct(run_perceptron())
    pycache.chmod(0o777)
    compiled[0].chmod(0o644)
    forget_compiled_programs(monkeypatch)
    with pytest.warns(RuntimeWarning, match="not trusting the cache: .*__pycache__ can be written by its group and "):
        assert_correct(run_perceptron())


@as_root
def test_numbas_files_owned_by_another_user_are_refused(private_cache, monkeypatch):
    run_without_warnings()
    compiled = sorted((private_cache / "__pycache__").glob("perceptron_float64_*.nbc"))
    os.chown(compiled[0], 65534, 65534)
    forget_compiled_programs(monkeypatch)
    with pytest.warns(RuntimeWarning, match="not trusting the cache: .*owned by uid 65534"):
        assert_correct(run_perceptron())


@pytest.mark.parametrize("edit", ["formula", "system exit", "system exit, sealed"])
def test_an_edited_module_never_runs_and_is_regenerated(private_cache, monkeypatch, edit):
    run_without_warnings()
    path = module_file(private_cache)
    good = path.read_text(encoding="utf-8")
    key_line, rest = good.split("\n", 1)
    if edit == "formula":  # the maths in the docstring stays; the kernel now computes σ(W·x − b)
        edited = good.replace("(t1[n, j] + b[j])", "(t1[n, j] - b[j])")
    elif edit == "system exit":
        edited = f"{key_line}\nraise SystemExit(7)\n{rest}"
    else:  # sealed as flux would have: the import itself raises, and must not end the process
        edited = seal(f"{key_line}\nraise SystemExit(7)\n{unsealed(rest)}")
    assert edited != good
    path.write_text(edited, encoding="utf-8")
    forget_compiled_programs(monkeypatch)
    reason = "SystemExit: 7" if edit.endswith("sealed") else "ValueError: its text does not match the hash flux recorded"
    with pytest.warns(RuntimeWarning, match=f"could not be loaded \\({reason}.*regenerating it"):
        assert_correct(run_perceptron())
    assert path.read_text(encoding="utf-8") == good


def test_generated_text_that_does_not_load_is_an_error_and_is_not_left_in_place(private_cache):
    def broken():
        return "# flux-module-key: k1\nraise SystemExit(3)\n# end of generated module\n"

    with pytest.raises(RuntimeError, match="generated for broken does not load \\(SystemExit: 3\\).*bug in flux"):
        cache.load_module("broken", "k1", broken)
    assert not list(private_cache.glob("broken_*"))


def test_the_cached_start_compiles_nothing(private_cache):
    """import flux + construct + first call + back of a cached model, in a fresh process, with every check on: numba
    compiles nothing (every kernel comes from the cache). How fast that is is measured by benchmarks/first_call.py
    (the "cached" rows), not here: a timed test fails on a loaded machine."""
    child = textwrap.dedent(f"""
        import sys, time
        start = time.perf_counter()
        sys.path.insert(0, {str(TESTS)!r})
        from numba.core import event
        with event.install_recorder("numba:compile") as compiled:
            import numpy as np
            from models import perceptron
            model = perceptron()
            y = model(np.ones((4, 5)))
            model.back(np.ones_like(y))
        print(time.perf_counter() - start, len(compiled.buffer))
    """)
    environment = dict(os.environ, FLUX_CACHE_DIR=str(private_cache), PYTHONPATH=str(TESTS.parent))
    environment.pop("NUMBA_DISABLE_JIT", None)
    runs = []
    for _ in range(2):  # the first compiles and fills the cache; the second reads it
        done = subprocess.run([sys.executable, "-c", child], env=environment, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0 and "Warning" not in done.stderr, done.stderr
        seconds, compile_events = done.stdout.strip().splitlines()[-1].split()
        runs.append((float(seconds), int(compile_events)))
    print(f"\ncached start: {runs[1][0]:.2f} s (compiling: {runs[0][0]:.2f} s)")
    assert runs[0][1] > 0  # the recorder sees compiles
    assert runs[1][1] == 0, f"the cached start compiled {runs[1][1]} numba functions"
