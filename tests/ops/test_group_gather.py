"""PointNet++'s set-abstraction ops (flowam_fast.ops.grouping): group_gather on every backend
that runs on CPU tensors here (C++, the reference, Triton under its interpreter) against the
reference and against closed forms, forward and backward, with repeated indices, edge sizes,
non-contiguous inputs, negative scales, determinism and input validation; group_linear_max
against the dense reference, ties included.

The Triton cases need the interpreter, which tests/ops/conftest.py asks for before triton is
first imported; on a GPU machine the CUDA cases run in tests/ops/test_gpu.py.
"""
import pytest
import torch

from flowam_fast.ops import backend, group_gather, group_linear_max, grouping, library, reference

from tests.helpers import assert_same_across_runs_and_threads
from tests.ops.test_linear_max import _first_argmax

BACKENDS = backend.available_backends("cpu")
KERNELS = [b for b in BACKENDS if b != "torch"]
needs_cpu_kernels = pytest.mark.skipif(not backend.has_cpu_kernels(), reason="flowam_fast._C is not built")


def _inputs(B, N, S, K, C, dtype=torch.float64, index_dtype=torch.int64, seed=0):
    g = torch.Generator().manual_seed(seed)
    P = torch.randn(B, N, C, generator=g, dtype=dtype)
    Q = torch.randn(B, S, C, generator=g, dtype=dtype)
    idx = torch.randint(0, N, (B, S, K), generator=g).to(index_dtype)
    # Negative scales are real (a BatchNorm with a negative gamma): every other channel flips.
    scale = (torch.rand(C, generator=g, dtype=dtype) + 0.5) * torch.tensor([1.0, -1.0], dtype=dtype).repeat(C)[:C]
    shift = torch.randn(C, generator=g, dtype=dtype) * 0.5
    return P, Q, idx, scale, shift


def _run(backend_name, P, Q, idx, scale, shift, seed=7):
    """Forward and backward with a fixed random upstream gradient: (out, grad_P, grad_Q)."""
    p, q = P.clone().requires_grad_(True), Q.clone().requires_grad_(True)
    fn = reference.group_gather if backend_name == "reference" else (
        lambda *a: group_gather(*a, backend=backend_name))
    out = fn(p, q, idx, scale, shift)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    (out * g).sum().backward()
    return out.detach(), p.grad, q.grad


def _assert_matches_reference(backend_name, inputs, tol):
    for got, want in zip(_run(backend_name, *inputs), _run("reference", *inputs)):
        assert got.dtype == want.dtype and got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)


# --- group_gather: values and gradients ----------------------------------------------------


# Channel counts: a scalar tail, a partial backward block, whole 32-channel blocks, and past them.
@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("C", [1, 5, 64, 70])
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_matches_reference(backend_name, C, dtype, tol):
    _assert_matches_reference(backend_name, _inputs(2, 30, 9, 6, C, dtype=dtype, seed=C), tol)


@pytest.mark.parametrize("backend_name", KERNELS)
def test_int32_indices(backend_name):
    inputs = _inputs(2, 25, 8, 5, 12, index_dtype=torch.int32, seed=1)
    _assert_matches_reference(backend_name, inputs, 1e-12)


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("B, N, S, K", [(1, 1, 1, 1), (1, 9, 1, 4), (2, 9, 5, 1), (1, 3, 4, 16)])
def test_edge_sizes(backend_name, B, N, S, K):
    _assert_matches_reference(backend_name, _inputs(B, N, S, K, 7, seed=K), 1e-12)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_padding_repeats_accumulate(backend_name):
    # The ball query pads a group with its first neighbour; with every ReLU open (large shift)
    # and grad_out = 1, grad_P[j] = scale * (how often j was gathered), grad_Q = -K * scale.
    B, N, S, K, C = 2, 6, 4, 8, 5
    P, Q, _, _, _ = _inputs(B, N, S, K, C)
    # Scales of few bits, so that every multiple is exact whatever the summation order.
    scale = torch.tensor([1.5, -0.75, 2.0, -1.25, 0.5], dtype=torch.float64)
    shift = torch.full((C,), 100.0, dtype=torch.float64)
    first = torch.randint(0, N, (B, S, 1), generator=torch.Generator().manual_seed(3))
    idx = first.repeat(1, 1, K)
    idx[:, :, :2] = torch.tensor([4, 1])  # two real neighbours, then the padding
    p, q = P.clone().requires_grad_(True), Q.clone().requires_grad_(True)
    group_gather(p, q, idx, scale, shift, backend=backend_name).sum().backward()
    counts = torch.stack([torch.bincount(idx[b].reshape(-1), minlength=N) for b in range(B)]).double()
    assert torch.equal(p.grad, counts.unsqueeze(-1) * scale)
    assert torch.equal(q.grad, (-K * scale).expand(B, S, C))


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_negative_scale_passes_where_q_exceeds_p(backend_name):
    # scale -1, shift 0: out = relu(Q_s - P_j), and the gradient to P is -1 where Q_s > P_j.
    P, Q, idx, _, _ = _inputs(1, 10, 6, 7, 9, seed=5)
    scale, shift = -torch.ones(9, dtype=torch.float64), torch.zeros(9, dtype=torch.float64)
    p = P.clone().requires_grad_(True)
    out = group_gather(p, Q, idx, scale, shift, backend=backend_name)
    diff = Q[0].unsqueeze(1) - P[0][idx[0]]  # (S, K, C)
    assert torch.equal(out[0], diff.clamp_min(0))
    out.sum().backward()
    want = torch.zeros(10, 9, dtype=torch.float64).index_add_(0, idx[0].reshape(-1), -(diff > 0).double().view(-1, 9))
    assert torch.equal(p.grad[0], want)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_relu_derivative_at_zero_is_zero(backend_name):
    # P_j = Q_s and shift 0: every pre-activation is exactly 0, and no gradient passes (torch's rule).
    P = torch.ones(1, 3, 4, dtype=torch.float64)
    Q = torch.ones(1, 2, 4, dtype=torch.float64)
    idx = torch.tensor([[[0, 2], [1, 1]]])
    ones, zeros = torch.ones(4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
    out, grad_P, grad_Q = _run(backend_name, P, Q, idx, ones, zeros)
    assert torch.count_nonzero(out) == 0 and torch.count_nonzero(grad_P) == 0 and torch.count_nonzero(grad_Q) == 0


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_non_contiguous_inputs(backend_name):
    g = torch.Generator().manual_seed(6)
    P = torch.randn(2, 11, 20, generator=g, dtype=torch.float64).transpose(1, 2)  # (B, N, C) view of (B, C, N)
    Q = torch.randn(2, 11, 8, generator=g, dtype=torch.float64).transpose(1, 2)
    idx = torch.randint(0, 20, (2, 5, 8), generator=g).transpose(1, 2)  # (B, S, K) view of (B, K, S)
    scale = torch.randn(22, generator=g, dtype=torch.float64)[::2]
    shift = torch.randn(11, generator=g, dtype=torch.float64)
    assert not any(t.is_contiguous() for t in (P, Q, idx, scale))
    _assert_matches_reference(backend_name, (P, Q, idx, scale, shift), 1e-12)


@pytest.mark.parametrize("backend_name", KERNELS)
def test_mixed_dtypes_compute_in_float64(backend_name):
    P, Q, idx, scale, shift = _inputs(1, 8, 3, 4, 6, dtype=torch.float32)
    out = group_gather(P, Q.double(), idx, scale, shift, backend=backend_name)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, reference.group_gather(P.double(), Q.double(), idx, scale.double(),
                                                           shift.double()), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_gradcheck(backend_name):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # hundreds of tiny calls: no thread start-up each time
    try:
        P, Q, idx, scale, shift = _inputs(2, 5, 3, 4, 6, seed=8)
        idx[0, 0] = 2  # a row gathered many times
        P, Q = P.requires_grad_(True), Q.requires_grad_(True)
        assert torch.autograd.gradcheck(lambda p, q: group_gather(p, q, idx, scale, shift, backend=backend_name),
                                        (P, Q))
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("backend_name", KERNELS)
def test_deterministic_across_runs_and_thread_counts(backend_name):
    # Few points gathered by many entries: each grad_P element sums hundreds of terms, and the
    # backward splits over threads.
    inputs = _inputs(3, 12, 200, 16, 96, dtype=torch.float32, seed=9)
    assert_same_across_runs_and_threads(lambda: _run(backend_name, *inputs))


@needs_cpu_kernels
@pytest.mark.skipif("triton" not in BACKENDS, reason="triton does not run on CPU tensors here (no interpreter)")
def test_triton_and_cpu_kernels_agree_bit_for_bit():
    # The backward terms are copies of grad_out summed in entry order by both: identical sums.
    P, Q, idx, scale, shift = _inputs(2, 10, 30, 8, 40, dtype=torch.float32, seed=10)
    out = library.kernel("cpu", "group_gather_forward")(P, Q, idx, scale, shift)
    torch.testing.assert_close(library.kernel("triton", "group_gather_forward")(P, Q, idx, scale, shift), out,
                               rtol=1e-6, atol=1e-6)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(0))
    for got, want in zip(library.kernel("triton", "group_gather_backward")(g, out, idx, scale, 10),
                         library.kernel("cpu", "group_gather_backward")(g, out, idx, scale, 10)):
        assert torch.equal(got, want)


@pytest.mark.skipif("triton" not in BACKENDS, reason="triton does not run on CPU tensors here (no interpreter)")
def test_triton_backend_launches_its_kernels(monkeypatch):
    from triton.runtime.jit import KernelInterface

    from flowam_fast.ops.triton import _scatter
    from flowam_fast.ops.triton import group_gather as t_group

    from tests.helpers import CountedLaunches

    log = []
    for module in (_scatter, t_group):
        for name, obj in list(vars(module).items()):
            if isinstance(obj, KernelInterface) and name.endswith("_kernel"):
                monkeypatch.setattr(module, name, CountedLaunches(obj, name, log))
    P, Q, idx, scale, shift = _inputs(1, 6, 2, 3, 4)
    group_gather(P.requires_grad_(True), Q, idx, scale, shift, backend="triton").sum().backward()
    assert log == ["_forward_kernel", "_grad_kernel", "_grad_kernel"]


def test_torch_backend_is_the_reference_and_auto_picks_a_kernel():
    inputs = _inputs(1, 8, 3, 4, 6)
    assert torch.equal(group_gather(*inputs, backend="torch"), reference.group_gather(*inputs))
    torch.testing.assert_close(group_gather(*inputs), reference.group_gather(*inputs), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        group_gather(*inputs, backend="cuda")


# --- group_gather: validation --------------------------------------------------------------


def _good(**bad):
    args = dict(P=torch.randn(2, 10, 4), Q=torch.randn(2, 3, 4), idx=torch.zeros(2, 3, 5, dtype=torch.long),
                scale=torch.ones(4), shift=torch.zeros(4))
    args.update(bad)
    return args


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("bad, exc, match", [
    (dict(P=torch.randn(10, 4)), ValueError, "P must have 3 dimensions"),
    (dict(P=torch.randint(0, 3, (2, 10, 4))), TypeError, "P must be floating point"),
    (dict(P=torch.full((2, 10, 4), float("nan"))), ValueError, "P contains NaN or Inf"),
    (dict(Q=torch.full((2, 3, 4), float("inf"))), ValueError, "Q contains NaN or Inf"),
    (dict(scale=torch.tensor([1.0, float("nan"), 1.0, 1.0])), ValueError, "scale contains NaN"),
    (dict(idx=torch.zeros(2, 3, 5)), TypeError, "idx must be int32 or int64"),
    (dict(idx=torch.full((2, 3, 5), 10)), ValueError, r"idx has values outside \[0, 10\)"),
    (dict(idx=torch.full((2, 3, 5), -1)), ValueError, r"idx has values outside \[0, 10\)"),
    (dict(idx=torch.zeros(2, 3, dtype=torch.long)), ValueError, "idx must have 3 dimensions"),
    (dict(idx=torch.zeros(2, 3, 0, dtype=torch.long)), ValueError, "idx needs at least one neighbour"),
    (dict(Q=torch.randn(1, 3, 4)), ValueError, "batch sizes of P and Q"),
    (dict(idx=torch.zeros(1, 3, 5, dtype=torch.long)), ValueError, "batch sizes of P and idx"),
    (dict(idx=torch.zeros(2, 4, 5, dtype=torch.long)), ValueError, r"centroids \(S\) of Q and idx"),
    (dict(Q=torch.randn(2, 3, 5)), ValueError, "channels of P and Q"),
    (dict(scale=torch.ones(5)), ValueError, "scale length"),
    (dict(shift=torch.zeros(3)), ValueError, "shift length"),
    (dict(shift=torch.zeros(4, 1)), ValueError, "shift must have 1 dimensions"),
    (dict(P="points"), TypeError, "P must be a torch.Tensor"),
])
def test_front_end_errors(backend_name, bad, exc, match):
    with pytest.raises(exc, match=f"group_gather: {match}"):
        group_gather(**_good(**bad), backend=backend_name)


def test_scale_and_shift_must_not_require_grad():
    for name in ("scale", "shift"):
        args = _good()
        args[name].requires_grad_(True)
        with pytest.raises(ValueError, match="scale and shift require grad.*detach"):
            group_gather(**args)
        with torch.no_grad():  # no graph, no gradient asked for: allowed
            torch.testing.assert_close(group_gather(**args), reference.group_gather(**args))


@needs_cpu_kernels
@pytest.mark.parametrize("bad, match", [
    (dict(P=torch.randn(10, 4)), "P must have 3 dimensions"),
    (dict(P=torch.randint(0, 3, (2, 10, 4))), "P must be float32 or float64"),
    (dict(P=torch.randn(2, 4, 10).transpose(1, 2)), "P must be contiguous"),
    (dict(Q=torch.randn(2, 3, 4, dtype=torch.float64)), "Q must have the dtype of P"),
    (dict(Q=torch.randn(1, 3, 4)), r"Q must have shape \(B, S, C\)"),
    (dict(idx=torch.zeros(2, 4, 5, dtype=torch.long)), r"idx must have shape \(B, S, K\)"),
    (dict(idx=torch.zeros(2, 3, 5)), "idx must be int64 or int32"),
    (dict(idx=torch.full((2, 3, 5), 10)), r"idx has values outside \[0, 10\)"),
    (dict(idx=torch.zeros(2, 3, 0, dtype=torch.long)), "K >= 1"),
    (dict(idx=torch.zeros(2, 5, 3, dtype=torch.long).transpose(1, 2)), "idx must be contiguous"),
    (dict(scale=torch.ones(5)), "scale must have C = 4 entries"),
    (dict(shift=torch.zeros(4, dtype=torch.float64)), "shift must have dtype Float"),
])
def test_direct_forward_errors(bad, match):
    with pytest.raises(RuntimeError, match=match):
        library.kernel("cpu", "group_gather_forward")(**_good(**bad))


@needs_cpu_kernels
def test_direct_backward_errors():
    g, idx, scale = torch.randn(1, 3, 5, 4), torch.zeros(1, 3, 5, dtype=torch.long), torch.ones(4)
    bwd = library.kernel("cpu", "group_gather_backward")
    torch.testing.assert_close(bwd(g, g, idx, scale, 2)[1], -(g * (g > 0)).sum(2))  # the valid call works
    cases = [
        ((g[0], g[0], idx, scale, 2), "grad_out must have 4 dimensions"),
        ((g, g.double(), idx, scale, 2), "out must have the dtype of grad_out"),
        ((g, g[:, :2], idx, scale, 2), "differs from grad_out shape"),
        ((g, g, idx, scale, 0), "num_points must be >= 1"),
        ((g, g, torch.full((1, 3, 5), 2), scale, 2), r"idx has values outside \[0, 2\)"),
        ((g, g, idx[:, :, :4].contiguous(), scale, 2), "idx must have grad_out's leading shape"),
        ((g, g, idx, torch.ones(3), 2), "scale must have C = 4 entries"),
        ((g.transpose(1, 2).contiguous().transpose(1, 2), g, idx, scale, 2), "grad_out must be contiguous"),
    ]
    for args, match in cases:
        with pytest.raises(RuntimeError, match=match):
            bwd(*args)


@pytest.mark.skipif("triton" not in BACKENDS, reason="triton does not run on CPU tensors here (no interpreter)")
def test_triton_launchers_reject_what_would_read_out_of_bounds():
    forward, backward = (library.kernel("triton", f"group_gather_{part}") for part in ("forward", "backward"))
    args = _good()
    with pytest.raises(RuntimeError, match="P must be contiguous"):
        forward(**_good(P=torch.randn(2, 4, 10).transpose(1, 2)))
    with pytest.raises(RuntimeError, match=r"idx must have shape \(B, S, K\) = \(2, 3, K\)"):
        forward(**_good(idx=torch.zeros(2, 4, 5, dtype=torch.long)))
    with pytest.raises(RuntimeError, match="scale must be a"):
        forward(**_good(scale=torch.ones(4, dtype=torch.float64)))
    g = torch.randn(2, 3, 5, 4)
    with pytest.raises(RuntimeError, match=r"idx must have shape \(B, S, K\) = \(2, 3, 5\)"):
        backward(g, g, args["idx"][:, :, :4].contiguous(), args["scale"], 10)


# --- group_linear_max ----------------------------------------------------------------------


def _grouped(B, S, K, cin, cout, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, S, K, cin, generator=g, dtype=dtype)
    w = torch.randn(cout, cin, generator=g, dtype=dtype)
    scale = torch.randn(cout, generator=g, dtype=dtype)
    shift = torch.randn(cout, generator=g, dtype=dtype)
    return x, w, scale, shift


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("slope", [0.0, 0.2])
@pytest.mark.parametrize("shape", [(2, 3, 5, 4, 7), (1, 1, 1, 3, 2), (3, 4, 9, 16, 40)])
def test_group_linear_max_matches_dense_reference(backend_name, slope, shape):
    inputs = _grouped(*shape, seed=shape[2])
    fast = [t.clone().requires_grad_(True) for t in inputs]
    ref = [t.clone().requires_grad_(True) for t in inputs]
    out = group_linear_max(*fast, negative_slope=slope, backend=backend_name)
    want = reference.group_linear_max(*ref, negative_slope=slope)
    assert out.shape == (shape[0], shape[1], shape[4])
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    (out * g).sum().backward()
    (want * g).sum().backward()
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_group_linear_max_ties_send_the_gradient_to_the_first_point(backend_name):
    # Integer inputs and weights with few levels: exact values, many equal maxima in a group.
    g = torch.Generator().manual_seed(2)
    B, S, K, cin, cout = 2, 3, 6, 3, 5
    x = torch.randint(0, 2, (B, S, K, cin), generator=g).double()
    w = torch.randint(0, 2, (cout, cin), generator=g).double()
    scale, shift = torch.ones(cout, dtype=torch.float64), torch.full((cout,), 0.5, dtype=torch.float64)
    xg = x.clone().requires_grad_(True)
    out = group_linear_max(xg, w, scale, shift, backend=backend_name)
    act = torch.relu(x @ w.t() * scale + shift).view(B * S, K, cout)
    first = _first_argmax(act)  # (B * S, cout): the first k among equal maxima
    assert (act == act.max(dim=1, keepdim=True).values).sum(1).gt(1).any()  # ties are there
    assert torch.equal(out.view(B * S, cout), act.max(dim=1).values)
    out.sum().backward()
    # z = W x + 0.5 > 0 everywhere (x and W are >= 0), so act' = 1 at every maximum.
    hit = (first.unsqueeze(1) == torch.arange(K).view(1, K, 1)).double()  # (B * S, K, cout)
    assert torch.equal(xg.grad.view(B * S, K, cin), hit @ (w * scale[:, None]))


def test_group_linear_max_views_contiguous_input_without_a_copy(monkeypatch):
    seen = []
    real = grouping.checked_linear_max

    def spy(op, x, *args):
        seen.append(x)
        return real(op, x, *args)

    monkeypatch.setattr(grouping, "checked_linear_max", spy)
    x, w, scale, shift = _grouped(2, 3, 4, 5, 6)
    group_linear_max(x, w, scale, shift)
    assert seen[0].data_ptr() == x.data_ptr() and seen[0].shape == (6, 4, 5)
    # A permuted (non-contiguous) x is copied, and still right.
    xt = x.transpose(1, 2).contiguous().transpose(1, 2)
    torch.testing.assert_close(group_linear_max(xt, w, scale, shift), reference.group_linear_max(x, w, scale, shift))


@pytest.mark.parametrize("bad, exc, match", [
    (dict(x=torch.randn(2, 3, 5)), ValueError, r"x must have 4 dimensions \(B, S, K, Cin\)"),
    (dict(x=[[1.0]]), TypeError, "x must be a torch.Tensor"),
    (dict(x=torch.randn(2, 3, 0, 4)), ValueError, "x is empty"),
    (dict(weight=torch.randn(6, 3)), ValueError, "input channels of x and weight"),
    (dict(scale=torch.ones(5)), ValueError, "scale length"),
    (dict(x=torch.full((2, 3, 5, 4), float("nan"))), ValueError, "x contains NaN"),
])
def test_group_linear_max_errors(bad, exc, match):
    args = dict(x=torch.randn(2, 3, 5, 4), weight=torch.randn(6, 4), scale=torch.ones(6), shift=torch.zeros(6))
    args.update(bad)
    with pytest.raises(exc, match=f"group_linear_max: {match}"):
        group_linear_max(**args)
