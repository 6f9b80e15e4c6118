"""GPU tests (marker `cuda`) of what the per-op test modules do not run on every device: the
CUDA and Triton kernels of the PointNet++ ops (group_gather, group_linear_max, farthest point
sampling, the ball query), called through the public front ends, against the pure-PyTorch
reference on CUDA tensors, with the CPU tests' adversarial cases; torch's deterministic mode;
direct calls that must fail cleanly; and the models' fast paths against their plain path on the
GPU. knn, edge_max, linear_max and the flow ops run each property on every backend of every
device in their own modules (tests/ops/backends.py).

Skipped without a GPU; the "cuda" cases also without CUDA kernels in flowam_fast._C, the
"triton" ones without triton. On a GPU machine: `pytest -m cuda tests`.
"""
import pytest
import torch

from flowam_fast.models import DGCNN, PointNet, plain_path
from flowam_fast.ops import (backend, ball_query, edge_max, farthest_point_sample, flow_align, flow_stats,
                              group_gather, group_linear_max, knn, library, linear_max, reference)

from tests.helpers import randomize
from tests.models.test_fast_paths import _fast_vs_plain
from tests.ops.test_edge_max import _inputs as _edge_inputs
from tests.ops.test_flow import _acts, _flow
from tests.ops.test_fps_ball_query import _assert_farthest, _assert_groups, _cloud, _gather
from tests.ops.test_group_gather import _grouped
from tests.ops.test_group_gather import _inputs as _group_inputs
from tests.ops.test_knn import _points
from tests.ops.grads import assert_grads_match as _assert_grads_match
from tests.ops.grads import twice as _twice
from tests.ops.test_linear_max import _inputs as _linear_inputs

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
    want = library.kernel("cpu", "group_gather_backward")(g.cpu(), out.cpu(), inputs[2], inputs[3], 12)
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
            library.kernel("cuda", "group_gather_forward")(*args)
    g = torch.ones(1, 3, 2, 4, device=DEV)
    with pytest.raises(RuntimeError, match=r"outside \[0, 5\)"):
        library.kernel("cuda", "group_gather_backward")(g, g, torch.full_like(idx, 5), scale, 5)


# PointNet++'s shapes, scaled down: many groups of K points, as SA1 and SA2 make.
@pytest.mark.parametrize("shape", [(2, 64, 32, 64, 128), (2, 16, 64, 128, 256)])
def test_group_linear_max_matches_dense_reference(kind, shape, no_tf32):
    x, w, scale, shift = _gpu(*_grouped(*shape, dtype=torch.float32, seed=shape[2]))
    _assert_grads_match(lambda a: group_linear_max(a, w, scale, shift, backend=kind),
                        lambda a: reference.group_linear_max(a, w, scale, shift), (x,), 1e-4)


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
    for args, match in [((x, 11), r"num_samples must be in \[1, 10\]"),
                        ((x.half(), 2), "float32 or float64"), ((x.transpose(1, 2), 2), r"shape \(B, N, 3\)")]:
        with pytest.raises(RuntimeError, match=match):
            library.kernel("cuda", "farthest_point_sample")(*args)
    for args, match in [((x, c.cpu(), 0.5, 2), "CUDA tensor"), ((x, c.double(), 0.5, 2), "dtypes differ"),
                        ((x, c, -1.0, 2), "radius must be positive"), ((x, c, 0.5, 0), "nsample must be at least 1")]:
        with pytest.raises(RuntimeError, match=match):
            library.kernel("cuda", "ball_query")(*args)


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
