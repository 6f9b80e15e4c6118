"""GPU tests (marker `cuda`): the CUDA and Triton kernels, called through the public front ends,
against the pure-PyTorch reference on CUDA tensors, forward and backward; gradcheck in float64
for the CUDA kernels; the CPU tests' adversarial cases (ties, duplicates, N = k, k = 1, B = 1,
non-contiguous inputs); run-to-run bit identity; direct calls that must fail cleanly; and the
models' fast path against their plain path on the GPU.

Skipped without a GPU; the "cuda" cases also without CUDA kernels in flowam_fast._C, the
"triton" ones without triton. On a GPU machine: `pytest -m cuda tests`.
"""
import pytest
import torch

from flowam_fast.models import DGCNN, PointNet, plain_path
from flowam_fast.ops import (backend, ball_query, edge_max, farthest_point_sample, flow_align, flow_stats,
                              group_gather, group_linear_max, knn, linear_max, reference)

from tests.helpers import randomize
from tests.models.test_fast_paths import _fast_vs_plain
from tests.ops.test_edge_max import _first_argmax as _first_argmax_neighbour
from tests.ops.test_edge_max import _inputs as _edge_inputs
from tests.ops.test_flow import _acts, _assert_stats_close, _direct_stats, _flow
from tests.ops.test_fps_ball_query import _assert_farthest, _assert_groups, _cloud, _gather
# test_group_gather asks for the Triton interpreter (without a GPU) before it imports triton.
from tests.ops.test_group_gather import _grouped
from tests.ops.test_group_gather import _inputs as _group_inputs
from tests.ops.test_knn import _assert_matches_truth, _points
from tests.ops.test_linear_max import SHAPES, SLOPES, _activation, _first_argmax
from tests.ops.test_linear_max import _inputs as _linear_inputs

# Nothing here may import triton at collection time: on a machine without a GPU the Triton
# tests set the interpreter up first (tests/ops/test_triton.py).
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

DEV = torch.device("cuda")
KERNELS = ("cuda", "triton")


def _require(kind: str) -> None:
    if kind == "cuda" and not backend.has_cuda_kernels():
        pytest.skip("flowam_fast._C was built without CUDA (needs a CUDA torch and nvcc at build time)")
    if kind == "triton" and not backend.has_triton(DEV):
        pytest.skip(backend.triton_error() or "triton cannot run on this GPU")


@pytest.fixture(params=KERNELS)
def kind(request):
    _require(request.param)
    return request.param


@pytest.fixture
def cuda_kernels():
    _require("cuda")
    return backend.extension()


@pytest.fixture
def no_tf32():
    """The plain path's convolutions and matmuls in full float32, as the fused kernels compute."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _gpu(*tensors):
    out = tuple(t.to(DEV) for t in tensors)
    return out if len(out) > 1 else out[0]


def _grads(fn, inputs, seed=7):
    """fn(*leaves) backpropagated with a fixed random upstream gradient: (output, grads)."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*leaves)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype).to(out.device)
    (out * g).sum().backward()
    return out.detach(), [t.grad for t in leaves]


def _assert_grads_match(fn, fn_ref, inputs, tol):
    out, grads = _grads(fn, inputs)
    want, want_grads = _grads(fn_ref, inputs)
    torch.testing.assert_close(out, want, rtol=tol, atol=tol)
    for got, ref in zip(grads, want_grads):
        torch.testing.assert_close(got, ref, rtol=tol, atol=tol * max(1.0, ref.abs().max().item()))


def _twice(run):
    """run() -> tensors, twice: the results must agree bit for bit."""
    first, second = run(), run()
    for a, b in zip(first, second):
        assert torch.equal(a, b)


# --- knn ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dim, dtype", [(3, torch.float32), (3, torch.float64), (5, torch.float32),
                                        (20, torch.float64), (64, torch.float32), (128, torch.float32)])
def test_knn_matches_reference(kind, dim, dtype):
    # Both selection forms (direct up to D = 8, the GEMM form above), several tiles of points.
    x = _points((2, 300, dim), seed=dim, dtype=dtype)
    dist2, idx = knn(_gpu(x), 16, backend=kind)
    assert dist2.dtype == dtype and idx.dtype == torch.int64 and dist2.shape == (2, 300, 16)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    _assert_matches_truth(dist2.cpu(), idx.cpu(), x, x, 16, tol)
    torch.testing.assert_close(dist2.cpu(), reference.knn(x, 16)[0], atol=tol * dim, rtol=tol * 10)


@pytest.mark.parametrize("dim", [3, 64])
@pytest.mark.parametrize("k", [1, 20, 33, 64])
def test_knn_query_ref_many_tiles(kind, dim, k):
    # M != N, more reference points than many tiles, k on every register list size.
    q, r = _points((2, 150, dim), seed=1), _points((2, 1700, dim), seed=2)
    dist2, idx = knn(_gpu(q), k, ref=_gpu(r), backend=kind)
    assert dist2.shape == (2, 150, k)
    _assert_matches_truth(dist2.cpu(), idx.cpu(), q, r, k, 1e-5)


@pytest.mark.parametrize("dim, k", [(3, 1), (3, 5), (3, 24), (64, 5), (64, 24)])
def test_knn_grid_ties_match_reference_exactly(kind, dim, k):
    # Integer coordinates: every distance (and every GEMM-form key) is exact, so ties are real
    # and the tie rule, smaller index first, must give the reference's result bit for bit.
    x = _points((3, 40, dim), seed=k, grid=3)
    dist2, idx = knn(_gpu(x), k, backend=kind)
    ref_d, ref_i = reference.knn(x, k)
    assert torch.equal(idx.cpu(), ref_i) and torch.equal(dist2.cpu(), ref_d)


def test_knn_all_points_identical(kind):
    dist2, idx = knn(torch.ones(1, 300, 3, device=DEV), 10, backend=kind)
    assert torch.equal(idx.cpu(), torch.arange(10).expand(1, 300, 10))
    assert torch.equal(dist2.cpu(), torch.zeros(1, 300, 10))


@pytest.mark.parametrize("n", [1, 2, 9, 64])
def test_knn_k_equals_n_and_batch_of_one(kind, n):
    x = _points((1, n, 3), seed=n)
    dist2, idx = knn(_gpu(x), n, backend=kind)
    assert torch.equal(idx.cpu().sort(-1).values, torch.arange(n).expand(1, n, n))
    torch.testing.assert_close(dist2.cpu(), reference.knn(x, n)[0])


def test_knn_non_contiguous_inputs(kind):
    x = _gpu(_points((2, 3, 200), seed=5)).transpose(1, 2)  # (B, N, 3) view of (B, 3, N)
    r = _gpu(_points((2, 300, 3), seed=6))[:, ::2]
    assert not x.is_contiguous() and not r.is_contiguous()
    for ref in (None, r):
        d1, i1 = knn(x, 8, ref=ref, backend=kind)
        d2, i2 = knn(x.contiguous(), 8, ref=None if ref is None else ref.contiguous(), backend=kind)
        assert torch.equal(i1, i2) and torch.equal(d1, d2)


@pytest.mark.parametrize("dim", [3, 20])
def test_knn_gradients_match_reference(kind, dim):
    # Many queries, few reference points: each reference point collects many contributions.
    q, r = _points((2, 200, dim), seed=10, dtype=torch.float64), _points((2, 24, dim), seed=11, dtype=torch.float64)
    _assert_grads_match(lambda a, b: knn(a, 5, ref=b, backend=kind)[0], lambda a, b: reference.knn(a, 5, b)[0],
                        _gpu(q, r), 1e-10)
    x = _gpu(_points((2, 200, 3), seed=13))
    _assert_grads_match(lambda a: knn(a, 10, backend=kind)[0], lambda a: reference.knn(a, 10)[0], (x,), 1e-4)


@pytest.mark.parametrize("dim", [3, 12])
def test_knn_gradcheck(cuda_kernels, dim):
    q = _gpu(_points((2, 6, dim), seed=10, dtype=torch.float64)).requires_grad_()
    r = _gpu(_points((2, 9, dim), seed=11, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: knn(a, 3, ref=b, backend="cuda")[0], (q, r))
    x = _gpu(_points((2, 10, dim), seed=12, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda a: knn(a, 4, backend="cuda")[0], (x,))


@pytest.mark.parametrize("dim", [3, 64])
def test_knn_deterministic(kind, dim):
    x = _gpu(_points((3, 400, dim), seed=15, grid=4))  # duplicates: many ties, many shared neighbours
    w = _gpu(_points((3, 400, 12), seed=16))

    def run():
        xr = x.clone().requires_grad_(True)
        d, i = knn(xr, 12, backend=kind)
        (d * w).sum().backward()
        return d, i, xr.grad

    _twice(run)


def test_knn_k_limit_and_fallback(cuda_kernels):
    x = _gpu(_points((1, 100, 3), seed=17))
    limit = cuda_kernels.knn_max_k_cuda
    assert limit >= 64
    with pytest.raises(RuntimeError, match=f"at most {limit}"):
        cuda_kernels.knn_forward_cuda(x, x, limit + 1)
    with pytest.raises(ValueError, match="cannot take this call"):
        knn(x, limit + 1, backend="cuda")
    d, i = knn(x, limit + 1)  # auto passes over the CUDA kernel
    ref_d, _ = reference.knn(x, limit + 1)
    torch.testing.assert_close(d, ref_d)


def test_knn_direct_call_errors(cuda_kernels):
    x = _gpu(_points((1, 10, 3), seed=18))
    g = torch.ones(1, 10, 2, device=DEV)
    for args, match in [
        ((x.cpu(), x.cpu(), 2), "CUDA tensor"),
        ((x, x.cpu(), 2), "CUDA tensor"),
        ((x, x, 11), "k must be in"),
        ((x, x.double(), 2), "dtypes differ"),
        ((x.transpose(1, 2), x, 2), "3 dimensions|point dimensions|contiguous"),
        ((x.half(), x.half(), 2), "float32 or float64"),
    ]:
        with pytest.raises(RuntimeError, match=match):
            cuda_kernels.knn_forward_cuda(*args)
    with pytest.raises(RuntimeError, match=r"outside \[0, 10\)"):
        cuda_kernels.knn_backward_cuda(g, x, x, torch.full((1, 10, 2), 10, dtype=torch.long, device=DEV))
    with pytest.raises(RuntimeError, match="idx must be a CUDA tensor"):
        cuda_kernels.knn_backward_cuda(g, x, x, torch.zeros(1, 10, 2, dtype=torch.long))


# --- edge_max ----------------------------------------------------------------------------


@pytest.mark.parametrize("c, dtype, index_dtype", [(1, torch.float32, torch.int64), (5, torch.float64, torch.int32),
                                                    (64, torch.float32, torch.int32), (70, torch.float64, torch.int64),
                                                    (256, torch.float32, torch.int64)])
def test_edge_max_matches_reference(kind, c, dtype, index_dtype):
    feat, idx = _edge_inputs(2, 40, 30, 6, c, seed=c, dtype=dtype, index_dtype=index_dtype)
    out = edge_max(*_gpu(feat, idx), backend=kind)
    assert out.dtype == dtype and out.shape == (2, 30, c)
    assert torch.equal(out.cpu(), reference.edge_max(feat, idx))


@pytest.mark.parametrize("c", [3, 64, 70])
def test_edge_max_argmax_is_first_maximal_neighbour(cuda_kernels, c):
    feat, idx = _edge_inputs(2, 20, 25, 8, c, seed=1, levels=3)
    out, argmax = cuda_kernels.edge_max_forward_cuda(*_gpu(feat, idx))
    assert argmax.dtype == torch.int64
    assert torch.equal(argmax.cpu(), _first_argmax_neighbour(feat, idx))
    assert torch.equal(torch.gather(feat, 1, argmax.cpu()), out.cpu())


def test_edge_max_backward_kernel_matches_scatter_add(cuda_kernels):
    feat, idx = _edge_inputs(2, 10, 40, 5, 37, seed=7)
    _, argmax = cuda_kernels.edge_max_forward_cuda(*_gpu(feat, idx))
    g = torch.randn(2, 40, 37, dtype=torch.float64)
    got = cuda_kernels.edge_max_backward_cuda(_gpu(g), argmax, 10)
    want = torch.zeros(2, 10, 37, dtype=torch.float64).scatter_add_(1, argmax.cpu(), g)
    torch.testing.assert_close(got.cpu(), want, rtol=1e-12, atol=1e-12)


def test_edge_max_gradient_matches_reference_and_ties_go_first(kind):
    feat, idx = _edge_inputs(2, 30, 30, 7, 70, seed=4, dtype=torch.float64)
    _assert_grads_match(lambda f: edge_max(f, _gpu(idx), backend=kind), lambda f: reference.edge_max(f, _gpu(idx)),
                        (_gpu(feat),), 1e-12)
    # Equal values: the gradient reaches the first maximal neighbour in idx order only.
    feat, idx = _edge_inputs(1, 12, 20, 6, 9, seed=5, levels=2)
    f = _gpu(feat).requires_grad_(True)
    edge_max(f, _gpu(idx), backend=kind).sum().backward()
    want = torch.zeros(1, 12, 9).scatter_add_(1, _first_argmax_neighbour(feat, idx), torch.ones(1, 20, 9))
    assert torch.equal(f.grad.cpu(), want)


def test_edge_max_gradcheck(cuda_kernels):
    feat, idx = _edge_inputs(2, 8, 6, 3, 5, seed=6, dtype=torch.float64)
    f = _gpu(feat).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: edge_max(a, _gpu(idx), backend="cuda"), (f,))


@pytest.mark.parametrize("k", [1, 2, 20])
def test_edge_max_k_and_batch_of_one(kind, k):
    feat, idx = _edge_inputs(1, 20, 7, k, 33, seed=k)
    out = edge_max(*_gpu(feat, idx), backend=kind).cpu()
    assert torch.equal(out, reference.edge_max(feat, idx))
    if k == 1:
        assert torch.equal(out, torch.gather(feat, 1, idx.expand(1, 7, 33)))


def test_edge_max_non_contiguous_inputs(kind):
    g = torch.Generator().manual_seed(3)
    feat = _gpu(torch.randn(2, 64, 50, generator=g)).transpose(1, 2)  # (B, N, C) view of (B, C, N)
    idx = _gpu(torch.randint(0, 50, (2, 9, 50), generator=g)).transpose(1, 2)
    assert not feat.is_contiguous() and not idx.is_contiguous()
    assert torch.equal(edge_max(feat, idx, backend=kind), reference.edge_max(feat, idx))


def test_edge_max_deterministic(kind):
    # Few values and a small graph: many ties and many gradients sent to each point.
    feat, idx = _gpu(*_edge_inputs(2, 50, 400, 20, 64, seed=9, levels=3))
    g = _gpu(torch.randn(2, 400, 64, generator=torch.Generator().manual_seed(10)))

    def run():
        f = feat.clone().requires_grad_(True)
        out = edge_max(f, idx, backend=kind)
        (out * g).sum().backward()
        return out, f.grad

    _twice(run)


def test_edge_max_direct_call_errors(cuda_kernels):
    feat, idx = _gpu(*_edge_inputs(1, 10, 10, 2, 4, seed=11))
    for args, match in [
        ((feat.cpu(), idx.cpu()), "CUDA tensors"),
        ((feat, idx.cpu()), "CUDA tensors"),
        ((feat, torch.full_like(idx, 10)), r"outside \[0, 10\)"),
        ((feat, idx.float()), "int64 or int32"),
    ]:
        with pytest.raises(RuntimeError, match=match):
            cuda_kernels.edge_max_forward_cuda(*args)
    g = torch.ones(1, 10, 4, device=DEV)
    with pytest.raises(RuntimeError, match=r"outside \[0, 3\)"):
        cuda_kernels.edge_max_backward_cuda(g, torch.full((1, 10, 4), 3, dtype=torch.long, device=DEV), 3)


# --- linear_max --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype, slope", [(torch.float32, SLOPES[0]), (torch.float64, SLOPES[1]),
                                          (torch.float32, SLOPES[2])])
@pytest.mark.parametrize("shape", SHAPES + [(2, 300, 128, 1030), (3, 129, 7, 129)])
def test_linear_max_matches_reference(kind, dtype, slope, shape):
    # Point and channel counts off the 128-wide tiles, Cin off the 8-wide stage, Cin = 1.
    x, w, scale, shift = _linear_inputs(*shape, dtype=dtype)
    out = linear_max(*_gpu(x, w, scale, shift), slope, backend=kind)
    ref = reference.linear_max(x, w, scale, shift, slope)
    assert out.dtype == dtype and out.shape == ref.shape
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(out.cpu(), ref, rtol=tol, atol=tol * max(1.0, ref.abs().max().item()))


@pytest.mark.parametrize("slope", SLOPES)
def test_linear_max_argmax_is_first_maximizer(cuda_kernels, slope):
    x, w, scale, shift = _linear_inputs(3, 300, 12, 140, dtype=torch.float64)
    out, argmax = cuda_kernels.linear_max_forward_cuda(*_gpu(x, w, scale, shift), slope)
    act = _activation(x, w, scale, shift, slope)
    assert argmax.dtype == torch.int64
    assert torch.equal(argmax.cpu(), _first_argmax(act))
    torch.testing.assert_close(act.gather(1, argmax.cpu().unsqueeze(1)).squeeze(1), out.cpu(), rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("slope", SLOPES)
def test_linear_max_ties_go_to_the_smallest_point_index(kind, slope):
    base, w, scale, shift = _linear_inputs(2, 6, 5, 40, dtype=torch.float64, seed=4)
    perm = torch.randperm(300, generator=torch.Generator().manual_seed(0))
    x = base.repeat(1, 50, 1)[:, perm]  # every point 50 times, shuffled, over several point tiles
    xg = _gpu(x).requires_grad_(True)
    out = linear_max(xg, *_gpu(w, scale, shift), slope, backend=kind)
    out.sum().backward()
    act = _activation(base, w, scale, shift, slope)[:, perm % 6]
    first = _first_argmax(act)
    # Only the first copy of each channel's maximizer gets a gradient.
    hit = xg.grad.abs().sum(-1).cpu() > 0
    assert torch.equal(hit, torch.zeros_like(hit).scatter_(1, first, True) & hit)
    assert hit.any()


def test_linear_max_gradients_match_reference(kind):
    x, w, scale, shift = _linear_inputs(3, 200, 24, 150, dtype=torch.float64, seed=2)
    for slope in SLOPES:
        _assert_grads_match(lambda *a: linear_max(*a, slope, backend=kind),
                            lambda *a: reference.linear_max(*a, slope), _gpu(x, w, scale, shift), 1e-10)


def test_linear_max_gradcheck(cuda_kernels):
    x, w, scale, shift = (t.requires_grad_() for t in _gpu(*_linear_inputs(2, 9, 4, 6, dtype=torch.float64, seed=3)))
    assert torch.autograd.gradcheck(lambda *a: linear_max(*a, 0.2, backend="cuda"), (x, w, scale, shift))


def test_linear_max_non_contiguous_and_deterministic(kind):
    x, w, scale, shift = _gpu(*_linear_inputs(4, 1100, 64, 300, seed=5))
    xt = x.transpose(1, 2).contiguous().transpose(1, 2)  # same values, (B, Cin, N) memory
    assert not xt.is_contiguous()
    assert torch.equal(linear_max(xt, w, scale, shift, backend=kind), linear_max(x, w, scale, shift, backend=kind))
    g = torch.randn(4, 300, generator=torch.Generator().manual_seed(6)).to(DEV)

    def run():
        leaves = [t.clone().requires_grad_(True) for t in (x, w, scale, shift)]
        out = linear_max(*leaves, 0.2, backend=kind)
        (out * g).sum().backward()
        return [out] + [t.grad for t in leaves]

    _twice(run)


def test_linear_max_direct_call_errors(cuda_kernels):
    x, w, scale, shift = _gpu(*_linear_inputs(2, 5, 3, 4))
    with pytest.raises(RuntimeError, match="must be a CUDA tensor"):
        cuda_kernels.linear_max_forward_cuda(x, w.cpu(), scale, shift, 0.0)
    with pytest.raises(RuntimeError, match="dtype of x"):
        cuda_kernels.linear_max_forward_cuda(x, w.double(), scale, shift, 0.0)
    g = torch.ones(2, 4, device=DEV)
    with pytest.raises(RuntimeError, match=r"outside \[0, 5\)"):
        cuda_kernels.linear_max_backward_cuda(g, x, w, scale, shift, torch.full((2, 4), 5, device=DEV), 0.0)


# --- group_gather, group_linear_max ----------------------------------------------------------


@pytest.mark.parametrize("C, dtype, index_dtype", [(1, torch.float32, torch.int64), (5, torch.float64, torch.int32),
                                                    (64, torch.float32, torch.int32), (70, torch.float64, torch.int64)])
def test_group_gather_matches_reference(kind, C, dtype, index_dtype):
    P, Q, idx, scale, shift = _gpu(*_group_inputs(2, 30, 9, 6, C, dtype=dtype, index_dtype=index_dtype, seed=C))
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    _assert_grads_match(lambda p, q: group_gather(p, q, idx, scale, shift, backend=kind),
                        lambda p, q: reference.group_gather(p, q, idx, scale, shift), (P, Q), tol)


def test_group_gather_padding_repeats_accumulate(kind):
    # Every ReLU open and grad_out = 1: grad_P[j] = scale * (how often j was gathered), grad_Q = -K * scale.
    B, N, S, K, C = 2, 6, 4, 8, 5
    P, Q, _, _, _ = _group_inputs(B, N, S, K, C)
    scale = torch.tensor([1.5, -0.75, 2.0, -1.25, 0.5], dtype=torch.float64)
    idx = torch.randint(0, N, (B, S, 1), generator=torch.Generator().manual_seed(3)).repeat(1, 1, K)
    idx[:, :, :2] = torch.tensor([4, 1])
    p, q = _gpu(P).requires_grad_(True), _gpu(Q).requires_grad_(True)
    group_gather(p, q, _gpu(idx), _gpu(scale), _gpu(torch.full((C,), 100.0, dtype=torch.float64)),
                 backend=kind).sum().backward()
    counts = torch.stack([torch.bincount(idx[b].reshape(-1), minlength=N) for b in range(B)]).double()
    assert torch.equal(p.grad.cpu(), counts.unsqueeze(-1) * scale)
    assert torch.equal(q.grad.cpu(), (-K * scale).expand(B, S, C))


def test_group_gather_gradcheck(cuda_kernels):
    P, Q, idx, scale, shift = _gpu(*_group_inputs(2, 5, 3, 4, 6, seed=8))
    P, Q = P.requires_grad_(True), Q.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p, q: group_gather(p, q, idx, scale, shift, backend="cuda"), (P, Q))


@pytest.mark.parametrize("B, N, S, K", [(1, 1, 1, 1), (1, 9, 1, 4), (2, 9, 5, 1)])
def test_group_gather_edge_sizes(kind, B, N, S, K):
    P, Q, idx, scale, shift = _gpu(*_group_inputs(B, N, S, K, 7, seed=K))
    _assert_grads_match(lambda p, q: group_gather(p, q, idx, scale, shift, backend=kind),
                        lambda p, q: reference.group_gather(p, q, idx, scale, shift), (P, Q), 1e-12)


def test_group_gather_non_contiguous_inputs(kind):
    g = torch.Generator().manual_seed(6)
    P = _gpu(torch.randn(2, 11, 20, generator=g, dtype=torch.float64)).transpose(1, 2)
    Q = _gpu(torch.randn(2, 11, 8, generator=g, dtype=torch.float64)).transpose(1, 2)
    idx = _gpu(torch.randint(0, 20, (2, 5, 8), generator=g)).transpose(1, 2)
    scale = _gpu(torch.randn(22, generator=g, dtype=torch.float64))[::2]
    shift = _gpu(torch.randn(11, generator=g, dtype=torch.float64))
    _assert_grads_match(lambda p, q: group_gather(p, q, idx, scale, shift, backend=kind),
                        lambda p, q: reference.group_gather(p, q, idx, scale, shift), (P, Q), 1e-12)


@pytest.mark.skipif(not backend.has_cpu_kernels(), reason="flowam_fast._C is not built")
def test_group_gather_deterministic_and_backward_equals_the_cpu_kernels(kind):
    # Few points gathered by many entries: each grad_P element sums hundreds of terms.
    inputs = _group_inputs(3, 12, 200, 16, 96, dtype=torch.float32, seed=9)
    P, Q, idx, scale, shift = _gpu(*inputs)
    g = _gpu(torch.randn(3, 200, 16, 96, generator=torch.Generator().manual_seed(10)))

    def run():
        p, q = P.clone().requires_grad_(True), Q.clone().requires_grad_(True)
        out = group_gather(p, q, idx, scale, shift, backend=kind)
        (out * g).sum().backward()
        return out.detach(), p.grad, q.grad

    _twice(run)
    out, grad_P, grad_Q = run()
    # The backward's terms are copies of grad_out, summed in entry order everywhere.
    want = backend.extension().group_gather_backward_cpu(g.cpu(), out.cpu(), inputs[2], inputs[3], 12)
    assert torch.equal(grad_P.cpu(), want[0]) and torch.equal(grad_Q.cpu(), want[1])


def test_group_gather_direct_call_errors(cuda_kernels):
    P, Q, idx, scale, shift = _gpu(*_group_inputs(1, 10, 3, 2, 4, dtype=torch.float32, seed=11))
    for args, match in [
        ((P.cpu(), Q, idx, scale, shift), "must be a CUDA tensor"),
        ((P, Q, idx.cpu(), scale, shift), "must be a CUDA tensor"),
        ((P, Q.double(), idx, scale, shift), "Q must have the dtype of P"),
        ((P, Q, torch.full_like(idx, 10), scale, shift), r"outside \[0, 10\)"),
    ]:
        with pytest.raises(RuntimeError, match=match):
            cuda_kernels.group_gather_forward_cuda(*args)
    g = torch.ones(1, 3, 2, 4, device=DEV)
    with pytest.raises(RuntimeError, match=r"outside \[0, 5\)"):
        cuda_kernels.group_gather_backward_cuda(g, g, torch.full_like(idx, 5), scale, 5)


# PointNet++'s shapes, scaled down: many groups of K points, as SA1 and SA2 make.
@pytest.mark.parametrize("shape", [(2, 64, 32, 64, 128), (2, 16, 64, 128, 256)])
def test_group_linear_max_matches_dense_reference(kind, shape, no_tf32):
    x, w, scale, shift = _gpu(*_grouped(*shape, dtype=torch.float32, seed=shape[2]))
    _assert_grads_match(lambda a: group_linear_max(a, w, scale, shift, backend=kind),
                        lambda a: reference.group_linear_max(a, w, scale, shift), (x,), 1e-4)


# --- flow_stats, flow_align ----------------------------------------------------------------


def _layouts(acts):
    """acts (B,C,N) as itself and as the (B,C,N) view of points-last memory."""
    return {"channels-first": acts, "points-last": acts.transpose(1, 2).contiguous().transpose(1, 2)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B, C, N", [(7, 5, 33), (1, 3, 1), (4, 64, 1000), (3, 100, 7)])
def test_flow_stats_both_layouts(kind, dtype, B, C, N):
    acts = _acts(B, C, N, dtype)
    labels = torch.tensor([0, 3, 0, 1, 3, 3, 0][:B])
    want = _direct_stats(acts, labels, 5)
    for name, a in _layouts(_gpu(acts)).items():
        got = flow_stats(a, _gpu(labels), 5, backend=kind)
        assert got.count.dtype == torch.int64 and got.mean.dtype == got.m2.dtype == torch.float64, name
        _assert_stats_close(tuple(t.cpu() for t in got), want, rtol=1e-10)


def test_flow_stats_precise_with_a_large_mean_and_deterministic(kind):
    acts = _acts(6, 8, 2000, torch.float64, seed=3, offset=1e4)
    labels = torch.tensor([1, 0, 1, 1, 0, 2])
    got = flow_stats(_gpu(acts), _gpu(labels), 3, backend=kind)
    _assert_stats_close(tuple(t.cpu() for t in got), _direct_stats(acts, labels, 3), rtol=1e-9)
    _twice(lambda: flow_stats(_gpu(acts), _gpu(labels), 3, backend=kind))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B, C, N", [(3, 6, 40), (2, 130, 1030), (1, 1, 1)])
def test_flow_align_matches_reference_both_layouts(kind, dtype, B, C, N):
    acts = _acts(B, C, N, dtype, seed=8)
    labels = torch.tensor([1, 0, 1][:B])
    mu, sigma = _flow(2, C)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    for a in _layouts(_gpu(acts)).values():
        _assert_grads_match(lambda t: flow_align(t, _gpu(labels), *_gpu(mu, sigma), backend=kind),
                            lambda t: reference.flow_align(t, _gpu(labels), *_gpu(mu, sigma)), (a,), tol)


def test_flow_align_gradcheck_both_layouts(cuda_kernels):
    labels = _gpu(torch.tensor([1, 0, 1]))
    mu, sigma = _gpu(*_flow(2, 4))
    base = _gpu(_acts(3, 4, 6, torch.float64, seed=13))
    assert torch.autograd.gradcheck(lambda a: flow_align(a, labels, mu, sigma, backend="cuda"),
                                    (base.clone().requires_grad_(True),))
    points_last = base.transpose(1, 2).contiguous().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: flow_align(a.transpose(1, 2), labels, mu, sigma, backend="cuda"),
                                    (points_last,))


def test_flow_align_deterministic(kind):
    acts = _gpu(_acts(6, 30, 1000, seed=10))
    labels = _gpu(torch.tensor([0, 1, 0, 1, 1, 0]))
    mu, sigma = _gpu(*_flow(2, 30))
    for a0 in _layouts(acts).values():
        def run():
            a = a0.detach().clone().requires_grad_(True)
            loss = flow_align(a, labels, mu, sigma, backend=kind)
            loss.sum().backward()
            return loss.detach(), a.grad

        _twice(run)


def test_flow_direct_call_errors(cuda_kernels):
    acts, labels = _gpu(torch.randn(2, 4, 6)), _gpu(torch.tensor([0, 2]))
    with pytest.raises(RuntimeError, match=r"label 3 is outside \[0, 3\)"):
        cuda_kernels.flow_stats_cuda(acts, _gpu(torch.tensor([0, 3])), 3)
    with pytest.raises(RuntimeError, match="must be a CUDA tensor"):
        cuda_kernels.flow_stats_cuda(acts, labels.cpu(), 3)
    with pytest.raises(RuntimeError, match="mu has 4 channels but acts has 6"):
        cuda_kernels.flow_align_forward_cuda(acts, labels, *_gpu(torch.zeros(3, 4), torch.ones(3, 4)), True)


def test_cuda_kernels_run_in_torch_deterministic_mode(cuda_kernels):
    """They never scatter with float atomics, so torch's deterministic mode has nothing to refuse."""
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        x = _gpu(_points((2, 100, 3), seed=20)).requires_grad_(True)
        knn(x, 8, backend="cuda")[0].sum().backward()
        feat, idx = _gpu(*_edge_inputs(2, 30, 30, 5, 16, seed=21))
        f = feat.requires_grad_(True)
        edge_max(f, idx, backend="cuda").sum().backward()
        xl, w, scale, shift = _gpu(*_linear_inputs(2, 50, 8, 20, seed=22))
        xl.requires_grad_(True)
        linear_max(xl, w, scale, shift, backend="cuda").sum().backward()
        a = _gpu(_acts(3, 6, 40, seed=23)).requires_grad_(True)
        flow_align(a, _gpu(torch.tensor([0, 1, 0])), *_gpu(*_flow(2, 6)), backend="cuda").sum().backward()
        flow_stats(a.detach(), _gpu(torch.tensor([0, 1, 0])), 2, backend="cuda")
        assert all(t.grad is not None for t in (x, f, xl, a))
    finally:
        torch.use_deterministic_algorithms(was)


# --- farthest point sampling and ball query ------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fps_matches_reference(kind, dtype):
    # Several points per thread and per tile; the choice must be the CPU reference's, bit for bit.
    x = _cloud(4, 1500, seed=1, dtype=dtype)
    idx = farthest_point_sample(_gpu(x), 300, backend=kind)
    assert idx.dtype == torch.int64 and idx.shape == (4, 300)
    assert torch.equal(idx.cpu(), reference.farthest_point_sample(x, 300))


def test_fps_ties_duplicates_and_sizes(kind):
    g = torch.arange(3.0)
    grid = torch.cartesian_prod(g, g, g).unsqueeze(0)  # symmetric: ties at every step
    dup = _points((2, 300, 3), seed=2, grid=2)  # 8 distinct points: point 0 repeats once exhausted
    for x, s in ((grid, 27), (dup, 40), (_points((1, 1, 3), seed=3), 1), (_points((1, 70, 3), seed=4), 70)):
        idx = farthest_point_sample(_gpu(x), s, backend=kind).cpu()
        _assert_farthest(x, idx)
        assert torch.equal(idx, reference.farthest_point_sample(x, s))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("radius, k", [(0.1, 1), (0.2, 32), (0.4, 64), (0.3, 200)])
def test_ball_query_matches_reference(kind, dtype, radius, k):
    # FPS centroids (no empty ball) and random ones (some empty); full and padded groups.
    x = _cloud(3, 1200, seed=5, dtype=dtype)
    for c in (_gather(x, reference.farthest_point_sample(x, 250)), 1.1 * _cloud(3, 250, seed=6, dtype=dtype)):
        idx = ball_query(*_gpu(x, c), radius, k, backend=kind)
        assert idx.dtype == torch.int64 and idx.shape == (3, 250, k)
        assert torch.equal(idx.cpu(), reference.ball_query(x, c, radius, k))


def test_ball_query_on_the_radius_padding_and_empty_balls(kind):
    x = _points((2, 300, 3), seed=7, grid=9) / 2  # d2 exact: many points exactly on the sphere
    c = torch.cat([_gather(x, torch.arange(0, 300, 5).expand(2, -1)), x[:, :10] + 40], dim=1)  # 10 empty balls
    for radius, k in ((1.0, 16), (2.0 ** 0.5, 40), (1.5, 400)):
        idx = ball_query(*_gpu(x, c), radius, k, backend=kind).cpu()
        _assert_groups(x, c, radius, k, idx)
        assert torch.equal(idx, reference.ball_query(x, c, radius, k))
    one = _points((1, 1, 3), seed=8)
    assert ball_query(*_gpu(one, one + 3), 0.5, 4, backend=kind).tolist() == [[[0, 0, 0, 0]]]


def test_fps_ball_query_non_contiguous_and_deterministic(kind):
    x = _gpu(_cloud(2, 600, seed=9)).transpose(1, 2).contiguous().transpose(1, 2)
    assert not x.is_contiguous()
    idx = farthest_point_sample(x, 100, backend=kind)
    assert torch.equal(idx, farthest_point_sample(x.contiguous(), 100, backend=kind))
    c = _gather(x, idx)[:, ::2]
    assert torch.equal(ball_query(x, c, 0.3, 24, backend=kind), ball_query(x.contiguous(), c.contiguous(), 0.3, 24,
                                                                          backend=kind))
    _twice(lambda: (farthest_point_sample(x, 100, backend=kind), ball_query(x, c, 0.3, 24, backend=kind)))


def test_fps_ball_query_direct_call_errors(cuda_kernels):
    x, c = _gpu(_cloud(1, 10, seed=10)), _gpu(_cloud(1, 4, seed=11))
    for args, match in [((x.cpu(), 2), "CUDA tensor"), ((x, 11), r"num_samples must be in \[1, 10\]"),
                        ((x.half(), 2), "float32 or float64"), ((x.transpose(1, 2), 2), r"shape \(B, N, 3\)")]:
        with pytest.raises(RuntimeError, match=match):
            cuda_kernels.farthest_point_sample_cuda(*args)
    for args, match in [((x, c.cpu(), 0.5, 2), "CUDA tensor"), ((x, c.double(), 0.5, 2), "dtypes differ"),
                        ((x, c, -1.0, 2), "radius must be positive"), ((x, c, 0.5, 0), "nsample must be at least 1")]:
        with pytest.raises(RuntimeError, match=match):
            cuda_kernels.ball_query_cuda(*args)


# --- the models' fast paths on the GPU ------------------------------------------------------


@pytest.fixture
def forced_backend(monkeypatch, kind):
    """The models' fused ops on `kind` (they ask for "auto", which picks cuda first)."""
    from flowam_fast import ops

    for name in ("knn", "edge_max", "linear_max", "flow_align"):
        orig = getattr(ops, name)
        monkeypatch.setattr(ops, name, lambda *a, _o=orig, **k: _o(*a, **{**k, "backend": kind}))
    return kind


@pytest.mark.parametrize("layers", [None, PointNet.flow_layers])
def test_pointnet_fast_path_equals_plain_path(forced_backend, no_tf32, layers):
    _fast_vs_plain(randomize(PointNet(6, width=0.5)).to(DEV), torch.randn(3, 3, 128).to(DEV), layers)


@pytest.mark.parametrize("layers", [None, DGCNN.flow_layers])
def test_dgcnn_fast_path_equals_plain_path(forced_backend, no_tf32, layers):
    # The CPU test's sizes: in float32 the plain path's kNN (matmul + topk) may order a near-tie
    # at the k-th neighbour differently, which moves a whole EdgeConv max; few points, few ties.
    _fast_vs_plain(randomize(DGCNN(6, k=10, emb_dims=128, width=0.5)).to(DEV), torch.randn(2, 3, 96).to(DEV),
                   layers)


@pytest.mark.parametrize("arch", ["pointnet", "dgcnn"])
def test_fast_path_is_deterministic(forced_backend, arch):
    model = randomize(PointNet(6, width=0.5) if arch == "pointnet" else DGCNN(6, k=10, emb_dims=128, width=0.5))
    model = model.to(DEV)
    x = torch.randn(4, 3, 500, generator=torch.Generator().manual_seed(1)).to(DEV)

    def run():
        xx = x.clone().requires_grad_(True)
        logits = model(xx)
        logits[:, 1].sum().backward()
        return logits.detach(), xx.grad

    assert model.fast_path
    _twice(run)
    with plain_path(model):
        assert not model.fast_path
