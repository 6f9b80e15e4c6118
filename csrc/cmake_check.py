"""`make cmake-check`: build the CMake front end (CMakeLists.txt) into build/cmake, import the
module it produces and check it against the setup.py build (flowam_fast._C): the same
functions and attributes, the same signatures, and the same results on one kNN query. CI runs
it, so the two front ends of csrc/build.json cannot drift apart.

    python csrc/cmake_check.py [--build-dir build/cmake] [--jobs 2]
"""
import argparse
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build(build_dir: Path, jobs: int) -> Path:
    """Configure (Release, against this interpreter's torch) and build; the module's path."""
    cmake = shutil.which("cmake")
    if cmake is None:
        sys.exit("cmake-check: cmake is not on PATH (install it, e.g. `apt-get install cmake`)")
    subprocess.run([cmake, "-S", str(ROOT), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
                    f"-DPython3_EXECUTABLE={sys.executable}"], check=True)
    subprocess.run([cmake, "--build", str(build_dir), "-j", str(jobs)], check=True)
    module = build_dir / f"_C{sysconfig.get_config_var('EXT_SUFFIX')}"
    if not module.is_file():
        sys.exit(f"cmake-check: the build wrote no {module.name} in {build_dir}")
    return module


def public(module) -> dict:
    """name -> docstring (pybind puts the signature there) or repr of each public attribute."""
    return {name: getattr(module, name).__doc__ if callable(getattr(module, name)) else repr(getattr(module, name))
            for name in dir(module) if not name.startswith("__")}


def compare(cmake_module, setup_module) -> list:
    """What differs between the two modules, one line each (empty when they agree)."""
    import torch

    ours, theirs = public(cmake_module), public(setup_module)
    problems = [f"only the CMake build has {n}" for n in sorted(ours.keys() - theirs.keys())]
    problems += [f"only the setup.py build has {n}" for n in sorted(theirs.keys() - ours.keys())]
    problems += [f"{n} differs: CMake {ours[n]!r}, setup.py {theirs[n]!r}"
                 for n in sorted(ours.keys() & theirs.keys()) if ours[n] != theirs[n]]
    if not problems:
        x = torch.randn(2, 64, 3, generator=torch.Generator().manual_seed(0))
        (d1, i1), (d2, i2) = cmake_module.knn_forward_cpu(x, x, 8), setup_module.knn_forward_cpu(x, x, 8)
        if not (torch.equal(d1, d2) and torch.equal(i1, i2)):
            problems.append("knn_forward_cpu gives other results")
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build-dir", default=str(ROOT / "build" / "cmake"))
    p.add_argument("--jobs", type=int, default=2)
    args = p.parse_args(argv)
    module = build(Path(args.build_dir).resolve(), args.jobs)

    import importlib

    import torch  # noqa: F401  (the extension needs libtorch loaded first)

    from flowam_fast import _C as setup_module

    # A bare `_C` from a directory of its own: nothing else there can shadow it or be shadowed.
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy2(module, tmp)
        sys.path.insert(0, tmp)
        try:
            cmake_module = importlib.import_module("_C")
        finally:
            sys.path.remove(tmp)
    problems = compare(cmake_module, setup_module)
    if problems:
        print("cmake-check: the CMake and setup.py builds differ:\n" + "\n".join(f"  {p}" for p in problems),
              file=sys.stderr)
        return 1
    print(f"cmake-check: {module} matches {setup_module.__file__} ({len(public(setup_module))} names, "
          f"with_cuda={setup_module.with_cuda})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
