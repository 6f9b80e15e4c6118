"""Gather-max over neighbours (C++ CPU) against the reference, its scatter gradient, ties,
determinism, and input validation."""
import pytest
import torch

from flowam_fast.ops import reference
from flowam_fast.ops.backend import has_cpu_kernels
from flowam_fast.ops.edge_max import edge_max

pytestmark = pytest.mark.skipif(not has_cpu_kernels(), reason="flowam_fast._C is not built")


def _C():
    from flowam_fast import _C

    return _C


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


# Channel counts cover whole 4-vector chunks, single vectors and the scalar tail.
@pytest.mark.parametrize("c", [1, 5, 16, 64, 70, 256])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("index_dtype", [torch.int64, torch.int32])
def test_matches_reference(c, dtype, index_dtype):
    feat, idx = _inputs(2, 40, 30, 6, c, seed=c, dtype=dtype, index_dtype=index_dtype)
    out = edge_max(feat, idx, backend="cpu")
    assert out.dtype == dtype and out.shape == (2, 30, c)
    assert torch.equal(out, reference.edge_max(feat, idx))


@pytest.mark.parametrize("c", [3, 64, 70])
def test_argmax_is_first_maximal_neighbour(c):
    feat, idx = _inputs(2, 20, 25, 8, c, seed=1, levels=3)
    out, argmax = _C().edge_max_forward_cpu(feat, idx)
    assert argmax.dtype == torch.int64
    assert torch.equal(argmax, _first_argmax(feat, idx))
    assert torch.equal(torch.gather(feat, 1, argmax), out)


@pytest.mark.parametrize("k", [1, 2, 20])
def test_k_and_batch_edge_cases(k):
    feat, idx = _inputs(1, 20, 7, k, 33, seed=k)
    out = edge_max(feat, idx, backend="cpu")
    assert torch.equal(out, reference.edge_max(feat, idx))
    if k == 1:
        assert torch.equal(out, torch.gather(feat, 1, idx.expand(1, 7, 33)))


def test_non_contiguous_feat():
    g = torch.Generator().manual_seed(3)
    feat = torch.randn(2, 64, 50, generator=g).transpose(1, 2)  # (B, N, C) view of (B, C, N)
    idx = torch.randint(0, 50, (2, 50, 9), generator=g)
    assert not feat.is_contiguous()
    assert torch.equal(edge_max(feat, idx, backend="cpu"), reference.edge_max(feat, idx))
    idx_nc = torch.randint(0, 50, (2, 9, 50), generator=g).transpose(1, 2)
    assert torch.equal(edge_max(feat, idx_nc, backend="cpu"), reference.edge_max(feat, idx_nc))


def test_gradient_matches_reference():
    feat, idx = _inputs(2, 30, 30, 7, 70, seed=4, dtype=torch.float64)
    g = torch.randn(2, 30, 70, dtype=torch.float64)
    f1 = feat.clone().requires_grad_()
    (edge_max(f1, idx, backend="cpu") * g).sum().backward()
    f2 = feat.clone().requires_grad_()
    (reference.edge_max(f2, idx) * g).sum().backward()
    torch.testing.assert_close(f1.grad, f2.grad, rtol=1e-12, atol=1e-12)


def test_gradcheck():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # hundreds of tiny calls: no thread start-up each time
    try:
        _gradcheck()
    finally:
        torch.set_num_threads(n)


def _gradcheck():
    feat, idx = _inputs(2, 12, 10, 4, 19, seed=5, dtype=torch.float64)
    feat.requires_grad_()
    assert torch.autograd.gradcheck(lambda f: edge_max(f, idx, backend="cpu"), (feat,))


def test_ties_send_gradient_to_first_neighbour():
    idx = torch.tensor([[[3, 1, 3, 0], [2, 2, 1, 0]]])
    feat = torch.ones(1, 4, 5, requires_grad=True)
    edge_max(feat, idx, backend="cpu").sum().backward()
    expected = torch.zeros(1, 4, 5)
    expected[0, 3] = 1.0
    expected[0, 2] = 1.0
    assert torch.equal(feat.grad, expected)


def test_deterministic():
    # Few points and many repeated neighbours: each gradient element sums many contributions.
    feat, idx = _inputs(3, 16, 300, 12, 96, seed=6)
    g = torch.randn(3, 300, 96)
    runs = []
    for _ in range(2):
        f = feat.clone().requires_grad_()
        out = edge_max(f, idx, backend="cpu")
        (out * g).sum().backward()
        runs.append((out, f.grad))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_backward_kernel_matches_scatter_add():
    feat, idx = _inputs(2, 10, 40, 5, 37, seed=7)
    _, argmax = _C().edge_max_forward_cpu(feat, idx)
    g = torch.randn(2, 40, 37, dtype=torch.float64)
    got = _C().edge_max_backward_cpu(g, argmax, 10)
    want = torch.zeros(2, 10, 37, dtype=torch.float64).scatter_add_(1, argmax, g)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


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
        (torch.empty(1, 10, 4, device="meta"), torch.zeros(1, 10, 2, dtype=torch.long), "CPU tensors"),
    ],
)
def test_direct_forward_errors(feat, idx, match):
    with pytest.raises(RuntimeError, match=match):
        _C().edge_max_forward_cpu(feat, idx)


def test_direct_backward_errors():
    g = torch.randn(1, 6, 4)
    good = torch.zeros(1, 6, 4, dtype=torch.long)
    _C().edge_max_backward_cpu(g, good, 3)  # the valid call works
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
            _C().edge_max_backward_cpu(*args)
