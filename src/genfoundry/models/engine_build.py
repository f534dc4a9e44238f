"""One build of llama.cpp for both engines: llama-cpp-python (in-process) and llama-server.

pip would compile llama.cpp once inside llama-cpp-python's wheel, and the server would
compile it again. Here llama.cpp is compiled once, from the sources vendored in
llama-cpp-python's own sdist (so the bindings and the libraries are the same
version), into shared libraries plus ``llama-server`` in one build tree; then
llama-cpp-python is installed without compiling anything and its ``lib`` folder is
filled with those libraries. The server binary and its libraries go to the engine
cache, where ``genfoundry`` finds them.

This module uses the standard library only: the Makefile runs it by path before
the package is installed (``python src/genfoundry/models/engine_build.py``), and
``genfoundry engine build`` calls :func:`build`. The build tree is kept per
version, so a second clone or a second virtual environment on the same machine
only copies files.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
from pathlib import Path

PACKAGE = "llama-cpp-python"
DEFAULT_SPEC = "llama-cpp-python>=0.3.5"
TARGETS = ["llama", "mtmd", "llama-server"]
CMAKE_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=ON",
    # Every binary and library looks for its libraries beside itself: the same files
    # serve llama-cpp-python (copied into llama_cpp/lib) and llama-server.
    "-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON", "-DCMAKE_INSTALL_RPATH=$ORIGIN",
    "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_COMMON=ON",
    "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_BUILD_APP=OFF",
]
# What the in-process bindings load (llama_cpp/lib) and what llama-server links to.
LIB_PATTERNS = ("libllama.so*", "libggml*.so*", "libmtmd.so*")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "genfoundry" / "engines"


def _step(message: str) -> float:
    print(f"[engine] {message}", flush=True)
    return time.monotonic()


def _done(started: float) -> None:
    print(f"[engine]   done in {time.monotonic() - started:.0f} s", flush=True)


def requirement(pyproject: Path | None = None) -> str:
    """The llama-cpp-python requirement the project declares (pyproject.toml), else the default."""
    path = pyproject or Path(__file__).resolve().parents[3] / "pyproject.toml"
    if path.exists():
        deps = tomllib.loads(path.read_text()).get("project", {}).get("dependencies", [])
        for dep in deps:
            if re.match(r"llama[-_]cpp[-_]python\b", dep, re.I):
                return dep
    return DEFAULT_SPEC


def installed_version(python: str) -> str | None:
    out = subprocess.run([python, "-c", "import importlib.metadata as m; print(m.version('llama_cpp_python'))"],
                         capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


def fetch_sources(python: str, spec: str, cache: Path) -> tuple[str, Path]:
    """Download (once) and unpack the sdist that satisfies ``spec``; returns (version, source dir)."""
    sdists = cache / "sdists"
    sdists.mkdir(parents=True, exist_ok=True)
    pinned = re.fullmatch(r"llama[-_]cpp[-_]python==([\w.]+)", spec.replace(" ", ""))
    found = sorted(sdists.glob(f"llama_cpp_python-{pinned.group(1)}.tar.gz")) if pinned else []
    if not found:
        started = _step(f"downloading the {PACKAGE} sources ({spec}, about 75 MB)")
        subprocess.run([python, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        "-d", str(sdists), spec], check=True)
        _done(started)
        found = sorted(sdists.glob("llama_cpp_python-*.tar.gz"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"pip did not download a {PACKAGE} sdist for {spec!r}")
    sdist = found[-1]
    version = sdist.name.removeprefix("llama_cpp_python-").removesuffix(".tar.gz")
    source = cache / f"src-{version}"
    if not (source / "vendor" / "llama.cpp" / "CMakeLists.txt").exists():
        shutil.rmtree(source, ignore_errors=True)
        partial = cache / f".src-{version}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        with tarfile.open(sdist) as tar:
            tar.extractall(partial, filter="data")
        next(partial.glob("llama_cpp_python-*")).rename(source)
        shutil.rmtree(partial, ignore_errors=True)
    return version, source


def _tool(python: str, name: str) -> str | None:
    """cmake/ninja from the virtual environment (PyPI wheels) first, then PATH."""
    local = Path(python).parent / name
    return str(local) if local.exists() else shutil.which(name)


def compile_tree(source: Path, build: Path, *, python: str, jobs: int | None = None) -> None:
    """Configure and compile the libraries and llama-server in one tree (incremental)."""
    cmake = _tool(python, "cmake")
    if cmake is None:
        raise SystemExit("cmake is needed: `pip install cmake ninja` (PyPI wheels) or your system's package")
    ninja = _tool(python, "ninja")
    if not (build / "CMakeCache.txt").exists():
        started = _step("configuring llama.cpp")
        generator = ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"] if ninja else []
        subprocess.run([cmake, "-S", str(source / "vendor" / "llama.cpp"), "-B", str(build), *generator,
                        *CMAKE_FLAGS], check=True, stdout=subprocess.DEVNULL)
        _done(started)
    started = _step(f"compiling llama.cpp once for both engines ({', '.join(TARGETS)}; "
                    "about 6 minutes on 2 cores, seconds when already built)")
    subprocess.run([cmake, "--build", str(build), "--target", *TARGETS,
                    "-j", str(jobs or os.cpu_count() or 2)], check=True)
    _done(started)


def _libraries(build: Path) -> list[Path]:
    out = build / "bin"
    libs = {p for pattern in LIB_PATTERNS for p in out.glob(pattern)}
    if not any(p.name.startswith("libllama.so") for p in libs):
        raise SystemExit(f"the build left no libllama.so in {out}")
    return sorted(libs)


def _copy(files: list[Path], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        target = dest / f.name
        if f.is_symlink():
            target.unlink(missing_ok=True)
            target.symlink_to(os.readlink(f))
        else:
            tmp = target.with_name(target.name + ".tmp")
            shutil.copy2(f, tmp)
            tmp.replace(target)


def install_bindings(python: str, source: Path, libs: list[Path]) -> Path:
    """Install llama-cpp-python from the same sources without compiling, then give it the libraries."""
    started = _step(f"installing {PACKAGE} {source.name.removeprefix('src-')} with the libraries built above")
    env = dict(os.environ, CMAKE_ARGS="-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF")
    cmake_dir = Path(python).parent
    env["PATH"] = f"{cmake_dir}{os.pathsep}{env.get('PATH', '')}"
    # A local folder: pip builds it without caching the (library-less) wheel anywhere.
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(source)],
                   check=True, env=env)
    out = subprocess.run([python, "-c", "import importlib.util as u; "
                          "print(u.find_spec('llama_cpp').submodule_search_locations[0])"],
                         check=True, capture_output=True, text=True)
    lib_dir = Path(out.stdout.strip()) / "lib"
    _copy(libs, lib_dir)
    _done(started)
    return lib_dir


def server_dir(version: str) -> Path:
    return cache_dir() / f"llama-server-{version}"


def install_server(build: Path, version: str) -> Path:
    """llama-server with every library it links (its own, common, llama, ggml) beside it."""
    dest = server_dir(version)
    binary = build / "bin" / "llama-server"
    _copy([*sorted((build / "bin").glob("lib*.so*")), binary], dest)
    return dest / "llama-server"


def _server_runs(folder: Path) -> bool:
    binary = folder / "llama-server"
    if not binary.exists():
        return False
    return subprocess.run([str(binary), "--version"], capture_output=True).returncode == 0


def bindings_have_libraries(python: str) -> bool:
    code = ("import importlib.util as u, pathlib; p = u.find_spec('llama_cpp'); "
            "print(p and any((pathlib.Path(p.submodule_search_locations[0]) / 'lib').glob('libllama.so*')))")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return out.stdout.strip() == "True"


def build(*, python: str = sys.executable, spec: str | None = None, jobs: int | None = None,
          force: bool = False) -> Path:
    """Build (or reuse) llama.cpp once; install the bindings into ``python``'s environment.

    Returns the path of the llama-server binary.
    """
    spec = spec or requirement()
    version = installed_version(python)
    if version and not force and bindings_have_libraries(python) and _server_runs(server_dir(version)):
        print(f"[engine] llama.cpp {version} is built and installed (both engines)", flush=True)
        return server_dir(version) / "llama-server"
    cache = cache_dir()
    # Keep the installed version when there is one, so the bindings and the server match.
    version, source = fetch_sources(python, f"{PACKAGE}=={version}" if version else spec, cache)
    build_dir = cache / f"build-{version}"
    if force:
        shutil.rmtree(build_dir, ignore_errors=True)
    compile_tree(source, build_dir, python=python, jobs=jobs)
    libs = _libraries(build_dir)
    if force or installed_version(python) != version or not bindings_have_libraries(python):
        install_bindings(python, source, libs)
    server = install_server(build_dir, version)
    print(f"[engine] llama-server is at {server}", flush=True)
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="the environment to install the bindings into")
    parser.add_argument("--spec", default=None, help=f"the {PACKAGE} requirement (default: pyproject.toml's)")
    parser.add_argument("--jobs", type=int, default=None, help="parallel compile jobs (default: all cores)")
    parser.add_argument("--force", action="store_true", help="rebuild from a clean tree")
    args = parser.parse_args(argv)
    build(python=args.python, spec=args.spec, jobs=args.jobs, force=args.force)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
