"""linear_max: the fused kernels of every backend against the pure-PyTorch reference."""
import pytest
import torch

from flowam_fast.ops import backend, library, reference
from flowam_fast.ops.linear_max import linear_max

from tests.helpers import assert_same_across_runs_and_threads
from tests.ops.backends import CPP_BACKENDS, case_id, cases, each_backend

pytestmark = pytest.mark.skipif(not backend.has_cpu_kernels(), reason="flowam_fast._C is not built")

SLOPES = (0.0, 0.2, 1.0)
# Point counts off the 8-point micro-tile, channel counts off the 32/16-channel panel, Cin = 1.
SHAPES = [(3, 37, 5, 45), (1, 1, 3, 7), (2, 100, 64, 130), (1, 8, 1, 33), (4, 9, 16, 16)]


def _inputs(B, N, cin, cout, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, cin, generator=g, dtype=dtype)
    w = torch.randn(cout, cin, generator=g, dtype=dtype)
    # Negative scales are real (a BatchNorm with a negative gamma) and flip the channel's order.
    scale = torch.randn(cout, generator=g, dtype=dtype)
    shift = torch.randn(cout, generator=g, dtype=dtype)
    return x, w, scale, shift


def _first_argmax(values):
    """Index of the first maximum along dim 1 (the kernels' tie rule), independent of torch's."""
    N = values.shape[1]
    is_max = values == values.max(dim=1, keepdim=True).values
    n = torch.arange(N).view(1, N, 1).expand_as(values)
    return torch.where(is_max, n, N).min(dim=1).values


def _activation(x, w, scale, shift, slope):
    return torch.nn.functional.leaky_relu(torch.matmul(x, w.t()) * scale + shift, slope)


def _reference_cases(on):
    if on.interpreted:  # more points, input and output channels than one block each
        return [(dtype, slope, (2, 45, 20, 40)) for dtype in (torch.float32, torch.float64) for slope in SLOPES]
    if on.backend == "cpu":
        return [(dtype, slope, shape) for dtype in (torch.float32, torch.float64) for slope in SLOPES
                for shape in SHAPES]
    dtypes = [(torch.float32, SLOPES[0]), (torch.float64, SLOPES[1]), (torch.float32, SLOPES[2])]
    return [(dtype, slope, shape) for dtype, slope in dtypes for shape in SHAPES + [(2, 300, 128, 1030),
                                                                                     (3, 129, 7, 129)]]


@pytest.mark.parametrize("on, dtype, slope, shape", cases(_reference_cases))
def test_forward_matches_reference(on, dtype, slope, shape):
    x, w, scale, shift = _inputs(*shape, dtype=dtype)
    out = linear_max(*on(x, w, scale, shift), slope, backend=on.backend).cpu()
    ref = reference.linear_max(x, w, scale, shift, slope)
    assert out.dtype == dtype and out.shape == ref.shape
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)


@each_backend
@pytest.mark.parametrize("slope", SLOPES)
def test_argmax_is_a_maximizer(on, slope):
    x, w, scale, shift = _inputs(3, 50, 12, on.size(70, 40), dtype=torch.float64)
    out, argmax = (t.cpu() for t in library.kernel(on.backend, "linear_max_forward")(*on(x, w, scale, shift), slope))
    act = _activation(x, w, scale, shift, slope)
    assert argmax.dtype == torch.int64
    assert torch.equal(argmax, _first_argmax(act))
    torch.testing.assert_close(act.gather(1, argmax.unsqueeze(1)).squeeze(1), out, rtol=1e-12, atol=1e-12)


@each_backend
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("slope", SLOPES)
def test_ties_go_to_the_smallest_point_index(on, dtype, slope):
    # Small integers: every product and sum is exact, so the copies of a point tie exactly
    # whatever order a GEMM adds in, and distinct points rarely do.
    g = torch.Generator().manual_seed(4)
    base, w, scale, shift = (torch.randint(-3, 4, shape, generator=g).to(dtype) for shape in
                             ((2, 6, 5), (40, 5), (40,), (40,)))
    perm = torch.randperm(18, generator=torch.Generator().manual_seed(0))
    x = base.repeat(1, 3, 1)[:, perm].contiguous()  # every point three times, in shuffled order
    _, argmax = library.kernel(on.backend, "linear_max_forward")(*on(x, w, scale, shift), slope)
    argmax = argmax.cpu()
    act = _activation(base, w, scale, shift, slope)[:, perm % 6]
    assert torch.equal(argmax, _first_argmax(act))
    assert (perm[argmax] < 6).sum() < argmax.numel()  # the winners are not all first copies by accident
    # The gradient reaches the first copy only.
    xg = on(x).requires_grad_(True)
    linear_max(xg, *on(w, scale, shift), slope, backend=on.backend).sum().backward()
    hit = xg.grad.cpu().abs().sum(-1) > 0
    first = torch.zeros_like(hit)
    first.scatter_(1, argmax, True)
    assert not (hit & ~first).any()


@each_backend
def test_dead_relu_channel_is_zero_at_point_zero(on):
    x, w, scale, shift = _inputs(2, 20, 4, 9)
    scale = scale.abs()
    shift[3] = -1e3  # channel 3 is negative at every point
    out, argmax = library.kernel(on.backend, "linear_max_forward")(*on(x, w, scale, shift), 0.0)
    assert torch.all(out[:, 3] == 0) and torch.all(argmax[:, 3] == 0)
    xg = on(x).requires_grad_(True)
    g = on(torch.zeros(2, 9))
    g[:, 3] = 1.0
    (linear_max(xg, *on(w, scale, shift), 0.0, backend=on.backend) * g).sum().backward()
    assert torch.count_nonzero(xg.grad) == 0


@each_backend
@pytest.mark.parametrize("slope", SLOPES)
def test_derivative_at_the_kink_is_the_slope(on, slope):
    # Point 2 is the origin, so z = shift = 0 exactly there; every other point has z < 0.
    x = -torch.rand(2, 5, 3, dtype=torch.float64) - 0.1
    x[:, 2] = 0.0
    w = torch.rand(4, 3, dtype=torch.float64) + 0.1
    scale, shift = torch.rand(4, dtype=torch.float64) + 0.5, torch.zeros(4, dtype=torch.float64)
    fast = [on(t).requires_grad_(True) for t in (x, w, scale, shift)]
    ref = [t.clone().requires_grad_(True) for t in (x, w, scale, shift)]
    linear_max(*fast, negative_slope=slope, backend=on.backend).sum().backward()
    reference.linear_max(*ref, negative_slope=slope).sum().backward()
    assert torch.equal(fast[3].grad.cpu(), torch.full((4,), 2.0 * slope, dtype=torch.float64))
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a.grad.cpu(), b.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("on", CPP_BACKENDS, ids=case_id)
@pytest.mark.parametrize("slope", SLOPES)
def test_gradcheck_all_inputs(on, slope):
    x, w, scale, shift = (on(t).requires_grad_(True) for t in _inputs(2, 7, 4, 6, dtype=torch.float64, seed=1))
    assert torch.autograd.gradcheck(lambda *a: linear_max(*a, negative_slope=slope, backend=on.backend),
                                    (x, w, scale, shift))


@each_backend
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("slope", SLOPES)
def test_backward_matches_reference(on, dtype, slope):
    inputs = _inputs(3, on.size(61, 45), 24, on.size(70, 40), dtype=dtype, seed=2)
    fast = [on(t).requires_grad_(True) for t in inputs]
    ref = [t.clone().requires_grad_(True) for t in inputs]
    g = torch.randn(3, inputs[1].shape[0], dtype=dtype)
    (linear_max(*fast, negative_slope=slope, backend=on.backend) * on(g)).sum().backward()
    (reference.linear_max(*ref, negative_slope=slope) * g).sum().backward()
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a.grad.cpu(), b.grad, rtol=tol, atol=tol)


@each_backend
def test_defaults_and_non_contiguous_input(on):
    g = torch.Generator().manual_seed(5)
    x_cf = on(torch.randn(2, 5, 33, generator=g))  # (B, Cin, N): a channels-first model layout
    x = x_cf.transpose(1, 2)
    assert not x.is_contiguous()
    w = on(torch.randn(20, 5, generator=g))
    ones, zeros = on(torch.ones(20), torch.zeros(20))
    out = linear_max(x, w, backend=on.backend)
    torch.testing.assert_close(out, reference.linear_max(x, w, ones, zeros))
    xg = x_cf.clone().requires_grad_(True)
    linear_max(xg.transpose(1, 2), w, backend=on.backend).sum().backward()
    xr = x_cf.clone().requires_grad_(True)
    reference.linear_max(xr.transpose(1, 2), w, ones, zeros).sum().backward()
    torch.testing.assert_close(xg.grad, xr.grad)


def test_mixed_dtypes_compute_in_float64():
    x, w, scale, shift = _inputs(2, 10, 3, 8)
    out = linear_max(x, w.double(), scale, shift, backend="cpu")
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, reference.linear_max(x.double(), w.double(), scale.double(), shift.double()))


def test_torch_backend_is_the_reference():
    x, w, scale, shift = _inputs(2, 10, 3, 8)
    assert torch.equal(linear_max(x, w, scale, shift, 0.2, backend="torch"),
                       reference.linear_max(x, w, scale, shift, 0.2))


@each_backend
def test_deterministic_across_runs_and_thread_counts(on):
    # Large enough that the forward and both backward passes split across threads (blocks).
    inputs = on(*_inputs(5, on.size(300, 40), on.size(256, 12), on.size(512, 40), seed=3))
    g = on(torch.randn(5, inputs[1].shape[0]))

    def run():
        ts = [t.clone().requires_grad_(True) for t in inputs]
        out = linear_max(*ts, negative_slope=0.2, backend=on.backend)
        (out * g).sum().backward()
        return [out.detach()] + [t.grad for t in ts]

    assert_same_across_runs_and_threads(run)


@pytest.mark.parametrize("bad, err, match", [
    (dict(x=torch.randn(5, 3)), ValueError, "x must have 3 dimensions"),
    (dict(x=torch.randint(0, 3, (2, 5, 3))), TypeError, "floating point"),
    (dict(x=torch.tensor([[[float("nan"), 0.0, 0.0]]])), ValueError, "NaN or Inf"),
    (dict(x=torch.empty(2, 0, 3)), ValueError, "empty"),
    (dict(weight=torch.randn(4, 2)), ValueError, "input channels of x and weight"),
    (dict(weight=torch.randn(4, 3, 1)), ValueError, "weight must have 2 dimensions"),
    (dict(scale=torch.randn(5)), ValueError, "scale length"),
    (dict(shift=torch.randn(4, 1)), ValueError, "shift must have 1 dimensions"),
    (dict(negative_slope=float("inf")), ValueError, "negative_slope must be finite"),
    (dict(negative_slope="0.1"), TypeError, "negative_slope must be a float"),
    (dict(backend="gpu"), ValueError, "unknown backend"),
    (dict(backend="cuda"), ValueError, "needs CUDA tensors"),
])
def test_front_end_errors(bad, err, match):
    args = dict(x=torch.randn(2, 5, 3), weight=torch.randn(4, 3), scale=torch.randn(4), shift=torch.randn(4),
                negative_slope=0.0, backend="cpu")
    args.update(bad)
    with pytest.raises(err, match=match):
        linear_max(**args)


def _fwd_args(**bad):
    args = dict(x=torch.randn(2, 5, 3), weight=torch.randn(4, 3), scale=torch.randn(4), shift=torch.randn(4),
                negative_slope=0.0)
    args.update(bad)
    return list(args.values())


@pytest.mark.parametrize("on", CPP_BACKENDS, ids=case_id)
@pytest.mark.parametrize("bad, match", [
    (dict(x=torch.randn(2, 3, 5).transpose(1, 2)), "x must be contiguous"),
    (dict(x=torch.randn(2, 5, 3, dtype=torch.float16)), "float32 or float64"),
    (dict(x=torch.randn(10, 3)), "x must have 3 dimensions"),
    (dict(x=torch.empty(2, 0, 3)), "no points"),
    (dict(weight=torch.randn(4, 3, dtype=torch.float64)), "dtype of x"),
    (dict(weight=torch.randn(4, 2)), "input channels"),
    (dict(scale=torch.randn(3)), "scale and shift must have"),
    (dict(shift=torch.randn(5)), "scale and shift must have"),
    (dict(negative_slope=float("nan")), "negative_slope must be finite"),
])
def test_direct_forward_call_errors(on, bad, match):
    with pytest.raises(RuntimeError, match=match):
        library.kernel(on.backend, "linear_max_forward")(*on(*_fwd_args(**bad)))


@pytest.mark.parametrize("on", CPP_BACKENDS, ids=case_id)
@pytest.mark.parametrize("bad, match", [
    (dict(argmax=torch.full((2, 4), 5)), r"outside \[0, 5\)"),
    (dict(argmax=torch.full((2, 4), -1)), r"outside \[0, 5\)"),
    (dict(argmax=torch.zeros(2, 4, dtype=torch.int32)), "argmax must be int64"),
    (dict(argmax=torch.zeros(2, 3, dtype=torch.int64)), "argmax must have shape"),
    (dict(grad_out=torch.randn(4, 2)), "grad_out must have shape"),
    (dict(grad_out=torch.randn(2, 4, dtype=torch.float64)), "grad_out must have the dtype of x"),
    (dict(grad_out=torch.randn(4, 2).t()), "grad_out must be contiguous"),
])
def test_direct_backward_call_errors(on, bad, match):
    x, w, scale, shift, slope = _fwd_args()
    args = dict(grad_out=torch.randn(2, 4), x=x, weight=w, scale=scale, shift=shift,
                argmax=torch.zeros(2, 4, dtype=torch.int64), negative_slope=slope)
    args.update(bad)
    with pytest.raises(RuntimeError, match=match):
        library.kernel(on.backend, "linear_max_backward")(*on(*args.values()))
