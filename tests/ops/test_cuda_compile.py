"""Compile check of the CUDA sources on a machine without a GPU (CI, the development machines).

The CPU torch wheel ships the ATen and c10/cuda headers but not the generated
c10/cuda/impl/cuda_cmake_macros.h, so a one-line stand-in goes into a temporary include
directory. Every .cu file of csrc/build.json's patterns is compiled with nvcc for sm_80 and sm_90 with the
build's own flags (two files at a time), and the binding file is compiled by the host compiler
with the CUDA declarations switched on, so a signature that drifts from its CPU twin or a
missing definition's declaration fails here too. Nothing is linked: the CUDA libraries are
not there.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sysconfig
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from torch.utils.cpp_extension import include_paths

ROOT = Path(__file__).resolve().parents[2]
_SPEC = importlib.util.spec_from_file_location("build_config", ROOT / "csrc" / "build_config.py")
build_config = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(build_config)
CONFIG = build_config.definition()
NVCC = shutil.which("nvcc") or (os.path.join(os.environ["CUDA_HOME"], "bin", "nvcc")
                                if os.environ.get("CUDA_HOME") else None)
PARALLEL = 2
ARCHS = CONFIG["cuda_archs"]  # sm_80 and sm_90: the build's own targets

pytestmark = pytest.mark.skipif(
    NVCC is None or not os.path.exists(NVCC),
    reason="nvcc not found (on PATH or in $CUDA_HOME/bin): cannot compile-check the CUDA sources")


def _common_flags(include_dir: Path) -> list[str]:
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    incs = [str(include_dir), *include_paths(), sysconfig.get_paths()["include"], str(ROOT / "csrc")]
    return [f"-D_GLIBCXX_USE_CXX11_ABI={abi}", *(f"-D{d}" for d in CONFIG["cuda_defines"]),
            *(f"-I{p}" for p in incs)]


@pytest.fixture(scope="module")
def include_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cuda_headers")
    stand_in = root / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h"
    stand_in.parent.mkdir(parents=True)
    stand_in.write_text("#pragma once\n")
    return root


@pytest.fixture(scope="module")
def compiled(include_dir, tmp_path_factory) -> dict:
    """{source: (returncode, seconds, output)} for every .cu file, compiled PARALLEL at a time."""
    out_dir = tmp_path_factory.mktemp("cuda_objects")
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in ARCHS]
    flags = [*CONFIG["nvcc_flags"], *gencode, *_common_flags(include_dir)]

    def compile_one(source: str):
        obj = out_dir / (Path(source).stem + ".o")
        t0 = time.perf_counter()
        proc = subprocess.run([NVCC, "-c", str(ROOT / source), "-o", str(obj), *flags], capture_output=True,
                              text=True)
        return source, (proc.returncode, time.perf_counter() - t0, proc.stdout + proc.stderr)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(PARALLEL) as pool:
        results = dict(pool.map(compile_one, CONFIG["cuda_sources"]))
    total = time.perf_counter() - t0
    print(f"\nnvcc compile check ({PARALLEL} at a time, sm_{' sm_'.join(ARCHS)}): {total:.0f} s wall")
    for source, (_, seconds, _) in results.items():
        print(f"  {source}: {seconds:.0f} s")
    return results


def test_every_cuda_source_is_built():
    built = set(CONFIG["cuda_sources"])
    on_disk = {str(p.relative_to(ROOT)) for p in (ROOT / "csrc").rglob("*.cu")}
    assert built == on_disk, f"build.json's cuda_sources patterns and csrc/**/*.cu differ: {sorted(built ^ on_disk)}"


@pytest.mark.parametrize("source", CONFIG["cuda_sources"])
def test_cuda_source_compiles(compiled, source):
    code, seconds, output = compiled[source]
    assert code == 0, f"nvcc failed on {source} after {seconds:.0f} s:\n{output[-6000:]}"


def test_bindings_compile_with_cuda_declarations(include_dir):
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        pytest.skip("no host C++ compiler found (c++, g++ or $CXX)")
    cmd = [cxx, "-fsyntax-only", *CONFIG["cxx_flags"], "-DTORCH_EXTENSION_NAME=_C", *_common_flags(include_dir),
           str(ROOT / "csrc" / "bind.cpp")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"bind.cpp with {CONFIG['cuda_defines']} does not compile:\n{proc.stderr[-6000:]}"
