"""Farthest point sampling and the ball query on every backend available without a GPU (C++
CPU, the pure-PyTorch reference, Triton under the interpreter): against the reference bit for
bit on random clouds, against direct float64 computations on grid-aligned clouds (exact
distances: real ties, points exactly on the radius), hand-worked examples, edge cases, and
input validation of the front ends, the C++ entry points and the Triton launchers.

tests/ops/conftest.py asks for the Triton interpreter before anything imports triton; if
triton was imported earlier in compiled mode on a machine without a GPU, the triton cases rerun
in a fresh process.
"""
import os
import subprocess
import sys

import pytest
import torch

from flowam_fast.ops import backend, ball_query, farthest_point_sample, library, reference

from tests.helpers import CountedLaunches
from tests.ops.test_knn import _points

INTERPRETED = backend.triton_interpreting()
_needs_c = pytest.mark.skipif(not backend.has_cpu_kernels(), reason="flowam_fast._C is not built")
_needs_interpreter = pytest.mark.skipif(
    not INTERPRETED, reason="the Triton interpreter is not on in this process (no triton, or triton was imported "
    "before TRITON_INTERPRET=1 could be set): see test_triton_cases_in_a_fresh_interpreter_process")
CPU = pytest.param("cpu", marks=_needs_c)
TRITON = pytest.param("triton", marks=_needs_interpreter)


@pytest.fixture(params=[CPU, TRITON])
def kernel(request):
    """A kernel backend, to be checked against the reference."""
    return request.param


@pytest.fixture(params=[CPU, "torch", TRITON])
def any_backend(request):
    """Every backend, the reference included, to be checked against direct computations."""
    return request.param


def _cloud(b, n, seed, dtype=torch.float32):
    """Points on the unit sphere's surface, as normalized shapes are."""
    return torch.nn.functional.normalize(_points((b, n, 3), seed, torch.float64), dim=-1).to(dtype)


def _gather(points, idx):
    return points[torch.arange(points.shape[0]).unsqueeze(1), idx]


def _d2_exact(a, b):
    """Squared distances (B, M, N) in float64: exact for grid-aligned coordinates."""
    return (a.double().unsqueeze(2) - b.double().unsqueeze(1)).pow(2).sum(-1)


# --- farthest point sampling --------------------------------------------------------------


def _assert_farthest(points, idx):
    """Each chosen point after the first has the largest min distance to those before it, and
    the smallest index among the points that have it. Distances in float64: exact on grids."""
    d = _d2_exact(points, points)
    for b in range(points.shape[0]):
        assert idx[b, 0] == 0
        run = d[b, 0].clone()
        for s in range(1, idx.shape[1]):
            best = run.max()
            assert run[idx[b, s]] == best, (b, s)
            assert idx[b, s] == int((run == best).nonzero()[0]), (b, s)
            run = torch.minimum(run, d[b, idx[b, s]])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fps_matches_reference(kernel, dtype):
    # The triton sizes keep the interpreter quick; the CPU's span several lanes and a tail.
    b, n, s = (2, 90, 24) if kernel == "triton" else (3, 517, 200)
    x = _cloud(b, n, seed=1, dtype=dtype)
    idx = farthest_point_sample(x, s, backend=kernel)
    assert idx.dtype == torch.int64 and idx.shape == (b, s)
    assert torch.equal(idx, reference.farthest_point_sample(x, s))
    assert (idx.sort(-1).values.diff(dim=-1) > 0).all()  # distinct points: no repeats


def test_fps_line_by_hand(any_backend):
    # On a line at 0, 1, 10, 4: 10 is farthest from 0; then 4 (16 from 0) beats 1 (1 from 0).
    x = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [10, 0, 0], [4, 0, 0]]])
    assert farthest_point_sample(x, 4, backend=any_backend).tolist() == [[0, 2, 3, 1]]


def test_fps_ties_on_a_symmetric_grid(any_backend):
    # The 3x3x3 grid: every step has many equally far points; the opposite corner (26) comes
    # second, and the rest follow the smaller-index rule.
    g = torch.arange(3.0)
    x = torch.cartesian_prod(g, g, g).unsqueeze(0)
    idx = farthest_point_sample(x, 27, backend=any_backend)
    assert idx[0, :2].tolist() == [0, 26]
    assert torch.equal(idx.sort(-1).values, torch.arange(27).unsqueeze(0))
    _assert_farthest(x, idx)
    assert torch.equal(idx, reference.farthest_point_sample(x, 27))


def test_fps_duplicates_repeat_point_zero_when_exhausted(any_backend):
    x = _points((2, 40, 3), seed=3, grid=2)  # at most 8 distinct points, many duplicates
    idx = farthest_point_sample(x, 20, backend=any_backend)
    _assert_farthest(x, idx)
    for b in range(2):
        distinct = torch.unique(x[b], dim=0).shape[0]
        assert torch.unique(x[b, idx[b, :distinct]], dim=0).shape[0] == distinct
        assert (idx[b, distinct:] == 0).all()  # every min distance is 0: ties go to point 0
    assert torch.equal(idx, reference.farthest_point_sample(x, 20))


@pytest.mark.parametrize("n", [1, 2, 7])
def test_fps_all_points_batch_of_one(any_backend, n):
    x = _points((1, n, 3), seed=n)
    idx = farthest_point_sample(x, n, backend=any_backend)
    assert torch.equal(idx.sort(-1).values, torch.arange(n).unsqueeze(0))
    assert torch.equal(idx, reference.farthest_point_sample(x, n))


def test_fps_non_contiguous_and_dtypes(kernel):
    base = _cloud(2, 60, seed=4).transpose(1, 2).contiguous()
    x = base.transpose(1, 2)  # (B, N, 3) view of (B, 3, N)
    assert not x.is_contiguous()
    want = farthest_point_sample(x.contiguous(), 20, backend=kernel)
    assert torch.equal(farthest_point_sample(x, 20, backend=kernel), want)
    # float64 runs in float64, as knn's kernels do; other floating dtypes run in float32.
    assert torch.equal(farthest_point_sample(x.double(), 20, backend=kernel),
                       reference.farthest_point_sample(x.double(), 20))
    half = x.half()
    assert torch.equal(farthest_point_sample(half, 20, backend=kernel),
                       reference.farthest_point_sample(half.float(), 20))


def test_fps_ignores_autograd():
    x = _cloud(1, 30, seed=5).requires_grad_(True)
    idx = farthest_point_sample(x, 5)
    assert not idx.requires_grad and idx.dtype == torch.int64


@pytest.mark.parametrize("make, s, exc, match", [
    (lambda: torch.randn(10, 3), 2, ValueError, "3 dimensions"),
    (lambda: torch.randn(1, 10, 2), 2, ValueError, r"shape \(B, N, 3\)"),
    (lambda: torch.randint(0, 5, (1, 10, 3)), 2, TypeError, "floating point"),
    (lambda: torch.tensor([[[0.0, float("nan"), 0.0]] * 4]), 2, ValueError, "NaN or Inf"),
    (lambda: torch.tensor([[[0.0, float("inf"), 0.0]] * 4]), 2, ValueError, "NaN or Inf"),
    (lambda: torch.randn(1, 10, 3), 11, ValueError, r"num_samples must be in \[1, 10\]"),
    (lambda: torch.randn(1, 10, 3), 0, ValueError, r"num_samples must be in \[1, 10\]"),
    (lambda: torch.randn(1, 10, 3), 2.0, TypeError, "num_samples must be an int"),
    (lambda: torch.randn(1, 10, 3), True, TypeError, "num_samples must be an int"),
    (lambda: torch.randn(1, 0, 3), 1, ValueError, "empty"),
])
def test_fps_front_end_errors(any_backend, make, s, exc, match):
    with pytest.raises(exc, match=match):
        farthest_point_sample(make(), s, backend=any_backend)


def test_fps_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        farthest_point_sample(torch.randn(1, 5, 3), 2, backend="gpu")


# --- ball query ---------------------------------------------------------------------------


def _assert_groups(points, centroids, radius, k, idx):
    """Against a direct float64 computation (exact on grids): each group lists the points with
    d2 <= radius^2 in index order, the first k of them, then repeats the first; an empty ball
    holds the nearest point (ties to the smaller index) in every slot."""
    d = _d2_exact(centroids, points)
    for b in range(idx.shape[0]):
        for s in range(idx.shape[1]):
            inside = (d[b, s] <= radius * radius).nonzero().flatten().tolist()[:k]
            if not inside:
                inside = [int((d[b, s] == d[b, s].min()).nonzero()[0])]
            want = inside + inside[:1] * (k - len(inside))
            assert idx[b, s].tolist() == want, (b, s)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ball_query_matches_reference(kernel, dtype):
    # Centroids chosen by FPS (every ball holds its centroid) and random ones (some balls
    # empty); groups both full and padded.
    b, n, s = (2, 150, 40) if kernel == "triton" else (3, 700, 300)
    x = _cloud(b, n, seed=6, dtype=dtype)
    for centroids in (_gather(x, reference.farthest_point_sample(x, s)), 1.2 * _cloud(b, s, seed=7, dtype=dtype)):
        for radius, k in ((0.3, 8), (0.15, 33)):
            idx = ball_query(x, centroids, radius, k, backend=kernel)
            assert idx.dtype == torch.int64 and idx.shape == (b, s, k)
            assert torch.equal(idx, reference.ball_query(x, centroids, radius, k)), (radius, k)


def test_ball_query_line_by_hand(any_backend):
    # Points at 0, 1, 2, 3, 10 on a line, the ball of radius 2 around 0: 2 lies on the sphere
    # (d2 == r2 exactly) and is kept; the group pads with its first point.
    x = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0], [10, 0, 0]]])
    c = torch.tensor([[[0.0, 0, 0], [9.0, 0, 0], [2.5, 0, 0]]])
    assert ball_query(x, c, 2.0, 4, backend=any_backend).tolist() == [[[0, 1, 2, 0], [4, 4, 4, 4], [1, 2, 3, 1]]]
    assert ball_query(x, c, 2.0, 2, backend=any_backend).tolist() == [[[0, 1], [4, 4], [1, 2]]]


@pytest.mark.parametrize("radius", [1.0, 2.0, 2.0 ** 0.5, 1.5])
def test_ball_query_points_on_the_radius(any_backend, radius):
    # Half-integer coordinates: every d2 is a multiple of 1/4, exact in float32, so many points
    # lie exactly on the sphere (d2 == r2 for r = 1, 2, and sqrt(2), whose square rounds to 2
    # in float32 and stays above 2 in double) and must be kept, as the reference keeps them.
    x = _points((2, 80, 3), seed=8, grid=7) / 2
    c = _gather(x, torch.arange(0, 80, 4).expand(2, -1))
    idx = ball_query(x, c, radius, 12, backend=any_backend)
    _assert_groups(x, c, radius, 12, idx)
    assert torch.equal(idx, reference.ball_query(x, c, radius, 12))


def test_ball_query_sparse_groups_pad_with_the_first(any_backend):
    x = _points((2, 60, 3), seed=9, grid=10)
    c = _gather(x, torch.arange(0, 60, 3).expand(2, -1))
    idx = ball_query(x, c, 1.0, 16, backend=any_backend)
    _assert_groups(x, c, 1.0, 16, idx)
    counts = (_d2_exact(c, x) <= 1.0).sum(-1)
    assert (counts < 16).all() and (counts >= 1).all()  # every group padded, none empty


def test_ball_query_empty_ball_takes_the_nearest_point(any_backend):
    x = torch.tensor([[[0.0, 0, 0], [4, 0, 0], [2, 3, 0], [2, -3, 0]]])
    # (2, 0, 0): points 0 and 1 at d2 = 4, points 2 and 3 at 9; radius 1 holds none.
    # (2, 5, 0): point 2 nearest. Far away along -x: point 0.
    c = torch.tensor([[[2.0, 0, 0], [2, 5, 0], [-50, 1, 0]]])
    idx = ball_query(x, c, 1.0, 3, backend=any_backend)
    assert idx.tolist() == [[[0, 0, 0], [2, 2, 2], [0, 0, 0]]]
    assert torch.equal(idx, reference.ball_query(x, c, 1.0, 3))


def test_ball_query_more_slots_than_points(any_backend):
    x = _points((2, 5, 3), seed=10, grid=3)
    c = x[:, :3] + 0.5
    idx = ball_query(x, c, 10.0, 9, backend=any_backend)  # every point inside
    assert torch.equal(idx, torch.tensor([0, 1, 2, 3, 4, 0, 0, 0, 0]).expand(2, 3, 9))
    assert torch.equal(idx, reference.ball_query(x, c, 10.0, 9))


def test_ball_query_single_point(any_backend):
    x = torch.tensor([[[0.5, -1.0, 2.0]]])
    assert ball_query(x, x, 0.1, 1, backend=any_backend).tolist() == [[[0]]]
    assert ball_query(x, x + 5, 0.1, 3, backend=any_backend).tolist() == [[[0, 0, 0]]]


def test_ball_query_non_contiguous_and_dtypes(kernel):
    x = _cloud(2, 3 * 70, seed=11).transpose(1, 2).contiguous().transpose(1, 2)  # (B, N, 3) view
    c = _cloud(2, 40, seed=12)[:, ::2]
    assert not x.is_contiguous() and not c.is_contiguous()
    want = ball_query(x.contiguous(), c.contiguous(), 0.4, 6, backend=kernel)
    assert torch.equal(ball_query(x, c, 0.4, 6, backend=kernel), want)
    assert torch.equal(ball_query(x.double(), c.double(), 0.4, 6, backend=kernel),
                       reference.ball_query(x.double(), c.double(), 0.4, 6))
    # Centroids go to the points' dtype.
    assert torch.equal(ball_query(x, c.double(), 0.4, 6, backend=kernel), want)


@pytest.mark.parametrize("centroids, radius, k, exc, match", [
    (torch.randn(2, 4, 3), 0.5, 2, ValueError, "batch sizes of points and centroids"),
    (torch.randn(1, 4, 2), 0.5, 2, ValueError, r"centroids must have shape \(B, N, 3\)"),
    (torch.tensor([[[0.0, float("nan"), 0.0]]]), 0.5, 2, ValueError, "centroids contains NaN or Inf"),
    (torch.randn(1, 4, 3), 0.0, 2, ValueError, "radius must be positive and finite"),
    (torch.randn(1, 4, 3), -1.0, 2, ValueError, "radius must be positive and finite"),
    (torch.randn(1, 4, 3), float("inf"), 2, ValueError, "radius must be positive and finite"),
    (torch.randn(1, 4, 3), float("nan"), 2, ValueError, "radius must be positive and finite"),
    (torch.randn(1, 4, 3), "0.5", 2, TypeError, "radius must be a real number"),
    (torch.randn(1, 4, 3), 0.5, 0, ValueError, "nsample must be at least 1"),
    (torch.randn(1, 4, 3), 0.5, 2.0, TypeError, "nsample must be an int"),
])
def test_ball_query_front_end_errors(any_backend, centroids, radius, k, exc, match):
    with pytest.raises(exc, match=match):
        ball_query(torch.randn(1, 10, 3), centroids, radius, k, backend=any_backend)


def test_ball_query_refuses_bad_points():
    with pytest.raises(ValueError, match="points contains NaN or Inf"):
        ball_query(torch.tensor([[[float("nan"), 0.0, 0.0]]]), torch.zeros(1, 1, 3), 0.5, 2)
    with pytest.raises(TypeError, match="points must be floating point"):
        ball_query(torch.zeros(1, 3, 3, dtype=torch.long), torch.zeros(1, 1, 3), 0.5, 2)


# --- direct calls of the kernels ---------------------------------------------------------


def _direct_fps_cases():
    x = torch.randn(1, 10, 3)
    return [((x.transpose(1, 2).contiguous().transpose(1, 2), 2), "contiguous"),
            ((x, 11), r"num_samples must be in \[1, 10\]"),
            ((x, 0), r"num_samples must be in \[1, 10\]"),
            ((x.half(), 2), "float32 or float64"),
            ((torch.randn(1, 10, 4), 2), r"shape \(B, N, 3\)")]


def _direct_ball_cases():
    x, c = torch.randn(1, 10, 3), torch.randn(1, 4, 3)
    return [((x, c.double(), 0.5, 2), "dtypes differ"),
            ((x, torch.randn(2, 4, 3), 0.5, 2), "batch sizes"),
            ((x, c, 0.0, 2), "radius must be positive and finite"),
            ((x, c, 0.5, 0), "nsample must be at least 1"),
            ((x, c.transpose(1, 2).contiguous().transpose(1, 2), 0.5, 2), "contiguous"),
            ((x.half(), c.half(), 0.5, 2), "float32 or float64")]


def _kernels(kernel):
    return library.kernel(kernel, "farthest_point_sample"), library.kernel(kernel, "ball_query")


def test_direct_calls_refuse_what_would_read_out_of_bounds(kernel):
    fps_kernel, ball_kernel = _kernels(kernel)
    for args, match in _direct_fps_cases():
        with pytest.raises(RuntimeError, match=match):
            fps_kernel(*args)
    for args, match in _direct_ball_cases():
        with pytest.raises(RuntimeError, match=match):
            ball_kernel(*args)


def test_direct_calls_with_nan_still_return_valid_indices(kernel):
    # The front ends refuse NaN; a direct call must still not index out of bounds.
    fps_kernel, ball_kernel = _kernels(kernel)
    x = torch.randn(1, 20, 3)
    x[0, 3:9] = float("nan")
    for idx in (fps_kernel(x, 20), ball_kernel(x, x, 0.5, 4)):
        assert ((idx >= 0) & (idx < 20)).all()


@_needs_interpreter
def test_triton_backend_launches_its_kernels(monkeypatch):
    from flowam_fast.ops.triton import sampling

    launched = []
    for name in ("_fps_kernel", "_ball_query_kernel"):
        monkeypatch.setattr(sampling, name, CountedLaunches(getattr(sampling, name), name, launched))
    x = _cloud(1, 20, seed=13)
    farthest_point_sample(x, 4, backend="triton")
    ball_query(x, x[:, :3], 0.5, 4, backend="triton")
    assert launched == ["_fps_kernel", "_ball_query_kernel"]


def test_triton_cases_in_a_fresh_interpreter_process():
    if INTERPRETED or torch.cuda.is_available():
        pytest.skip("the triton cases ran in this process" if INTERPRETED else "a GPU machine runs them compiled")
    pytest.importorskip("triton")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, TRITON_INTERPRET="1")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", "triton"],
                         env=env, capture_output=True, text=True, cwd=root)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
