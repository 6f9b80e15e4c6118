"""Backend selection and the kernels as operators: which backend "auto" picks on which machine
and the errors of every other choice, each backend's op (`library.kernel`), the Triton ops'
schemas, that the Triton path really launches its kernels and that its launchers refuse what
would read out of bounds, and that the package works without triton.

Without a GPU the Triton kernels run under the interpreter on CPU tensors (tests/ops/conftest.py
asks for it before triton's first import); if triton was imported earlier in compiled mode on a
machine without a GPU, the kernel tests rerun in a fresh process. On a GPU machine nothing is
forced: the same tests run compiled, on CUDA tensors.
"""
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("triton")

from flowam_fast.ops import backend, edge_max, flow_align, flow_stats, knn, library, linear_max  # noqa: E402

from tests.helpers import CountedLaunches  # noqa: E402
from tests.ops.test_edge_max import _inputs as _edge_inputs  # noqa: E402
from tests.ops.test_flow import _acts, _flow  # noqa: E402
from tests.ops.test_knn import _points  # noqa: E402
from tests.ops.test_linear_max import _inputs as _linear_inputs  # noqa: E402

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INTERPRETED = backend.triton_interpreting()
HAVE_KERNELS = INTERPRETED or torch.cuda.is_available()
DEVICE = torch.device("cpu" if INTERPRETED else "cuda")
needs_kernels = pytest.mark.skipif(not HAVE_KERNELS, reason="triton was imported before TRITON_INTERPRET=1 could "
                                   "be set and there is no GPU: see test_kernels_in_a_fresh_interpreter_process")


class Kernels:
    """A backend's ops by name: Kernels("triton").knn_forward(...)."""

    def __init__(self, backend_name):
        self.backend = backend_name

    def __getattr__(self, name):
        return library.kernel(self.backend, name)


def _dev(*tensors):
    out = tuple(t.to(DEVICE) for t in tensors)
    return out if len(out) > 1 else out[0]


@needs_kernels
@pytest.mark.skipif(not backend.has_cpu_kernels(), reason="flowam_fast._C is not built")
def test_same_results_as_the_cpu_kernels():
    """Where ties decide (integer-valued data), indices and argmaxes equal the C++ kernels'."""
    cpu, ft = (Kernels(b) for b in ("cpu", "triton"))
    g = torch.Generator().manual_seed(9)
    x = torch.randint(0, 3, (2, 40, 3), generator=g).float()
    for got, want in zip(ft.knn_forward(_dev(x), _dev(x), 9), cpu.knn_forward(x, x, 9)):
        assert torch.equal(got.cpu(), want)
    feat, idx = _edge_inputs(2, 20, 25, 8, 70, seed=1, levels=3)
    for got, want in zip(ft.edge_max_forward(*_dev(feat, idx)), cpu.edge_max_forward(feat, idx)):
        assert torch.equal(got.cpu(), want)
    lin = [torch.randint(-3, 4, shape, generator=g).double() for shape in ((2, 30, 5), (40, 5), (40,), (40,))]
    for got, want in zip(ft.linear_max_forward(*_dev(*lin), 0.2), cpu.linear_max_forward(*lin, 0.2)):
        assert torch.equal(got.cpu(), want)
    acts, labels = _acts(5, 6, 30, seed=2), torch.tensor([0, 2, 0, 1, 2])
    got, want = ft.flow_stats(*_dev(acts, labels), 4), cpu.flow_stats(acts, labels, 4)
    assert torch.equal(got[0].cpu(), want[0])
    for a, b in zip(got[1:], want[1:]):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-12, atol=1e-12)


# --- the Triton path really runs -----------------------------------------------------------


@pytest.fixture
def launches(monkeypatch):
    """The names of the Triton kernels launched during the test."""
    from triton.runtime.jit import KernelInterface

    from flowam_fast.ops.triton import _scatter, edge_max as t_edge, flow as t_flow, knn as t_knn
    from flowam_fast.ops.triton import linear_max as t_linear

    log = []
    for module in (_scatter, t_knn, t_edge, t_linear, t_flow):
        for name, obj in list(vars(module).items()):
            if isinstance(obj, KernelInterface) and name.endswith("_kernel"):
                short = f"{module.__name__.rsplit('.', 1)[1]}.{name}"
                monkeypatch.setattr(module, name, CountedLaunches(obj, short, log))
    return log


@needs_kernels
def test_every_op_launches_its_triton_kernels(launches):
    x = _dev(_points((1, 20, 3), seed=0)).requires_grad_(True)
    knn(x, 3, backend="triton")[0].sum().backward()
    assert launches == ["knn._forward_kernel", "knn._grad_query_kernel", "_scatter._segment_sum_kernel"]
    launches.clear()
    feat, idx = _dev(*_edge_inputs(1, 10, 10, 3, 4, seed=0))
    edge_max(feat.requires_grad_(True), idx, backend="triton").sum().backward()
    assert launches == ["edge_max._forward_kernel", "_scatter._segment_sum_kernel"]
    launches.clear()
    inputs = [t.requires_grad_(True) for t in _dev(*_linear_inputs(1, 10, 3, 4))]
    linear_max(*inputs, backend="triton").sum().backward()
    assert launches == ["linear_max._forward_kernel", "linear_max._preact_grad_kernel",
                        "linear_max._param_grad_kernel", "_scatter._segment_sum_kernel"]
    launches.clear()
    acts, labels = _dev(_acts(2, 3, 5), torch.tensor([0, 1]))
    flow_stats(acts, labels, 2, backend="triton")
    assert launches == ["flow._moments_kernel", "flow._class_merge_kernel"]
    launches.clear()
    mu, sigma = _dev(*_flow(2, 3))
    flow_align(acts.requires_grad_(True), labels, mu, sigma, backend="triton").sum().backward()
    assert launches == ["flow._moments_kernel", "flow._align_grad_kernel"]


@needs_kernels
def test_launchers_reject_what_would_read_out_of_bounds():
    ft = Kernels("triton")
    x = _dev(torch.randn(1, 8, 3))
    with pytest.raises(RuntimeError, match="must be contiguous"):
        ft.knn_forward(x.transpose(1, 2), x.transpose(1, 2), 2)
    with pytest.raises(RuntimeError, match="float32 or float64"):
        ft.knn_forward(x.half(), x.half(), 2)
    with pytest.raises(RuntimeError, match="k must be in"):
        ft.knn_forward(x, x, 9)
    with pytest.raises(RuntimeError, match="idx must be int64"):
        ft.knn_backward(torch.ones_like(x), x, x, torch.zeros_like(x, dtype=torch.int32))
    with pytest.raises(RuntimeError, match="dtype of x"):
        ft.linear_max_forward(x, _dev(torch.randn(4, 3, dtype=torch.float64)), *_dev(torch.ones(4), torch.zeros(4)),
                              0.0)


def test_kernels_in_a_fresh_interpreter_process():
    if HAVE_KERNELS:
        pytest.skip("the kernel tests ran in this process")
    env = dict(os.environ, TRITON_INTERPRET="1")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__], env=env,
                         capture_output=True, text=True, cwd=_ROOT)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


# --- dispatch ------------------------------------------------------------------------------

_CUDA = torch.device("cuda")
_CPU = torch.device("cpu")


@pytest.fixture
def machine(monkeypatch):
    """Sets what this 'machine' has: a GPU, _C (with or without CUDA), triton, the interpreter."""

    def setup(gpu=False, ext=False, ext_cuda=False, triton=True, interpreting=False):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
        monkeypatch.setattr(backend, "_C", SimpleNamespace(with_cuda=ext_cuda) if ext or ext_cuda else None)
        monkeypatch.setattr(backend, "triton_error", lambda: None if triton else "triton is not installed (test)")
        monkeypatch.setattr(backend, "triton_interpreting", lambda: triton and interpreting)

    return setup


@pytest.mark.parametrize("have, device, want", [
    (dict(gpu=True, ext_cuda=True), _CUDA, "cuda"),
    (dict(gpu=True, ext=True), _CUDA, "triton"),  # _C without CUDA
    (dict(gpu=True), _CUDA, "triton"),
    (dict(gpu=True, interpreting=True), _CUDA, "torch"),  # the interpreter is never a default
    (dict(gpu=True, triton=False), _CUDA, "torch"),
    (dict(ext=True, interpreting=True), _CPU, "cpu"),  # triton is never picked for CPU tensors
    (dict(interpreting=True), _CPU, "torch"),
    (dict(gpu=True, ext_cuda=True), _CPU, "cpu"),
    (dict(gpu=True, ext_cuda=True), torch.device("meta"), "torch"),
])
def test_auto_picks(machine, have, device, want):
    machine(**have)
    assert backend.resolve("auto", device, "op") == want


@pytest.mark.parametrize("have, name, device, exc, match", [
    (dict(), "gpu", _CPU, ValueError, "unknown backend 'gpu'"),
    (dict(gpu=True, ext_cuda=True), "cpu", _CUDA, ValueError, "'cpu' needs CPU tensors"),
    (dict(), "cpu", _CPU, RuntimeError, "_C is not built"),
    (dict(ext_cuda=True), "cuda", _CPU, ValueError, "'cuda' needs CUDA tensors"),
    (dict(gpu=True, ext=True), "cuda", _CUDA, RuntimeError, "'cuda' is not available: flowam_fast._C was built "
                                                            "without CUDA"),
    (dict(gpu=True), "cuda", _CUDA, RuntimeError, "'cuda' is not available: flowam_fast._C is not built"),
    (dict(gpu=True, triton=False), "triton", _CUDA, RuntimeError, "'triton' is not available: triton is not installed"),
    (dict(), "triton", _CPU, ValueError, "TRITON_INTERPRET=1 before triton is first imported"),
    (dict(interpreting=True), "triton", torch.device("meta"), ValueError, "'triton' needs CUDA tensors, got meta"),
])
def test_backend_errors(machine, have, name, device, exc, match):
    machine(**have)
    with pytest.raises(exc, match=match):
        backend.resolve(name, device, "op")


def test_auto_passes_over_a_backend_that_cannot_take_the_call(machine, monkeypatch):
    machine(gpu=True, ext_cuda=True)
    too_big = lambda b: "k too large (test)" if b == "cuda" else None  # noqa: E731
    assert backend.resolve("auto", _CUDA, "op", too_big) == "triton"
    with pytest.raises(ValueError, match="'cuda' cannot take this call: k too large"):
        backend.resolve("cuda", _CUDA, "op", too_big)
    # knn's rule: the CUDA kernel's register top-k lists end at _C.knn_max_k_cuda.
    from flowam_fast.ops.knn import _cuda_k_limit

    monkeypatch.setattr(backend, "_C", SimpleNamespace(with_cuda=True, knn_max_k_cuda=4))
    assert _cuda_k_limit(4)("cuda") is None and _cuda_k_limit(5)("triton") is None
    assert "above its largest k (4)" in _cuda_k_limit(5)("cuda")
    assert backend.resolve("auto", _CUDA, "knn", _cuda_k_limit(5)) == "triton"


def test_available_backends(machine):
    machine(gpu=True, ext_cuda=True)
    assert backend.available_backends("cuda") == ["cuda", "triton", "torch"]
    assert backend.available_backends("cpu") == ["cpu", "torch"]
    machine(interpreting=True)
    assert backend.available_backends("cpu") == ["triton", "torch"]


def test_kernel_lookup():
    """Each backend's ops: the dispatcher's flowam_fast::<name> for "cpu" and "cuda" (one op; the
    device picks the kernel), flowam_fast_triton::<name> for "triton", each with the C++ schema."""
    assert library.kernel("cpu", "knn_forward") is torch.ops.flowam_fast.knn_forward.default
    assert library.kernel("cuda", "flow_stats") is torch.ops.flowam_fast.flow_stats.default
    for name in backend.KERNELS:
        if name in backend.CPU_ONLY_KERNELS:
            with pytest.raises(ValueError, match="exists for backend 'cpu' only"):
                library.kernel("cuda", name)
            continue
        cpp, triton_op = library.kernel("cpu", name)._schema, library.kernel("triton", name)._schema
        # Triton's schema is inferred from the launcher's annotations, where an int is a SymInt.
        assert str(triton_op).replace("SymInt", "int").split("::")[1] == str(cpp).split("::")[1]
    with pytest.raises(ValueError, match="unknown kernel"):
        library.kernel("cpu", "knn")
    with pytest.raises(ValueError, match="has no kernels"):
        library.kernel("torch", "knn_forward")


def test_package_imports_without_triton():
    code = ("import sys; sys.modules['triton'] = None\n"
            "import flowam_fast, flowam_fast.ops, torch\n"
            "from flowam_fast.ops import backend, knn\n"
            "assert 'triton' not in backend.available_backends('cpu') and not backend.triton_interpreting()\n"
            "try:\n"
            "    knn(torch.randn(1, 5, 3), 2, backend='triton')\n"
            "except RuntimeError as e:\n"
            "    assert 'triton is not installed' in str(e), e\n"
            "else:\n"
            "    raise AssertionError('no error')\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=_ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
