"""The suite's C parts, compiled where they run: the `cuda_errors` shim and the stand-in
CUDA libraries the reference server and the tests call.

They are compiled from the shipped sources into a cache keyed by the sources' hash, so a
wheel install, a clean clone and `make native` all get the same objects, a changed source
is never served stale, and two processes building at once both end with a whole file
(each builds in its own temporary name, then renames). A machine without a C compiler gets
one clear line saying which fault needs it.

    python -m inferchaos.ground.native            # build everything, print where it is
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from inferchaos.ground.errors import UsageError

CACHE_ENV = "INFERCHAOS_NATIVE_DIR"


@dataclass(frozen=True)
class Library:
    """One shared object: its source (a package and a path inside it), file name and link flags."""

    package: str
    source: str
    filename: str
    soname: str
    libs: tuple[str, ...] = ()
    #: the symbol version node the real library's symbols carry (libcudart's are versioned;
    #: the shim must intercept references bound to such a version, so the stand-in has one too).
    version: str | None = None


LIBRARIES: dict[str, Library] = {
    "cuda_shim": Library("inferchaos.faults", "cuda_shim.c", "libinferchaos_cudashim.so",
                         "libinferchaos_cudashim.so", ("-ldl", "-lpthread")),
    "cudart": Library("inferchaos.targets", "local/fakecuda/cudart.c", "libcudart.so.12", "libcudart.so.12",
                      version="libcudart.so.12"),
    "cuda": Library("inferchaos.targets", "local/fakecuda/cuda.c", "libcuda.so.1", "libcuda.so.1"),
}
CFLAGS = ("-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror")


def source_path(lib: Library) -> Path:
    """Where `lib`'s source is, found the way the import system finds its package (the layers
    are mapped into `inferchaos`, so the folder is not the package's name) without running the
    package's code: the ground floor imports nothing above it."""
    spec = importlib.util.find_spec(lib.package)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(f"{lib.package} is not installed: cannot find {lib.source}")
    return Path(list(spec.submodule_search_locations)[0]) / lib.source


def compiler() -> str:
    named = os.environ.get("CC")
    cc = shutil.which(named) if named else shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if named and not cc:
        raise UsageError(f"CC={named}: no such compiler (the cuda_errors fault builds its shim with it)")
    if not cc:
        raise UsageError("no C compiler found (cc, gcc or clang): the cuda_errors fault builds its shim with one "
                         "(Debian/Ubuntu: apt-get install -y gcc), or set CC")
    return cc


def cache_dir() -> Path:
    """Where built objects live: $INFERCHAOS_NATIVE_DIR, else the user's cache, per source hash."""
    h = hashlib.sha256()
    for name in sorted(LIBRARIES):
        lib = LIBRARIES[name]
        h.update(repr((lib, CFLAGS)).encode())
        h.update(source_path(lib).read_bytes())
    base = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "inferchaos", "native")
    return Path(base) / h.hexdigest()[:16]


def compile_library(lib: Library, out: Path, cc: str | None = None) -> Path:
    """Compile `lib` to `out` (atomically: a reader sees the old file or the whole new one)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [cc or compiler(), *CFLAGS, f"-Wl,-soname,{lib.soname}", str(source_path(lib))]
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".build-") as tmp:
        if lib.version:
            script = Path(tmp, "version.map")
            script.write_text(f"{lib.version} {{ global: *; }};\n")
            argv.append(f"-Wl,--version-script={script}")
        built = Path(tmp, lib.filename)
        argv += ["-o", str(built), *lib.libs]
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode != 0:
            raise UsageError(f"compiling {lib.source} failed ({' '.join(argv[:1])} exit {proc.returncode}): "
                             + (proc.stderr.strip().splitlines() or ["no output"])[0])
        os.replace(built, out)
    return out


def path(name: str) -> Path:
    """The built object `name` (a key of LIBRARIES), compiled first if it is not there yet."""
    lib = LIBRARIES[name]
    out = cache_dir() / lib.filename
    if not out.exists():
        compile_library(lib, out)
    return out


def main() -> int:
    try:
        for name in LIBRARIES:
            print(f"{name}: {path(name)}")
    except UsageError as exc:
        print(f"inferchaos.ground.native: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
