"""`make cmake-check`: build the CMake front end (CMakeLists.txt) into build/cmake, import the
module it produces and check it against the setup.py build (flowam_fast._C): the same
attributes, the same registered ops with the same schemas, and the same results on one kNN
query, each build loaded in a process of its own. CI runs it, so the two front ends of
csrc/build.json cannot drift apart.

    python csrc/cmake_check.py [--build-dir build/cmake] [--jobs 2]
"""
import argparse
import json
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


def describe(module) -> dict:
    """What a build of the module provides: its public attributes, the schema of every op it
    registers in the flowam_fast namespace, and one kNN query's results."""
    import torch

    public = {name: repr(getattr(module, name)) for name in dir(module) if not name.startswith("__")}
    schemas = {name: str(getattr(torch.ops.flowam_fast, name).default._schema) for name in module.kernels}
    x = torch.randn(2, 64, 3, generator=torch.Generator().manual_seed(0))
    dist2, idx = torch.ops.flowam_fast.knn_forward(x, x, 8)
    return {"public": public, "schemas": schemas, "knn": [dist2.tolist(), idx.tolist()],
            "file": module.__file__}


def describe_in_a_process(module_dir) -> dict:
    """`describe` of the module in a fresh interpreter: two builds cannot be loaded into one,
    since each registers the flowam_fast namespace. module_dir: the folder of a bare `_C`, or
    None for the setup.py build (flowam_fast._C, as this interpreter imports it)."""
    args = [sys.executable, str(Path(__file__).resolve()), "--describe"] + ([str(module_dir)] if module_dir else [])
    run = subprocess.run(args, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"cmake-check: loading {module_dir or 'flowam_fast._C'} failed:\n{run.stderr[-4000:]}")
    return json.loads(run.stdout)


def compare(ours: dict, theirs: dict) -> list:
    """What differs between the CMake build's description and the setup.py build's, one line
    each (empty when they agree)."""
    problems = []
    for part, what in (("public", "attribute"), ("schemas", "op")):
        a, b = ours[part], theirs[part]
        problems += [f"only the CMake build has the {what} {n}" for n in sorted(a.keys() - b.keys())]
        problems += [f"only the setup.py build has the {what} {n}" for n in sorted(b.keys() - a.keys())]
        problems += [f"{what} {n} differs: CMake {a[n]!r}, setup.py {b[n]!r}"
                     for n in sorted(a.keys() & b.keys()) if a[n] != b[n]]
    if not problems and ours["knn"] != theirs["knn"]:
        problems.append("knn_forward gives other results")
    return problems


def _describe_main(module_dir) -> int:
    import importlib

    import torch  # noqa: F401  (the extension needs libtorch loaded first)

    if module_dir:
        sys.path.insert(0, module_dir)
        module = importlib.import_module("_C")
    else:
        from flowam_fast import _C as module
    print(json.dumps(describe(module)))
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--describe":
        return _describe_main(argv[1] if len(argv) > 1 else None)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build-dir", default=str(ROOT / "build" / "cmake"))
    p.add_argument("--jobs", type=int, default=2)
    args = p.parse_args(argv)
    module = build(Path(args.build_dir).resolve(), args.jobs)
    # A bare `_C` from a directory of its own: nothing else there can shadow it or be shadowed.
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy2(module, tmp)
        ours = describe_in_a_process(tmp)
    theirs = describe_in_a_process(None)
    problems = compare(ours, theirs)
    if problems:
        print("cmake-check: the CMake and setup.py builds differ:\n" + "\n".join(f"  {p}" for p in problems),
              file=sys.stderr)
        return 1
    print(f"cmake-check: {module} matches {theirs['file']} ({len(theirs['public'])} names, "
          f"{len(theirs['schemas'])} ops, with_cuda={theirs['public']['with_cuda']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
