"""What gets installed: the version in one place, every module and data file of the package in
what setuptools builds, the benchmarks running from that copy alone (away from the source
tree), and the build switches that setup.py and CMakeLists.txt share (csrc/build_config.py).
"""
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import flowam_fast
from flowam_fast.cli import main
from flowam_fast.ops import backend

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "flowam_fast"
_SPEC = importlib.util.spec_from_file_location("build_config", ROOT / "csrc" / "build_config.py")
build_config = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(build_config)


def _run(args, **kw):
    out = subprocess.run(args, capture_output=True, text=True, timeout=300, **kw)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out.stdout


def test_the_version_is_set_once(capsys):
    assert _run([sys.executable, "setup.py", "--version"], cwd=ROOT).splitlines()[-1] == flowam_fast.__version__
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out == f"flowam-fast {flowam_fast.__version__}\n"


def _source_files():
    """The package's files as the source tree has them, without caches and compiled extensions."""
    return {p.relative_to(ROOT) for p in PACKAGE.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".so")}


@pytest.mark.skipif(not backend.has_cpu_kernels(), reason="flowam_fast._C is not built")
def test_the_built_package_is_complete_and_benchmarks_on_its_own(tmp_path):
    lib = tmp_path / "lib"
    # build_py copies what a wheel holds of the package (modules and package data), no compile.
    _run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(lib)], cwd=ROOT)
    built = {p.relative_to(lib) for p in lib.rglob("*") if p.is_file()}
    missing = _source_files() - built
    assert not missing, f"not installed with the package (add them to setup.py's PACKAGE_DATA): {sorted(missing)}"
    assert Path("flowam_fast/benchmarks/am_step.py") in built
    shutil.copy2(backend.extension().__file__, lib / "flowam_fast")  # what the wheel's build_ext adds
    code = ("import sys, flowam_fast; from flowam_fast.cli import main; "
            f"assert flowam_fast.__file__.startswith({str(lib)!r}), flowam_fast.__file__; "
            "sys.exit(main(['bench', '--quick', '--only', 'linear_max', '--threads', '1', '--quiet']))")
    env = dict(os.environ, PYTHONPATH=str(lib))
    out = _run([sys.executable, "-c", code], cwd=tmp_path, env=env)
    assert out.startswith("# flowam-fast benchmarks\n") and out.count("| linear_max ") == 4


def test_build_switches(monkeypatch):
    config = build_config.definition()
    for name in ("FLOWAM_FAST_ARCH", "TORCH_CUDA_ARCH_LIST", "FLOWAM_FAST_CPU_ONLY"):
        monkeypatch.delenv(name, raising=False)
    assert build_config.arch_flags(config) == config["arch_flags"]
    sass = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in config["cuda_archs"]]
    assert build_config.gencode_flags(config) == sass
    monkeypatch.setenv("FLOWAM_FAST_ARCH", "-march=x86-64-v3 -mtune=generic")
    assert build_config.arch_flags(config) == ["-march=x86-64-v3", "-mtune=generic"]
    monkeypatch.setenv("FLOWAM_FAST_ARCH", "")
    assert build_config.arch_flags(config) == []
    # TORCH_CUDA_ARCH_LIST is read as torch reads it: SASS for each, PTX too with +PTX.
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")
    assert sorted(build_config.gencode_flags(config)) == ["-gencode=arch=compute_80,code=sm_80",
                                                          "-gencode=arch=compute_90,code=compute_90",
                                                          "-gencode=arch=compute_90,code=sm_90"]
    for value, cpu_only in (("1", True), ("yes", True), ("0", False), ("", False)):
        monkeypatch.setenv("FLOWAM_FAST_CPU_ONLY", value)
        assert build_config.cpu_only() is cpu_only
        if cpu_only:
            resolved = build_config.resolve()
            assert not resolved["with_cuda"] and resolved["sources"] == config["cpu_sources"]
            assert resolved["nvcc_flags"] == [] and resolved["define_macros"] == []


def test_no_cuda_build_without_a_cuda_torch_and_nvcc(monkeypatch):
    import torch

    monkeypatch.delenv("FLOWAM_FAST_CPU_ONLY", raising=False)
    resolved = build_config.resolve()
    assert resolved["with_cuda"] == (torch.version.cuda is not None and build_config.cuda_home() is not None)
    if torch.version.cuda is None:
        assert build_config.cuda_home() is None and not resolved["with_cuda"]


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_cmake_reads_the_same_switches(tmp_path):
    env = dict(os.environ, FLOWAM_FAST_ARCH="-march=x86-64-v2", FLOWAM_FAST_CPU_ONLY="1")
    out = _run(["cmake", "-S", str(ROOT), "-B", str(tmp_path), f"-DPython3_EXECUTABLE={sys.executable}"], env=env)
    assert "flowam_fast: flowam_fast._C with CUDA: OFF; C++ flags: -O3;-fopenmp;-std=c++17;-march=x86-64-v2" in out
