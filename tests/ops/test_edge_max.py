"""Gather-max over neighbours on every kernel backend against the reference, its scatter
gradient, ties, determinism, and input validation."""
import pytest
import torch

from flowam_fast.ops import library, reference
from flowam_fast.ops.backend import has_cpu_kernels
from flowam_fast.ops.edge_max import edge_max

from tests.ops.backends import CPP_BACKENDS, case_id, cases, each_backend
from tests.ops.grads import assert_grads_match, twice

pytestmark = pytest.mark.skipif(not has_cpu_kernels(), reason="flowam_fast._C is not built")


def _inputs(b, n, m, k, c, seed, dtype=torch.float32, index_dtype=torch.int64, levels=None):
    g = torch.Generator().manual_seed(seed)
    if levels is None:
        feat = torch.randn(b, n, c, generator=g, dtype=torch.float64).to(dtype)
    else:  # few distinct values: many ties between neighbours
        feat = torch.randint(0, levels, (b, n, c), generator=g).to(dtype)
    idx = torch.randint(0, n, (b, m, k), generator=g).to(index_dtype)
    return feat, idx


def _first_argmax(feat, idx):
    """The point index of the maximum, the first neighbour in idx order among equal values."""
    b, m, k = idx.shape
    c = feat.shape[-1]
    gathered = torch.gather(feat.unsqueeze(1).expand(b, m, feat.shape[1], c), 2,
                            idx.long().unsqueeze(-1).expand(b, m, k, c))
    slot = gathered.argmax(dim=2)  # torch documents: the first maximal value
    return torch.gather(idx.long(), 2, slot)


def _reference_cases(on):
    """Channel counts that cover whole 4-vector chunks, single vectors and the scalar tail of
    the C++ kernels; both float and both index dtypes."""
    if on.interpreted:
        return [(1, torch.float32, torch.int64), (5, torch.float64, torch.int32), (70, torch.float32, torch.int32)]
    return [(c, dtype, index_dtype) for c in (1, 5, 16, 64, 70, 256) for dtype in (torch.float32, torch.float64)
            for index_dtype in (torch.int64, torch.int32)]


@pytest.mark.parametrize("on, c, dtype, index_dtype", cases(_reference_cases))
def test_matches_reference(on, c, dtype, index_dtype):
    feat, idx = _inputs(2, 40, 30, 6, c, seed=c, dtype=dtype, index_dtype=index_dtype)
    out = edge_max(*on(feat, idx), backend=on.backend)
    assert out.dtype == dtype and out.shape == (2, 30, c)
    assert torch.equal(out.cpu(), reference.edge_max(feat, idx))


@each_backend
@pytest.mark.parametrize("c", [3, 64, 70])
def test_argmax_is_first_maximal_neighbour(on, c):
    feat, idx = _inputs(2, 20, 25, 8, c, seed=1, levels=3)
    out, argmax = library.kernel(on.backend, "edge_max_forward")(*on(feat, idx))
    assert argmax.dtype == torch.int64
    assert torch.equal(argmax.cpu(), _first_argmax(feat, idx))
    assert torch.equal(torch.gather(feat, 1, argmax.cpu()), out.cpu())


@each_backend
@pytest.mark.parametrize("k", [1, 2, 20])
def test_k_and_batch_edge_cases(on, k):
    feat, idx = _inputs(1, 20, 7, k, 33, seed=k)
    out = edge_max(*on(feat, idx), backend=on.backend).cpu()
    assert torch.equal(out, reference.edge_max(feat, idx))
    if k == 1:
        assert torch.equal(out, torch.gather(feat, 1, idx.expand(1, 7, 33)))


@each_backend
def test_non_contiguous_inputs(on):
    g = torch.Generator().manual_seed(3)
    feat = on(torch.randn(2, 64, 50, generator=g)).transpose(1, 2)  # (B, N, C) view of (B, C, N)
    idx = on(torch.randint(0, 50, (2, 50, 9), generator=g))
    assert not feat.is_contiguous()
    assert torch.equal(edge_max(feat, idx, backend=on.backend), reference.edge_max(feat, idx))
    idx_nc = on(torch.randint(0, 50, (2, 9, 50), generator=g)).transpose(1, 2)
    assert torch.equal(edge_max(feat, idx_nc, backend=on.backend), reference.edge_max(feat, idx_nc))


@each_backend
def test_gradient_matches_reference_and_ties_go_first(on):
    # Few points and many rows: each point is the argmax of many (row, channel) pairs.
    feat, idx = _inputs(2, on.size(30, 10), on.size(30, 60), 7, 70, seed=4, dtype=torch.float64)
    idx = on(idx)
    assert_grads_match(lambda f: edge_max(f, idx, backend=on.backend), lambda f: reference.edge_max(f, idx),
                       (on(feat),), 1e-12)
    # Equal values: the gradient reaches the first maximal neighbour in idx order only.
    feat, idx = _inputs(1, 12, 20, 6, 9, seed=5, levels=2)
    f = on(feat).requires_grad_(True)
    edge_max(f, on(idx), backend=on.backend).sum().backward()
    want = torch.zeros(1, 12, 9).scatter_add_(1, _first_argmax(feat, idx), torch.ones(1, 20, 9))
    assert torch.equal(f.grad.cpu(), want)


@pytest.mark.parametrize("on", CPP_BACKENDS, ids=case_id)
def test_gradcheck(on):
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # hundreds of tiny calls: no thread start-up each time
    try:
        feat, idx = _inputs(2, 12, 10, 4, 19, seed=5, dtype=torch.float64)
        f = on(feat).requires_grad_()
        assert torch.autograd.gradcheck(lambda a: edge_max(a, on(idx), backend=on.backend), (f,))
    finally:
        torch.set_num_threads(n)


@each_backend
def test_ties_send_gradient_to_first_neighbour(on):
    idx = on(torch.tensor([[[3, 1, 3, 0], [2, 2, 1, 0]]]))
    feat = on(torch.ones(1, 4, 5)).requires_grad_()
    edge_max(feat, idx, backend=on.backend).sum().backward()
    expected = torch.zeros(1, 4, 5)
    expected[0, 3] = 1.0
    expected[0, 2] = 1.0
    assert torch.equal(feat.grad.cpu(), expected)


@each_backend
def test_deterministic(on):
    # Few values and a small graph: many ties and many gradients sent to each point.
    feat, idx = on(*_inputs(2, on.size(50, 10), on.size(400, 60), on.size(20, 7), 64, seed=9, levels=3))
    g = on(torch.randn(*idx.shape[:2], 64, generator=torch.Generator().manual_seed(10)))

    def run():
        f = feat.clone().requires_grad_(True)
        out = edge_max(f, idx, backend=on.backend)
        (out * g).sum().backward()
        return out, f.grad

    twice(run)


@pytest.mark.parametrize("on", CPP_BACKENDS, ids=case_id)
def test_backward_kernel_matches_scatter_add(on):
    feat, idx = _inputs(2, 10, 40, 5, 37, seed=7)
    _, argmax = library.kernel(on.backend, "edge_max_forward")(*on(feat, idx))
    g = torch.randn(2, 40, 37, dtype=torch.float64)
    got = library.kernel(on.backend, "edge_max_backward")(on(g), argmax, 10)
    want = torch.zeros(2, 10, 37, dtype=torch.float64).scatter_add_(1, argmax.cpu(), g)
    torch.testing.assert_close(got.cpu(), want, rtol=1e-12, atol=1e-12)


def test_backend_torch_and_auto():
    feat, idx = _inputs(1, 10, 10, 3, 8, seed=8)
    assert torch.equal(edge_max(feat, idx), edge_max(feat, idx, backend="torch"))
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        edge_max(feat, idx, backend="cuda")


# --- validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "feat, idx, exc, match",
    [
        (torch.randn(10, 4), torch.zeros(1, 10, 2, dtype=torch.long), ValueError, "feat must have 3"),
        (torch.randint(0, 3, (1, 10, 4)), torch.zeros(1, 10, 2, dtype=torch.long), TypeError, "floating point"),
        (torch.full((1, 10, 4), float("nan")), torch.zeros(1, 10, 2, dtype=torch.long), ValueError, "NaN"),
        (torch.randn(1, 10, 4), torch.zeros(1, 10, 2), TypeError, "int32 or int64"),
        (torch.randn(1, 10, 4), torch.zeros(10, 2, dtype=torch.long), ValueError, "idx must have 3"),
        (torch.randn(1, 10, 4), torch.full((1, 10, 2), 10, dtype=torch.long), ValueError, r"outside \[0, 10\)"),
        (torch.randn(1, 10, 4), torch.full((1, 10, 2), -1, dtype=torch.long), ValueError, r"outside \[0, 10\)"),
        (torch.randn(1, 10, 4), torch.zeros(2, 10, 2, dtype=torch.long), ValueError, "batch sizes"),
        (torch.randn(1, 10, 4), torch.zeros(1, 10, 0, dtype=torch.long), ValueError, "at least one neighbour"),
    ],
)
def test_front_end_errors(feat, idx, exc, match):
    with pytest.raises(exc, match=match):
        edge_max(feat, idx, backend="cpu")


@pytest.mark.parametrize("on", CPP_BACKENDS, ids=case_id)
@pytest.mark.parametrize(
    "feat, idx, match",
    [
        (torch.randn(10, 4), torch.zeros(1, 10, 2, dtype=torch.long), "feat must have 3"),
        (torch.randn(1, 10, 4), torch.zeros(10, 2, dtype=torch.long), "idx must have 3"),
        (torch.randint(0, 3, (1, 10, 4)), torch.zeros(1, 10, 2, dtype=torch.long), "float32 or float64"),
        (torch.randn(1, 10, 4), torch.zeros(1, 10, 2), "int64 or int32"),
        (torch.randn(1, 10, 4), torch.full((1, 10, 2), 10, dtype=torch.long), r"outside \[0, 10\)"),
        (torch.randn(1, 10, 4), torch.full((1, 10, 2), -5, dtype=torch.int32), r"outside \[0, 10\)"),
        (torch.randn(1, 10, 4), torch.zeros(2, 10, 2, dtype=torch.long), "batch sizes"),
        (torch.randn(1, 10, 4), torch.zeros(1, 10, 0, dtype=torch.long), "k >= 1"),
        (torch.randn(1, 4, 10).transpose(1, 2), torch.zeros(1, 10, 2, dtype=torch.long), "contiguous"),
    ],
)
def test_direct_forward_errors(on, feat, idx, match):
    with pytest.raises(RuntimeError, match=match):
        library.kernel(on.backend, "edge_max_forward")(*on(feat, idx))


@pytest.mark.parametrize("on", CPP_BACKENDS, ids=case_id)
def test_direct_backward_errors(on):
    g = torch.randn(1, 6, 4)
    good = torch.zeros(1, 6, 4, dtype=torch.long)
    backward = library.kernel(on.backend, "edge_max_backward")
    backward(*on(g, good, 3))  # the valid call works
    cases = [
        ((g, torch.full((1, 6, 4), 3, dtype=torch.long), 3), r"outside \[0, 3\)"),
        ((g, torch.full((1, 6, 4), -1, dtype=torch.long), 3), r"outside \[0, 3\)"),
        ((g, good, 0), "num_points must be >= 1"),
        ((g, good.int(), 3), "int64"),
        ((g, torch.zeros(1, 6, 5, dtype=torch.long), 3), "differs from grad_out shape"),
        ((g.int(), good, 3), "float32 or float64"),
        ((g[0], good[0], 3), "3 dimensions"),
        ((torch.randn(1, 4, 6).transpose(1, 2), good, 3), "contiguous"),
    ]
    for args, match in cases:
        with pytest.raises(RuntimeError, match=match):
            backward(*on(*args))
