"""Fused kNN on every kernel backend against the reference, its gradient, properties, and input
validation."""
import contextlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowam_fast.ops import backend, knn, library, reference

from tests.ops.backends import CPP_BACKENDS, case_id, cases, each_backend
from tests.ops.grads import assert_grads_match, twice

pytestmark = pytest.mark.skipif(not backend.has_cpu_kernels(), reason="flowam_fast._C is not built")


@contextlib.contextmanager
def _single_thread():
    """For tests of many tiny calls: one thread keeps them free of thread start-up (and of
    stalls when the machine is busy). The other tests run on the threads conftest sets."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture
def one_thread():
    with _single_thread():
        yield


def _points(shape, seed, dtype=torch.float32, grid=None):
    g = torch.Generator().manual_seed(seed)
    if grid is not None:  # integer coordinates: duplicates and exact ties, exact in any summation order
        return torch.randint(0, grid, shape, generator=g).to(dtype)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)


def _truth(query, ref):
    """Exact squared distances in float64 and the full (dist, index) order."""
    d = (query.double().unsqueeze(2) - ref.double().unsqueeze(1)).pow(2).sum(-1)
    d_sorted, order = torch.sort(d, dim=-1, stable=True)
    return d, d_sorted, order


def _assert_matches_truth(dist2, idx, query, ref, k, tol):
    """dist2 equals the true k smallest distances; each index equals the true one wherever its
    distance is separated from the neighbouring ranks by more than tol (else either order is
    legitimate)."""
    d, d_sorted, order = _truth(query, ref)
    scale = 1.0 + d_sorted[..., :k].abs()
    torch.testing.assert_close(dist2.double(), d_sorted[..., :k], atol=tol, rtol=tol)
    # Every returned index really is at the returned distance.
    torch.testing.assert_close(torch.gather(d, 2, idx), dist2.double(), atol=tol * 10, rtol=tol * 10)
    padded = torch.cat([d_sorted, torch.full_like(d_sorted[..., :1], float("inf"))], -1)
    gap_next = padded[..., 1 : k + 1] - padded[..., :k]
    gap_prev = torch.cat([torch.full_like(d_sorted[..., :1], float("inf")), d_sorted[..., 1:k] - d_sorted[..., : k - 1]], -1)
    separated = (gap_next > tol * scale * 10) & (gap_prev > tol * scale * 10)
    assert separated.float().mean() > 0.5, "test data too degenerate to check indices"
    assert torch.equal(idx[separated], order[..., :k][separated])


@each_backend
@pytest.mark.parametrize("dim, dtype", [(3, torch.float32), (3, torch.float64), (5, torch.float32), (8, torch.float32),
                                        (20, torch.float64), (64, torch.float32), (64, torch.float64),
                                        (128, torch.float32)])
def test_self_knn_matches_reference(on, dim, dtype):
    # Both selection forms (direct up to D = 8, the GEMM form above), several tiles of points;
    # dim 20 in float32 takes Triton's tl.dot path.
    n, k = on.size((2, 300), (1, 100)), on.size(16, 6)
    x = _points((*n, dim), seed=dim, dtype=dtype)
    dist2, idx = knn(on(x), k, backend=on.backend)
    assert dist2.dtype == dtype and idx.dtype == torch.int64 and dist2.shape == (*n, k)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    _assert_matches_truth(dist2.cpu(), idx.cpu(), x, x, k, tol)
    ref_d, _ = reference.knn(x, k)
    torch.testing.assert_close(dist2.cpu(), ref_d, atol=tol * dim, rtol=tol * 10)


def _tile_cases(on):
    """k on each of the CPU kernel's selection paths (small-group bound, large-group bound, no
    bound / sort) and on every register list size of the CUDA kernel."""
    if on.interpreted:
        return [(dim, 11) for dim in (3, 20)]
    return [(dim, k) for dim in (3, 64) for k in ((1, 7, 40, 70) if on.backend == "cpu" else (1, 20, 33, 64))]


@pytest.mark.parametrize("on, dim, k", cases(_tile_cases))
def test_query_ref_many_tiles_and_blocks(on, dim, k):
    # M != N, more query rows than one block, more reference points than one tile.
    m, n = on.size(150, 70), on.size(1700, 90)
    q, r = _points((2, m, dim), seed=1), _points((2, n, dim), seed=2)
    dist2, idx = knn(on(q), k, ref=on(r), backend=on.backend)
    assert dist2.shape == (2, m, k)
    _assert_matches_truth(dist2.cpu(), idx.cpu(), q, r, k, 1e-5)


@each_backend
@pytest.mark.parametrize("dim, k", [(3, 1), (3, 5), (3, 24), (20, 24), (64, 5), (64, 24)])
def test_grid_ties_match_reference_exactly(on, dim, k):
    # Integer coordinates: every distance (and every GEMM-form key) is exact in every summation
    # order, so ties are real and the tie rule (smaller index first) must give the reference's
    # result bit for bit.
    x = _points((3, 40, dim), seed=k, grid=3)
    dist2, idx = knn(on(x), k, backend=on.backend)
    ref_d, ref_i = reference.knn(x, k)
    assert torch.equal(idx.cpu(), ref_i)
    assert torch.equal(dist2.cpu(), ref_d)


@each_backend
def test_all_points_identical(on):
    n = on.size(300, 70)
    dist2, idx = knn(on(torch.ones(1, n, 3)), 10, backend=on.backend)
    assert torch.equal(idx.cpu(), torch.arange(10).expand(1, n, 10))
    assert torch.equal(dist2.cpu(), torch.zeros(1, n, 10))


@each_backend
@pytest.mark.parametrize("n", [1, 2, 9, 64])
def test_k_equals_n_and_batch_of_one(on, n):
    x = _points((1, n, 3), seed=n)
    dist2, idx = knn(on(x), n, backend=on.backend)
    ref_d, ref_i = reference.knn(x, n)
    assert torch.equal(idx.cpu().sort(-1).values, torch.arange(n).expand(1, n, n))
    torch.testing.assert_close(dist2.cpu(), ref_d)


@each_backend
def test_non_contiguous_inputs(on):
    n = on.size(200, 40)
    x = on(_points((2, 3, n), seed=5)).transpose(1, 2)  # (B, N, 3) view, not contiguous
    r = on(_points((2, 3 * n // 2, 3), seed=6))[:, ::2]
    assert not x.is_contiguous() and not r.is_contiguous()
    for ref in (None, r):
        d1, i1 = knn(x, 8, ref=ref, backend=on.backend)
        d2, i2 = knn(x.contiguous(), 8, ref=None if ref is None else ref.contiguous(), backend=on.backend)
        assert torch.equal(i1, i2) and torch.equal(d1, d2)


# gradcheck's many small calls are for the C++ kernels; the Triton ones' gradients are held
# against the reference's below.
@pytest.mark.parametrize("on", CPP_BACKENDS, ids=case_id)
@pytest.mark.parametrize("dim", [3, 12])
def test_gradcheck_query_ref_and_self(on, dim, one_thread):
    q = on(_points((2, 6, dim), seed=10, dtype=torch.float64)).requires_grad_()
    r = on(_points((2, 9, dim), seed=11, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: knn(a, 3, ref=b, backend=on.backend)[0], (q, r))
    x = on(_points((2, 10, dim), seed=12, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda a: knn(a, 4, backend=on.backend)[0], (x,))


@each_backend
@pytest.mark.parametrize("dim", [3, 20])
def test_gradients_match_reference(on, dim):
    # Many queries, few reference points: each reference point collects many contributions.
    q = _points((2, on.size(200, 60), dim), seed=10, dtype=torch.float64)
    r = _points((2, on.size(24, 12), dim), seed=11, dtype=torch.float64)
    assert_grads_match(lambda a, b: knn(a, 5, ref=b, backend=on.backend)[0], lambda a, b: reference.knn(a, 5, b)[0],
                       on(q, r), 1e-10)
    x = on(_points((2, on.size(200, 40), 3), seed=13))
    assert_grads_match(lambda a: knn(a, 10, backend=on.backend)[0], lambda a: reference.knn(a, 10)[0], (x,), 1e-4)


@each_backend
@pytest.mark.parametrize("dim", [3, 64])
def test_deterministic(on, dim):
    n = on.size(400, 60)
    x = on(_points((3, n, dim), seed=15, grid=4))  # duplicates: many ties, many shared neighbours
    w = on(_points((3, n, 12), seed=16))

    def run():
        xr = x.clone().requires_grad_()
        d, i = knn(xr, 12, backend=on.backend)
        (d * w).sum().backward()
        return d, i, xr.grad

    twice(run)


@pytest.mark.parametrize("on", [o for o in CPP_BACKENDS if o.backend == "cuda"], ids=case_id)
def test_cuda_k_limit_and_fallback(on):
    x = on(_points((1, 100, 3), seed=17))
    limit = backend._C.knn_max_k_cuda
    assert limit >= 64
    with pytest.raises(RuntimeError, match=f"at most {limit}"):
        library.kernel("cuda", "knn_forward")(x, x, limit + 1)
    with pytest.raises(ValueError, match="cannot take this call"):
        knn(x, limit + 1, backend="cuda")
    d, i = knn(x, limit + 1)  # auto passes over the CUDA kernel
    ref_d, _ = reference.knn(x, limit + 1)
    torch.testing.assert_close(d, ref_d)


def test_backend_torch_and_auto():
    x = _points((1, 64, 3), seed=17)
    d_auto, i_auto = knn(x, 5)
    d_ref, i_ref = knn(x, 5, backend="torch")
    torch.testing.assert_close(d_auto, d_ref)
    assert torch.equal(i_auto, i_ref)
    with pytest.raises(ValueError, match="unknown backend"):
        knn(x, 5, backend="gpu")


@each_backend
@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    b=st.integers(1, 2),
    n=st.integers(1, 260),
    dim=st.sampled_from([1, 2, 3, 5, 9, 20]),
    frac=st.floats(0.0, 1.0),
    grid=st.sampled_from([None, 2, 5]),
)
def test_properties(on, seed, b, n, dim, frac, grid):
    if on.interpreted:
        n = 1 + n % 40  # the interpreter's kernels cost per tile: the same property on fewer points
    with _single_thread():
        _check_properties(on, seed, b, n, dim, frac, grid)


def _check_properties(on, seed, b, n, dim, frac, grid):
    k = 1 + int(frac * (n - 1))
    if on.backend == "cuda":
        k = min(k, backend._C.knn_max_k_cuda)
    x = _points((b, n, dim), seed=seed, grid=grid)
    dist2, idx = (t.cpu() for t in knn(on(x), k, backend=on.backend))
    # Sorted by (dist, idx), indices valid and distinct per row.
    diff = dist2[..., 1:] - dist2[..., :-1]
    assert (diff >= 0).all()
    tie = diff == 0
    assert (idx[..., 1:][tie] > idx[..., :-1][tie]).all()
    assert ((idx >= 0) & (idx < n)).all()
    assert (idx.sort(-1).values.diff(dim=-1) > 0).all()
    # dist2 is the squared distance to the returned point.
    nb = torch.gather(x.unsqueeze(1).expand(b, n, n, dim), 2, idx.unsqueeze(-1).expand(b, n, k, dim))
    exact = (x.double().unsqueeze(2) - nb.double()).pow(2).sum(-1)
    torch.testing.assert_close(dist2.double(), exact, atol=1e-5, rtol=1e-5)
    # No point outside the set is closer than the k-th neighbour.
    d_all = (x.double().unsqueeze(2) - x.double().unsqueeze(1)).pow(2).sum(-1)
    outside = torch.ones_like(d_all, dtype=torch.bool).scatter_(2, idx, False)
    kth = dist2[..., -1:].double()
    assert (d_all[outside].reshape(-1) >= (kth.expand_as(d_all)[outside] - 1e-5 * (1 + kth.expand_as(d_all)[outside]))).all()
    # Self first, at distance 0, when the points are distinct.
    if all(torch.unique(x[i], dim=0).shape[0] == n for i in range(b)):
        assert torch.equal(idx[..., 0], torch.arange(n).expand(b, n))
        assert (dist2[..., 0] == 0).all()


# --- validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, k, exc, match",
    [
        (lambda: torch.randn(10, 3), 2, ValueError, "3 dimensions"),
        (lambda: torch.randint(0, 5, (1, 10, 3)), 2, TypeError, "floating point"),
        (lambda: torch.tensor([[[0.0, float("nan"), 0.0]] * 4]), 2, ValueError, "NaN or Inf"),
        (lambda: torch.tensor([[[0.0, float("inf"), 0.0]] * 4]), 2, ValueError, "NaN or Inf"),
        (lambda: torch.randn(1, 10, 3), 11, ValueError, r"k must be in \[1, 10\]"),
        (lambda: torch.randn(1, 10, 3), 0, ValueError, r"k must be in \[1, 10\]"),
        (lambda: torch.randn(1, 10, 3), 2.0, TypeError, "k must be an int"),
        (lambda: torch.randn(1, 0, 3), 1, ValueError, "empty"),
    ],
)
def test_front_end_errors(make, k, exc, match):
    with pytest.raises(exc, match=match):
        knn(make(), k, backend="cpu")


def test_front_end_errors_query_ref():
    with pytest.raises(ValueError, match="batch sizes"):
        knn(torch.randn(2, 10, 3), 2, ref=torch.randn(3, 10, 3), backend="cpu")
    with pytest.raises(ValueError, match="point dimensions"):
        knn(torch.randn(2, 10, 3), 2, ref=torch.randn(2, 10, 4), backend="cpu")
    with pytest.raises(ValueError, match=r"k must be in \[1, 5\]"):
        knn(torch.randn(2, 10, 3), 6, ref=torch.randn(2, 5, 3), backend="cpu")


@pytest.mark.parametrize("on", CPP_BACKENDS, ids=case_id)
@pytest.mark.parametrize(
    "args, match",
    [
        ((torch.randn(10, 3), torch.randn(10, 3), 2), "3 dimensions"),
        ((torch.randn(1, 10, 3).half(), torch.randn(1, 10, 3).half(), 2), "float32 or float64"),
        ((torch.randint(0, 3, (1, 10, 3)), torch.randint(0, 3, (1, 10, 3)), 2), "float32 or float64"),
        ((torch.randn(1, 10, 3), torch.randn(1, 10, 3).double(), 2), "dtypes differ"),
        ((torch.randn(1, 10, 3), torch.randn(2, 10, 3), 2), "batch sizes"),
        ((torch.randn(1, 10, 3), torch.randn(1, 10, 4), 2), "point dimensions"),
        ((torch.randn(1, 10, 3), torch.randn(1, 10, 3), 11), "k must be in"),
        ((torch.randn(1, 10, 3), torch.randn(1, 10, 3), 0), "k must be in"),
        ((torch.randn(1, 10, 3), torch.randn(1, 10, 3), -1), "k must be in"),
        ((torch.randn(1, 3, 10).transpose(1, 2), torch.randn(1, 10, 3), 2), "contiguous"),
        ((torch.randn(1, 10, 0), torch.randn(1, 10, 0), 2), "at least one coordinate"),
    ],
)
def test_direct_forward_errors(on, args, match):
    with pytest.raises(RuntimeError, match=match):
        library.kernel(on.backend, "knn_forward")(*on(*args))


@pytest.mark.parametrize("on", CPP_BACKENDS, ids=case_id)
def test_direct_backward_errors(on):
    q, r = on(torch.randn(1, 6, 3), torch.randn(1, 8, 3))
    g = on(torch.ones(1, 6, 2))
    good = on(torch.zeros(1, 6, 2, dtype=torch.long))
    backward = library.kernel(on.backend, "knn_backward")
    backward(g, q, r, good)  # the valid call works
    for idx, match in [
        (torch.full((1, 6, 2), 8, dtype=torch.long), r"outside \[0, 8\)"),
        (torch.full((1, 6, 2), -1, dtype=torch.long), r"outside \[0, 8\)"),
        (good.int(), "int64"),
        (torch.zeros(1, 5, 2, dtype=torch.long), "idx must have shape"),
    ]:
        with pytest.raises(RuntimeError, match=match):
            backward(g, q, r, on(idx))
    with pytest.raises(RuntimeError, match="grad_dist2 shape"):
        backward(on(torch.ones(1, 6, 3)), q, r, good)
    with pytest.raises(RuntimeError, match="grad_dist2 dtype"):
        backward(g.double(), q, r, good)
    with pytest.raises(RuntimeError, match="batch sizes"):
        backward(g, q, on(torch.randn(2, 8, 3)), good)
    if on.device.type == "cuda":
        with pytest.raises(RuntimeError, match="idx must be a CUDA tensor"):
            backward(g, q, r, good.cpu())
