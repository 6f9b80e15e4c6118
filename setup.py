"""Build of flowam_fast and its extension flowam_fast._C.

The source list and compiler flags live in csrc/build.json, which CMakeLists.txt reads too,
so the two build front ends never disagree.

Environment switches:
  FLOWAM_FAST_CPU_ONLY=1   never build the CUDA sources, even with a CUDA torch and nvcc.
  FLOWAM_FAST_ARCH=...     replaces the default "-march=native" (e.g. "-march=x86-64-v3"
                           for a binary that must run on other machines); empty for none.
  TORCH_CUDA_ARCH_LIST=... the GPU architectures to compile for (torch's variable, e.g. "9.0");
                           unset, build.json's cuda_archs.
"""
import json
import os
import shlex
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
CONFIG = json.loads((ROOT / "csrc" / "build.json").read_text())


def _want_cuda():
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    if os.environ.get("FLOWAM_FAST_CPU_ONLY", "0") not in ("", "0"):
        return False
    return bool(CONFIG["cuda_sources"]) and torch.version.cuda is not None and CUDA_HOME is not None


def _arch_flags():
    if "FLOWAM_FAST_ARCH" in os.environ:
        return shlex.split(os.environ["FLOWAM_FAST_ARCH"])
    return list(CONFIG["arch_flags"])


def _extensions():
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    cxx = CONFIG["cxx_flags"] + _arch_flags()
    if _want_cuda():
        # torch turns TORCH_CUDA_ARCH_LIST into -gencode flags itself, but only when none are given.
        gencode = [] if os.environ.get("TORCH_CUDA_ARCH_LIST") else [
            f"-gencode=arch=compute_{a},code=sm_{a}" for a in CONFIG["cuda_archs"]]
        return [
            CUDAExtension(
                CONFIG["module"],
                CONFIG["cpu_sources"] + CONFIG["cuda_sources"],
                include_dirs=[str(ROOT / "csrc")],
                define_macros=[tuple(d.split("=", 1)) for d in CONFIG["cuda_defines"]],
                extra_compile_args={"cxx": cxx, "nvcc": CONFIG["nvcc_flags"] + gencode},
                extra_link_args=CONFIG["link_flags"],
            )
        ]
    return [
        CppExtension(
            CONFIG["module"],
            CONFIG["cpu_sources"],
            include_dirs=[str(ROOT / "csrc")],
            extra_compile_args={"cxx": cxx},
            extra_link_args=CONFIG["link_flags"],
        )
    ]


def _cmdclass():
    from torch.utils.cpp_extension import BuildExtension

    return {"build_ext": BuildExtension.with_options(use_ninja=True)}


setup(
    name="flowam_fast",
    version="0.1.0",
    description="Fast FlowAM global explanations of point-cloud classifiers, on fused kernels",
    packages=find_packages(include=["flowam_fast", "flowam_fast.*"]),
    python_requires=">=3.10",
    # Any torch satisfies this, so a CUDA build installed beforehand is kept (see README).
    install_requires=["torch>=2.1", "numpy", "h5py", "tqdm", "matplotlib", "plyfile", "scipy", "pot"],
    ext_modules=_extensions(),
    cmdclass=_cmdclass(),
    entry_points={"console_scripts": ["flowam-fast=flowam_fast.cli:main"]},
)
