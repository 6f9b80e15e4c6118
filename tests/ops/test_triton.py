"""Triton kernels against the pure-PyTorch reference, forward and backward, with the CPU tests'
adversarial cases; the dispatch rules of every backend.

Without a GPU the kernels run under the Triton interpreter on CPU tensors. Triton picks
interpreter or compiler once per process, at its first import (it decorates its own tl.max,
tl.sum, ... then), so this module asks for the interpreter before anything imports triton. If
something imported triton earlier in compiled mode on a machine without a GPU, the kernel tests
rerun in a fresh process instead. On a GPU machine nothing is forced: the same tests run
compiled, on CUDA tensors.
"""
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

if not torch.cuda.is_available() and "triton" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton")

from flowam_fast.ops import backend, edge_max, flow_align, flow_stats, knn, linear_max, reference  # noqa: E402

from tests.helpers import CountedLaunches  # noqa: E402
from tests.ops.test_edge_max import _first_argmax as _first_argmax_neighbour  # noqa: E402
from tests.ops.test_edge_max import _inputs as _edge_inputs  # noqa: E402
from tests.ops.test_flow import _acts, _assert_stats_close, _direct_stats, _flow  # noqa: E402
from tests.ops.test_knn import _assert_matches_truth, _points  # noqa: E402
from tests.ops.test_linear_max import SLOPES, _activation, _first_argmax  # noqa: E402
from tests.ops.test_linear_max import _inputs as _linear_inputs  # noqa: E402

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INTERPRETED = backend.triton_interpreting()
HAVE_KERNELS = INTERPRETED or torch.cuda.is_available()
DEVICE = torch.device("cpu" if INTERPRETED else "cuda")
needs_kernels = pytest.mark.skipif(not HAVE_KERNELS, reason="triton was imported before TRITON_INTERPRET=1 could "
                                   "be set and there is no GPU: see test_kernels_in_a_fresh_interpreter_process")


def _dev(*tensors):
    out = tuple(t.to(DEVICE) for t in tensors)
    return out if len(out) > 1 else out[0]


def _triton():
    import flowam_fast.ops.triton as ft

    return ft


def _grads(fn, *inputs):
    """fn(*leaves) backpropagated with a fixed random upstream gradient: (output, grads)."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*leaves)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=out.dtype).to(out.device)
    (out * g).sum().backward()
    return out.detach(), [t.grad for t in leaves]


def _assert_grads_match(fn_triton, fn_ref, inputs, tol):
    out, grads = _grads(fn_triton, *inputs)
    want, want_grads = _grads(fn_ref, *inputs)
    torch.testing.assert_close(out, want, rtol=tol, atol=tol)
    for got, ref in zip(grads, want_grads):
        torch.testing.assert_close(got, ref, rtol=tol, atol=tol * max(1.0, ref.abs().max().item()))


# --- knn ---------------------------------------------------------------------------------


@needs_kernels
@pytest.mark.parametrize("dim, dtype", [(3, torch.float32), (3, torch.float64), (20, torch.float32),
                                        (20, torch.float64)])
def test_knn_matches_reference(dim, dtype):
    # 100 points: two reference tiles and two query blocks under the interpreter's config;
    # dim 20 in float32 takes the tl.dot path.
    x = _points((1, 100, dim), seed=dim, dtype=dtype)
    dist2, idx = knn(_dev(x), 6, backend="triton")
    assert dist2.dtype == dtype and idx.dtype == torch.int64 and dist2.shape == (1, 100, 6)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    _assert_matches_truth(dist2.cpu(), idx.cpu(), x, x, 6, tol)
    torch.testing.assert_close(dist2.cpu(), reference.knn(x, 6)[0], atol=tol * dim, rtol=tol * 10)


@needs_kernels
@pytest.mark.parametrize("dim", [3, 20])
def test_knn_query_ref(dim):
    q, r = _points((2, 70, dim), seed=1), _points((2, 90, dim), seed=2)
    dist2, idx = knn(_dev(q), 11, ref=_dev(r), backend="triton")
    _assert_matches_truth(dist2.cpu(), idx.cpu(), q, r, 11, 1e-5)


@needs_kernels
@pytest.mark.parametrize("dim, k", [(3, 1), (3, 5), (20, 24)])
def test_knn_grid_ties_match_reference_exactly(dim, k):
    # Integer coordinates: exact distances in every summation order (the dot path too), so the
    # tie rule, smaller index first, must give the reference's result bit for bit.
    x = _points((3, 40, dim), seed=k, grid=3)
    dist2, idx = knn(_dev(x), k, backend="triton")
    ref_d, ref_i = reference.knn(x, k)
    assert torch.equal(idx.cpu(), ref_i) and torch.equal(dist2.cpu(), ref_d)


@needs_kernels
def test_knn_all_points_identical():
    dist2, idx = knn(_dev(torch.ones(1, 70, 3)), 10, backend="triton")
    assert torch.equal(idx.cpu(), torch.arange(10).expand(1, 70, 10))
    assert torch.equal(dist2.cpu(), torch.zeros(1, 70, 10))


@needs_kernels
@pytest.mark.parametrize("n", [1, 2, 9])
def test_knn_k_equals_n_and_batch_of_one(n):
    x = _points((1, n, 3), seed=n)
    dist2, idx = knn(_dev(x), n, backend="triton")
    assert torch.equal(idx.cpu().sort(-1).values, torch.arange(n).expand(1, n, n))
    torch.testing.assert_close(dist2.cpu(), reference.knn(x, n)[0])


@needs_kernels
def test_knn_non_contiguous_inputs():
    x = _dev(_points((2, 3, 40), seed=5)).transpose(1, 2)  # (B, N, 3) view of (B, 3, N)
    r = _dev(_points((2, 60, 3), seed=6))[:, ::2]
    assert not x.is_contiguous() and not r.is_contiguous()
    for ref in (None, r):
        d1, i1 = knn(x, 6, ref=ref, backend="triton")
        d2, i2 = knn(x.contiguous(), 6, ref=None if ref is None else ref.contiguous(), backend="triton")
        assert torch.equal(i1, i2) and torch.equal(d1, d2)


@needs_kernels
@pytest.mark.parametrize("dim", [3, 20])
def test_knn_gradients_match_reference(dim):
    # Many queries, few reference points: each reference point collects many contributions.
    q, r = _points((2, 60, dim), seed=10, dtype=torch.float64), _points((2, 12, dim), seed=11, dtype=torch.float64)
    _assert_grads_match(lambda a, b: knn(a, 5, ref=b, backend="triton")[0], lambda a, b: reference.knn(a, 5, b)[0],
                        _dev(q, r), 1e-10)
    x = _dev(_points((1, 40, dim), seed=12, dtype=torch.float64))
    _assert_grads_match(lambda a: knn(a, 4, backend="triton")[0], lambda a: reference.knn(a, 4)[0], (x,), 1e-10)


# --- edge_max ----------------------------------------------------------------------------


@needs_kernels
@pytest.mark.parametrize("c, dtype, index_dtype", [(1, torch.float32, torch.int64), (5, torch.float64, torch.int32),
                                                   (70, torch.float32, torch.int32)])
def test_edge_max_matches_reference(c, dtype, index_dtype):
    feat, idx = _edge_inputs(2, 40, 30, 6, c, seed=c, dtype=dtype, index_dtype=index_dtype)
    out = edge_max(*_dev(feat, idx), backend="triton")
    assert out.dtype == dtype and out.shape == (2, 30, c)
    assert torch.equal(out.cpu(), reference.edge_max(feat, idx))


@needs_kernels
@pytest.mark.parametrize("c", [3, 70])
def test_edge_max_argmax_is_first_maximal_neighbour(c):
    feat, idx = _edge_inputs(2, 20, 25, 8, c, seed=1, levels=3)
    out, argmax = _triton().edge_max_forward(*_dev(feat, idx))
    assert argmax.dtype == torch.int64
    assert torch.equal(argmax.cpu(), _first_argmax_neighbour(feat, idx))
    assert torch.equal(torch.gather(feat, 1, argmax.cpu()), out.cpu())


@needs_kernels
def test_edge_max_ties_send_gradient_to_first_neighbour():
    idx = _dev(torch.tensor([[[3, 1, 3, 0], [2, 2, 1, 0]]]))
    feat = _dev(torch.ones(1, 4, 5)).requires_grad_()
    edge_max(feat, idx, backend="triton").sum().backward()
    expected = torch.zeros(1, 4, 5)
    expected[0, 3] = 1.0
    expected[0, 2] = 1.0
    assert torch.equal(feat.grad.cpu(), expected)


@needs_kernels
@pytest.mark.parametrize("k", [1, 20])
def test_edge_max_k_edge_cases_batch_of_one(k):
    feat, idx = _edge_inputs(1, 20, 7, k, 33, seed=k)
    out = edge_max(*_dev(feat, idx), backend="triton")
    assert torch.equal(out.cpu(), reference.edge_max(feat, idx))


@needs_kernels
def test_edge_max_non_contiguous_inputs():
    g = torch.Generator().manual_seed(3)
    feat = torch.randn(2, 64, 50, generator=g).transpose(1, 2)
    idx = torch.randint(0, 50, (2, 9, 50), generator=g).transpose(1, 2)
    assert torch.equal(edge_max(*_dev(feat, idx), backend="triton").cpu(), reference.edge_max(feat, idx))


@needs_kernels
def test_edge_max_gradient_matches_reference_and_is_deterministic():
    # Few points and many rows: each point is the argmax of many (row, channel) pairs.
    feat, idx = _edge_inputs(2, 10, 60, 7, 70, seed=4, dtype=torch.float64)
    feat, idx = _dev(feat, idx)
    _assert_grads_match(lambda f: edge_max(f, idx, backend="triton"), lambda f: reference.edge_max(f, idx), (feat,),
                        1e-12)
    first, second = (_grads(lambda f: edge_max(f, idx, backend="triton"), feat)[1][0] for _ in range(2))
    assert torch.equal(first, second)


# --- linear_max --------------------------------------------------------------------------


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("slope", SLOPES)
def test_linear_max_matches_reference(dtype, slope):
    # More points, input and output channels than one block each.
    inputs = _dev(*_linear_inputs(2, 45, 20, 40, dtype=dtype, seed=2))
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    _assert_grads_match(lambda *a: linear_max(*a, negative_slope=slope, backend="triton"),
                        lambda *a: reference.linear_max(*a, negative_slope=slope), inputs, tol)


@needs_kernels
def test_linear_max_argmax_is_a_maximizer():
    x, w, scale, shift = _linear_inputs(3, 50, 12, 40, dtype=torch.float64)
    out, argmax = _triton().linear_max_forward(*_dev(x, w, scale, shift), 0.2)
    act = _activation(x, w, scale, shift, 0.2)
    assert torch.equal(argmax.cpu(), _first_argmax(act))
    torch.testing.assert_close(act.gather(1, argmax.cpu().unsqueeze(1)).squeeze(1), out.cpu(), rtol=1e-12, atol=1e-12)


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linear_max_ties_go_to_the_smallest_point_index(dtype):
    # Small integers: every product and sum is exact, so the copies of a point tie exactly
    # whatever order a GEMM adds in (the interpreter's tl.dot is numpy's, which rounds rows
    # at different positions differently).
    g = torch.Generator().manual_seed(4)
    base, w, scale, shift = (torch.randint(-3, 4, shape, generator=g).to(dtype) for shape in
                             ((2, 6, 5), (40, 5), (40,), (40,)))
    perm = torch.randperm(18, generator=g)
    x = base.repeat(1, 3, 1)[:, perm].contiguous()  # every point three times, shuffled
    _, argmax = _triton().linear_max_forward(*_dev(x, w, scale, shift), 0.0)
    assert torch.equal(argmax.cpu(), _first_argmax(_activation(base, w, scale, shift, 0.0)[:, perm % 6]))
    xg = _dev(x).requires_grad_(True)
    linear_max(xg, *_dev(w, scale, shift), 0.0, backend="triton").sum().backward()
    hit = xg.grad.cpu().abs().sum(-1) > 0
    first = torch.zeros_like(hit).scatter_(1, argmax.cpu(), True)
    assert not (hit & ~first).any()


@needs_kernels
@pytest.mark.parametrize("slope", SLOPES)
def test_linear_max_derivative_at_the_kink_is_the_slope(slope):
    x = -torch.rand(2, 5, 3, dtype=torch.float64) - 0.1
    x[:, 2] = 0.0  # the origin: z = shift = 0 exactly there, z < 0 everywhere else
    w = torch.rand(4, 3, dtype=torch.float64) + 0.1
    scale, shift = torch.rand(4, dtype=torch.float64) + 0.5, torch.zeros(4, dtype=torch.float64)
    _, (_, _, _, grad_shift) = _grads(lambda *a: linear_max(*a, negative_slope=slope, backend="triton"),
                                      *_dev(x, w, scale, shift))
    _, (_, _, _, want) = _grads(lambda *a: reference.linear_max(*a, negative_slope=slope), x, w, scale, shift)
    torch.testing.assert_close(grad_shift.cpu(), want, rtol=1e-12, atol=1e-12)


@needs_kernels
def test_linear_max_dead_channel_and_non_contiguous_input():
    g = torch.Generator().manual_seed(5)
    x = _dev(torch.randn(2, 5, 33, generator=g)).transpose(1, 2)  # (B, N, Cin) view of channels-first
    w = _dev(torch.randn(20, 5, generator=g))
    shift = _dev(torch.zeros(20))
    shift[3] = -1e3  # channel 3 negative everywhere: ReLU gives 0 with argmax 0
    out = linear_max(x, w, None, shift, backend="triton")
    torch.testing.assert_close(out, reference.linear_max(x, w, torch.ones_like(shift), shift, 0.0))
    assert torch.all(out[:, 3] == 0)


# --- flow_stats / flow_align -------------------------------------------------------------


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B, C, N", [(7, 5, 33), (1, 3, 1), (3, 40, 150)])
def test_flow_stats_both_layouts(dtype, B, C, N):
    labels = torch.tensor([0, 3, 0, 1, 3, 3, 0][:B])
    acts = _acts(B, C, N, dtype)
    # The same values in points-last memory, handed over as a (B, C, N) view.
    view = acts.transpose(1, 2).contiguous().transpose(1, 2)
    want = _direct_stats(acts, labels, 5)
    for a in (acts, view):
        got = flow_stats(_dev(a), _dev(labels), 5, backend="triton")
        assert got.count.dtype == torch.int64 and got.mean.dtype == got.m2.dtype == torch.float64
        _assert_stats_close(tuple(t.cpu() for t in got), want)


@needs_kernels
def test_flow_stats_precise_with_a_large_mean():
    acts = _acts(6, 4, 500, torch.float32, offset=1e4)  # spread ~1 on a mean of 1e4
    labels = torch.tensor([1, 1, 0, 1, 0, 1])
    got = flow_stats(*_dev(acts, labels), 2, backend="triton")
    _assert_stats_close(tuple(t.cpu() for t in got), _direct_stats(acts, labels, 2), rtol=1e-10)


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B, C, N", [(4, 6, 50), (1, 3, 1), (3, 40, 129)])
def test_flow_align_both_layouts(dtype, B, C, N):
    base = _acts(B, N, C, dtype, seed=12, offset=2.0)  # points-last memory
    labels = _dev(torch.tensor([2, 0, 2, 1][:B]))
    mu, sigma = _dev(*_flow(3, C))
    tol = 1e-5 if dtype == torch.float32 else 1e-11
    for layout in (lambda a: a.transpose(1, 2), lambda a: a.transpose(1, 2).contiguous()):
        _assert_grads_match(lambda a: flow_align(layout(a), labels, mu, sigma, backend="triton"),
                            lambda a: reference.flow_align(layout(a), labels, mu, sigma), (_dev(base),), tol)


@needs_kernels
def test_flow_align_constant_channel():
    acts = _acts(2, 4, 30, torch.float64, seed=6)
    acts[:, 1] = 0.0  # a dead ReLU channel: std = sqrt(STD_EPS)
    mu, sigma = _flow(2, 4)
    sigma[:, 1] = 0.0
    labels = _dev(torch.tensor([0, 1]))
    mu, sigma = _dev(mu, sigma)
    _assert_grads_match(lambda a: flow_align(a, labels, mu, sigma, backend="triton"),
                        lambda a: reference.flow_align(a, labels, mu, sigma), (_dev(acts),), 1e-12)


@needs_kernels
@pytest.mark.skipif(not backend.has_cpu_kernels(), reason="flowam_fast._C is not built")
def test_same_results_as_the_cpu_kernels():
    """Where ties decide (integer-valued data), indices and argmaxes equal the C++ kernels'."""
    cpu, ft = backend.extension(), _triton()
    g = torch.Generator().manual_seed(9)
    x = torch.randint(0, 3, (2, 40, 3), generator=g).float()
    for got, want in zip(ft.knn_forward(_dev(x), _dev(x), 9), cpu.knn_forward_cpu(x, x, 9)):
        assert torch.equal(got.cpu(), want)
    feat, idx = _edge_inputs(2, 20, 25, 8, 70, seed=1, levels=3)
    for got, want in zip(ft.edge_max_forward(*_dev(feat, idx)), cpu.edge_max_forward_cpu(feat, idx)):
        assert torch.equal(got.cpu(), want)
    lin = [torch.randint(-3, 4, shape, generator=g).double() for shape in ((2, 30, 5), (40, 5), (40,), (40,))]
    for got, want in zip(ft.linear_max_forward(*_dev(*lin), 0.2), cpu.linear_max_forward_cpu(*lin, 0.2)):
        assert torch.equal(got.cpu(), want)
    acts, labels = _acts(5, 6, 30, seed=2), torch.tensor([0, 2, 0, 1, 2])
    got, want = ft.flow_stats(*_dev(acts, labels), 4), cpu.flow_stats_cpu(acts, labels, 4)
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
    ft = _triton()
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
    if DEVICE.type == "cpu":
        with pytest.raises(RuntimeError, match="different devices"):
            ft.edge_max_forward(x, torch.zeros(1, 8, 2, dtype=torch.long, device="meta"))


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


def _fake_extension(suffix, **attrs):
    """A stand-in for flowam_fast._C whose `<kernel>_<suffix>` entries are the Triton launchers."""
    ft = _triton()
    return SimpleNamespace(**{f"{name}_{suffix}": getattr(ft, name) for name in backend.KERNELS}, **attrs)


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


def test_kernel_table(monkeypatch):
    fake = _fake_extension("cpu", knn_forward_cuda="cuda kernel")
    monkeypatch.setattr(backend, "_C", fake)
    assert backend.kernel("cpu", "flow_stats") is fake.flow_stats_cpu
    assert backend.kernel("cuda", "knn_forward") == "cuda kernel"
    assert backend.kernel("triton", "linear_max_backward") is _triton().linear_max_backward
    with pytest.raises(ValueError, match="unknown kernel"):
        backend.kernel("cpu", "knn")
    with pytest.raises(ValueError, match="has no kernels"):
        backend.kernel("torch", "knn_forward")


@needs_kernels
def test_one_function_per_op_runs_the_chosen_backend(monkeypatch):
    """Forward and backward of every op go to the kernels of the backend the front end chose:
    here "cpu" and "auto", through a stand-in _C whose CPU entries are the Triton launchers."""
    if DEVICE.type != "cpu":
        pytest.skip("the stand-in _C serves CPU tensors")
    monkeypatch.setattr(backend, "_C", _fake_extension("cpu", with_cuda=False))
    calls = []
    lookup = backend.kernel
    monkeypatch.setattr(backend, "kernel", lambda b, name: calls.append((b, name)) or lookup(b, name))
    x = _points((1, 12, 3), seed=0, dtype=torch.float64).requires_grad_(True)
    knn(x, 3)[0].sum().backward()
    acts, labels = _acts(2, 3, 5, torch.float64).requires_grad_(True), torch.tensor([0, 1])
    flow_align(acts, labels, *_flow(2, 3), backend="cpu").sum().backward()
    assert calls == [("cpu", "knn_forward"), ("cpu", "knn_backward"), ("cpu", "flow_align_forward"),
                     ("cpu", "flow_align_backward")]
    xr = x.detach().clone().requires_grad_(True)
    reference.knn(xr, 3)[0].sum().backward()
    torch.testing.assert_close(x.grad, xr.grad)


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
