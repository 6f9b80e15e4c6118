"""The build of flowam_fast._C for this machine: csrc/build.json (the sources and flags, the one
build definition) with the environment switches applied and the CUDA decision taken. Its
sources are glob patterns (csrc/<op>/<op>_cpu.cpp, csrc/<op>/<op>_cuda.cu): a new op's folder
is built without being listed; the ops themselves are listed in csrc/op_list.h.
setup.py imports it; CMakeLists.txt runs it (`python csrc/build_config.py`) and reads the JSON
it prints, so the two front ends build the same thing from one decision.

Environment switches:
  FLOWAM_FAST_CPU_ONLY=1   never build the CUDA sources, even with a CUDA torch and nvcc
                           (any value but empty or 0).
  FLOWAM_FAST_ARCH=...     replaces build.json's "-march=native" (e.g. "-march=x86-64-v3"
                           for a binary that must run on other machines); empty for none.
  TORCH_CUDA_ARCH_LIST=... the GPU architectures to compile for, read as torch reads it
                           (e.g. "9.0" or "8.0;9.0+PTX"); unset, build.json's cuda_archs.
The CUDA sources are built when torch is a CUDA build and torch finds the CUDA toolkit (its
CUDA_HOME: $CUDA_HOME, else the nvcc on PATH), unless FLOWAM_FAST_CPU_ONLY says not to.
"""
import json
import os
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sources(patterns) -> list:
    """The files matching `patterns` (glob patterns relative to the repository root), in the
    patterns' order, each pattern's matches sorted, each file once."""
    found = []
    for pattern in patterns:
        for path in sorted(ROOT.glob(pattern)):
            name = str(path.relative_to(ROOT))
            if name not in found:
                found.append(name)
    return found


def definition() -> dict:
    """csrc/build.json with its source patterns expanded to the files."""
    config = json.loads((ROOT / "csrc" / "build.json").read_text())
    for key in ("cpu_sources", "cuda_sources"):
        config[key] = sources(config[key])
    return config


def cpu_only() -> bool:
    return os.environ.get("FLOWAM_FAST_CPU_ONLY", "0") not in ("", "0")


def cuda_home():
    """The CUDA toolkit torch would compile with, or None where torch is a CPU build or finds none."""
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    return CUDA_HOME if torch.version.cuda is not None else None


def arch_flags(config: dict) -> list:
    if "FLOWAM_FAST_ARCH" in os.environ:
        return shlex.split(os.environ["FLOWAM_FAST_ARCH"])
    return list(config["arch_flags"])


def gencode_flags(config: dict) -> list:
    """nvcc's -gencode flags: torch's reading of TORCH_CUDA_ARCH_LIST where it is set, else
    build.json's cuda_archs (SASS for each)."""
    if os.environ.get("TORCH_CUDA_ARCH_LIST"):
        # Private, but it is exactly what torch's own extension build does with the variable.
        from torch.utils.cpp_extension import _get_cuda_arch_flags

        return _get_cuda_arch_flags()
    return [f"-gencode=arch=compute_{a},code=sm_{a}" for a in config["cuda_archs"]]


def resolve() -> dict:
    """The build for this machine and environment.

    Returns:
        A dict: "module" (dotted name), "sources" and "include_dirs" (relative to the
        repository root), "cxx_flags" (with the arch flags), "link_flags", "with_cuda",
        "define_macros" ("NAME=VALUE"), "nvcc_flags" (with the -gencode flags), "nvcc" (its
        path, "" without CUDA) and "torch_cmake_prefix" (where find_package(Torch) looks).
    """
    import torch

    config = definition()
    home = cuda_home()
    with_cuda = bool(config["cuda_sources"]) and home is not None and not cpu_only()
    return {
        "module": config["module"],
        "sources": config["cpu_sources"] + (config["cuda_sources"] if with_cuda else []),
        "include_dirs": ["csrc"],
        "cxx_flags": config["cxx_flags"] + arch_flags(config),
        "link_flags": config["link_flags"],
        "with_cuda": with_cuda,
        "define_macros": config["cuda_defines"] if with_cuda else [],
        "nvcc_flags": config["nvcc_flags"] + gencode_flags(config) if with_cuda else [],
        "nvcc": str(Path(home) / "bin" / "nvcc") if with_cuda else "",
        "torch_cmake_prefix": torch.utils.cmake_prefix_path,
    }


if __name__ == "__main__":
    print(json.dumps(resolve(), indent=1))
