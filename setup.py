"""Build of flowam_fast and its extension flowam_fast._C.

What the extension is built from (csrc/build.json) and the switches that change it
(FLOWAM_FAST_CPU_ONLY, FLOWAM_FAST_ARCH, TORCH_CUDA_ARCH_LIST; see csrc/build_config.py) are
resolved by csrc/build_config.py, which CMakeLists.txt runs too, so the two build front ends
never disagree. The version is flowam_fast/__init__.py's `__version__`, read from the file
(importing the package here would need its dependencies at build time).

    pip install --no-build-isolation -e .     (or `pip install --no-build-isolation .`, `pip wheel ...`)
"""
import re
import sys
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "csrc"))
import build_config  # noqa: E402

#: Non-Python files the package reads at run time, installed with it (tests/test_packaging.py
#: checks that every such file in the source tree matches one of these).
PACKAGE_DATA = ["*.json", "*.html", "*.js", "*.css", "*.txt", "*.toml"]


def version() -> str:
    text = (ROOT / "flowam_fast" / "__init__.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
    if match is None:
        raise RuntimeError('flowam_fast/__init__.py has no line `__version__ = "..."`')
    return match.group(1)


def _extensions():
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    build = build_config.resolve()
    common = dict(include_dirs=[str(ROOT / d) for d in build["include_dirs"]], extra_link_args=build["link_flags"])
    if build["with_cuda"]:
        return [CUDAExtension(build["module"], build["sources"],
                              define_macros=[tuple(d.split("=", 1)) for d in build["define_macros"]],
                              extra_compile_args={"cxx": build["cxx_flags"], "nvcc": build["nvcc_flags"]}, **common)]
    return [CppExtension(build["module"], build["sources"], extra_compile_args={"cxx": build["cxx_flags"]}, **common)]


def _cmdclass():
    from torch.utils.cpp_extension import BuildExtension

    return {"build_ext": BuildExtension.with_options(use_ninja=True)}


setup(
    name="flowam_fast",
    version=version(),
    description="Fast FlowAM global explanations of point-cloud classifiers, on fused kernels",
    packages=find_packages(include=["flowam_fast", "flowam_fast.*"]),
    package_data={"": PACKAGE_DATA},
    python_requires=">=3.10",
    # Any torch satisfies this, so a CUDA build installed beforehand is kept (see README).
    install_requires=["torch>=2.1", "numpy", "h5py", "tqdm", "matplotlib", "plyfile", "scipy", "pot"],
    ext_modules=_extensions(),
    cmdclass=_cmdclass(),
    entry_points={"console_scripts": ["flowam-fast=flowam_fast.cli:main"]},
)
