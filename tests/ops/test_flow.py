"""flow_stats and flow_align: the kernels of every backend against direct float64 computations
and the pure-PyTorch reference."""
import pytest
import torch

from flowam_fast.ops import backend, library, reference
from flowam_fast.ops.flow import FlowStats, flow_align, flow_stats, flow_std, merge_flow_stats

from tests.helpers import assert_same_across_runs_and_threads
from tests.ops.backends import CPP_BACKENDS, case_id, each_backend

pytestmark = pytest.mark.skipif(not backend.has_cpu_kernels(), reason="flowam_fast._C is not built")


def _acts(B, C, N, dtype=torch.float32, seed=0, offset=0.0):
    g = torch.Generator().manual_seed(seed)
    spread = 3 * torch.rand(1, C, 1, generator=g, dtype=torch.float64)  # channels of different scales
    return (torch.randn(B, C, N, generator=g, dtype=torch.float64) * spread + offset).to(dtype)


def _direct_stats(acts, labels, K):
    """Per class: concatenate every point of every sample of the class, in float64."""
    a = acts.double()
    C = a.shape[1]
    count = torch.zeros(K, dtype=torch.int64)
    mean, m2 = torch.zeros(K, C, dtype=torch.float64), torch.zeros(K, C, dtype=torch.float64)
    for k in range(K):
        rows = [a[b] for b in range(a.shape[0]) if labels[b] == k]
        pts = torch.cat(rows, 1) if rows else torch.empty(C, 0, dtype=torch.float64)
        count[k] = pts.shape[1]
        if pts.shape[1]:
            mean[k] = pts.mean(1)
            m2[k] = (pts - mean[k, :, None]).pow(2).sum(1)
    return count, mean, m2


def _assert_stats_close(got, want, rtol=1e-12):
    assert torch.equal(got[0], want[0])
    torch.testing.assert_close(got[1], want[1], rtol=rtol, atol=rtol)
    torch.testing.assert_close(got[2], want[2], rtol=rtol, atol=rtol)


@each_backend
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B, C, N", [(7, 5, 33), (1, 3, 1), (4, 64, 256)])
def test_stats_match_direct_computation(on, dtype, B, C, N):
    if on.interpreted:
        B, C, N = min(B, 3), min(C, 40), min(N, 150)
    acts = _acts(B, C, N, dtype)
    labels = torch.tensor([0, 3, 0, 1, 3, 3, 0][:B])
    got = FlowStats(*(t.cpu() for t in flow_stats(*on(acts, labels), 5, backend=on.backend)))
    assert isinstance(got, FlowStats)
    assert got.count.dtype == torch.int64 and got.mean.dtype == got.m2.dtype == torch.float64
    want = _direct_stats(acts, labels, 5)
    _assert_stats_close(got, want)
    assert got.count[2] == 0 and got.count[4] == 0  # classes without samples
    _assert_stats_close(flow_stats(acts, labels, 5, backend="torch"), want)


@each_backend
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B, N, C", [(5, 40, 6), (1, 1, 3), (7, 300, 33)])
def test_stats_read_points_last_memory_as_it_is(on, dtype, B, N, C):
    if on.interpreted:
        B, N = min(B, 3), min(N, 150)
    base, labels = on(_acts(B, N, C, dtype, seed=14, offset=5.0), torch.arange(B) % 3)  # (B, N, C) memory
    got = FlowStats(*(t.cpu() for t in flow_stats(base.transpose(1, 2), labels, 3, backend=on.backend)))
    _assert_stats_close(got, _direct_stats(base.transpose(1, 2).cpu(), labels.cpu(), 3),
                        rtol=1e-5 if dtype == torch.float32 else 1e-12)
    kernel = library.kernel(on.backend, "flow_stats")
    count, mean, m2 = kernel(base, labels, 3, True)
    want = kernel(base.transpose(1, 2).contiguous(), labels, 3, False)
    assert torch.equal(count, want[0])
    torch.testing.assert_close(mean, want[1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(m2, want[2], rtol=1e-12, atol=1e-10)


@each_backend
def test_stats_precise_with_a_large_mean(on):
    acts = _acts(6, 4, 500, torch.float32, offset=1e4)  # spread ~1 on a mean of 1e4
    labels = torch.tensor([1, 1, 0, 1, 0, 1])
    got = tuple(t.cpu() for t in flow_stats(*on(acts, labels), 2, backend=on.backend))
    _assert_stats_close(got, _direct_stats(acts, labels, 2), rtol=1e-10)


def test_merge_of_two_halves_is_the_whole():
    acts = _acts(10, 6, 40, torch.float64, seed=1)
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 2, 2, 1, 3])  # class 3 in the second half only, 4 in none
    whole = flow_stats(acts, labels, 5, backend="cpu")
    first = flow_stats(acts[:5], labels[:5], 5, backend="cpu")
    second = flow_stats(acts[5:], labels[5:], 5, backend="cpu")
    for merged in (first.merge(second), merge_flow_stats(tuple(second), tuple(first))):
        _assert_stats_close(merged, whole)
    empty = FlowStats(torch.zeros(5, dtype=torch.int64), torch.zeros(5, 6, dtype=torch.float64),
                      torch.zeros(5, 6, dtype=torch.float64))
    _assert_stats_close(empty.merge(whole), whole, rtol=0)


def test_std_is_the_population_std():
    acts = _acts(5, 3, 20, torch.float64, seed=2)
    labels = torch.tensor([0, 0, 2, 0, 2])
    stats = flow_stats(acts, labels, 3, backend="cpu")
    std = stats.std
    torch.testing.assert_close(std, flow_std(stats.count, stats.m2), rtol=0, atol=0, equal_nan=True)
    pts = torch.cat([acts[0], acts[1], acts[3]], 1)
    torch.testing.assert_close(std[0], pts.std(1, unbiased=False))
    assert torch.isnan(std[1]).all()  # no samples: no flow


@each_backend
def test_stats_deterministic_across_runs_and_thread_counts(on):
    acts = on(_acts(16, 32, on.size(300, 60), seed=3))
    labels = on(torch.randint(0, 4, (16,), generator=torch.Generator().manual_seed(0)))
    assert_same_across_runs_and_threads(lambda: flow_stats(acts, labels, 4, backend=on.backend))


def _flow(K, C, dtype=torch.float64, seed=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(K, C, generator=g, dtype=dtype), torch.rand(K, C, generator=g, dtype=dtype) * 2


@each_backend
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B, C, N", [(4, 6, 50), (1, 3, 1), (3, 70, 129)])
def test_align_matches_reference(on, dtype, B, C, N):
    acts = _acts(B, C, N, dtype, seed=4)
    labels = torch.tensor([2, 0, 2, 1][:B])
    mu, sigma = _flow(3, C)
    got = flow_align(*on(acts, labels, mu, sigma), backend=on.backend).cpu()
    want = reference.flow_align(acts, labels, mu, sigma)
    assert got.dtype == dtype and got.shape == (B,)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)


@each_backend
def test_align_constant_channel_uses_the_std_eps(on):
    acts = _acts(2, 4, 30, torch.float64, seed=6)
    acts[:, 1] = 0.0  # a dead ReLU channel: std = sqrt(STD_EPS)
    acts[1, 2] = 3.0
    labels = torch.tensor([0, 1])
    mu, sigma = _flow(2, 4)
    sigma[:, 1] = 0.0
    a = on(acts).requires_grad_(True)
    r = acts.clone().requires_grad_(True)
    g = torch.tensor([0.7, -1.3], dtype=torch.float64)
    got = flow_align(a, *on(labels, mu, sigma), backend=on.backend)
    want = reference.flow_align(r, labels, mu, sigma)
    torch.testing.assert_close(got.cpu(), want, rtol=1e-12, atol=1e-12)
    (got * on(g)).sum().backward()
    (want * g).sum().backward()
    torch.testing.assert_close(a.grad.cpu(), r.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("on", CPP_BACKENDS, ids=case_id)
def test_align_gradcheck(on):
    acts = on(_acts(3, 4, 6, torch.float64, seed=7)).requires_grad_(True)
    labels, mu, sigma = on(torch.tensor([1, 0, 1]), *_flow(2, 4))
    assert torch.autograd.gradcheck(lambda a: flow_align(a, labels, mu, sigma, backend=on.backend), (acts,))


@each_backend
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_align_backward_matches_reference(on, dtype):
    acts = _acts(5, 40, on.size(200, 50), dtype, seed=8)
    labels = torch.tensor([0, 1, 2, 1, 0])
    mu, sigma = _flow(3, 40)
    g = torch.randn(5, dtype=dtype)
    a = on(acts).requires_grad_(True)
    r = acts.clone().requires_grad_(True)
    (flow_align(a, *on(labels, mu, sigma), backend=on.backend) * on(g)).sum().backward()
    (reference.flow_align(r, labels, mu, sigma) * g).sum().backward()
    tol = 1e-5 if dtype == torch.float32 else 1e-11
    torch.testing.assert_close(a.grad.cpu(), r.grad, rtol=tol, atol=tol * r.grad.abs().max().item())


@each_backend
def test_align_non_contiguous_int32_labels_and_constant_flow(on):
    base = on(_acts(3, 20, 5, seed=9))  # (B, N, C): points-last
    acts = base.transpose(1, 2)
    labels = on(torch.tensor([1, 0, 1], dtype=torch.int32))
    mu, sigma = on(*_flow(2, 5))
    mu.requires_grad_(True)
    sigma.requires_grad_(True)
    b = base.clone().requires_grad_(True)
    loss = flow_align(b.transpose(1, 2), labels, mu, sigma, backend=on.backend)
    torch.testing.assert_close(loss, reference.flow_align(acts, labels.long(), mu.detach(), sigma.detach()).float())
    loss.sum().backward()
    assert b.grad is not None and b.grad.shape == base.shape
    assert mu.grad is None and sigma.grad is None  # the flow is a constant


@each_backend
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B, N, C", [(4, 50, 6), (1, 1, 3), (3, 129, 70), (2, 7, 1)])
def test_align_reads_points_last_memory_as_it_is(on, dtype, B, N, C):
    """(B,C,N) views of (B,N,C) memory, as the fast paths give them, go to the kernel's
    points-last loops (no copy) and must agree with the reference, gradient included."""
    base = _acts(B, N, C, dtype, seed=12, offset=2.0)
    labels = torch.tensor([2, 0, 2, 1][:B])
    mu, sigma = _flow(3, C)
    g = torch.randn(B, dtype=dtype)
    a = on(base).requires_grad_(True)
    r = base.clone().requires_grad_(True)
    got = flow_align(a.transpose(1, 2), *on(labels, mu, sigma), backend=on.backend)
    want = reference.flow_align(r.transpose(1, 2), labels, mu, sigma)
    tol = 1e-5 if dtype == torch.float32 else 1e-11
    torch.testing.assert_close(got.cpu(), want, rtol=tol, atol=tol)
    (got * on(g)).sum().backward()
    (want * g).sum().backward()
    torch.testing.assert_close(a.grad.cpu(), r.grad, rtol=tol, atol=tol * max(1.0, r.grad.abs().max().item()))


@pytest.mark.parametrize("on", CPP_BACKENDS, ids=case_id)
def test_align_points_last_gradcheck_and_kernel_layout(on):
    base = on(_acts(3, 6, 4, torch.float64, seed=13)).requires_grad_(True)
    labels, mu, sigma = on(torch.tensor([1, 0, 1]), *_flow(2, 4))
    assert torch.autograd.gradcheck(lambda a: flow_align(a.transpose(1, 2), labels, mu, sigma, backend=on.backend),
                                    (base,))
    # The kernel call itself: points_last on (B,N,C) equals the default on the (B,C,N) copy.
    x = base.detach()
    forward, backward = (library.kernel(on.backend, f"flow_align_{part}") for part in ("forward", "backward"))
    pl = forward(x, labels, mu, sigma, True)
    cn = forward(x.transpose(1, 2).contiguous(), labels, mu, sigma, False)
    for p, c in zip(pl, cn):
        torch.testing.assert_close(p, c, rtol=1e-12, atol=1e-12)
    gl = on(torch.tensor([0.5, -2.0, 1.0], dtype=torch.float64))
    gp = backward(gl, x, labels, mu, sigma, pl[1], pl[2], True)
    gc = backward(gl, x.transpose(1, 2).contiguous(), labels, mu, sigma, cn[1], cn[2], False)
    assert gp.shape == x.shape
    torch.testing.assert_close(gp.transpose(1, 2), gc, rtol=1e-12, atol=1e-12)
    with pytest.raises(RuntimeError, match="mu has 4 channels but acts has 6"):
        forward(x.transpose(1, 2).contiguous(), labels, mu, sigma, True)


@each_backend
def test_align_deterministic_across_runs_and_thread_counts(on):
    acts = on(_acts(6, 30, on.size(1000, 100), seed=10))  # enough rows per call to split across threads
    labels, (mu, sigma) = on(torch.tensor([0, 1, 0, 1, 1, 0])), on(*_flow(2, 30))

    def run(points_last):
        a = (acts.transpose(1, 2).contiguous() if points_last else acts.clone()).requires_grad_(True)
        loss = flow_align(a.transpose(1, 2) if points_last else a, labels, mu, sigma, backend=on.backend)
        loss.sum().backward()
        return loss.detach(), a.grad

    assert_same_across_runs_and_threads(lambda: run(False))
    assert_same_across_runs_and_threads(lambda: run(True))


def test_torch_backend_is_the_reference():
    acts = _acts(3, 4, 10)
    labels = torch.tensor([0, 1, 0])
    mu, sigma = _flow(2, 4)
    assert torch.equal(flow_align(acts, labels, mu, sigma, backend="torch"),
                       reference.flow_align(acts, labels, mu, sigma))


@pytest.mark.parametrize("bad, err, match", [
    (dict(labels=torch.tensor([0, 3])), ValueError, r"outside \[0, 3\)"),
    (dict(labels=torch.tensor([-1, 0])), ValueError, r"outside \[0, 3\)"),
    (dict(labels=torch.tensor([0.0, 1.0])), TypeError, "int32 or int64"),
    (dict(labels=torch.tensor([0, 1, 2])), ValueError, "samples in acts and labels"),
    (dict(acts=torch.randn(2, 4)), ValueError, "acts must have 3 dimensions"),
    (dict(acts=torch.full((2, 4, 5), float("nan"))), ValueError, "NaN or Inf"),
    (dict(num_classes=0), ValueError, "num_classes must be positive"),
    (dict(num_classes=2.0), TypeError, "num_classes must be an int"),
    (dict(backend="cuda"), ValueError, "needs CUDA tensors"),
])
def test_stats_front_end_errors(bad, err, match):
    args = dict(acts=torch.randn(2, 4, 5), labels=torch.tensor([0, 2]), num_classes=3, backend="cpu")
    args.update(bad)
    with pytest.raises(err, match=match):
        flow_stats(**args)


def _nan_row(row):
    mu = torch.zeros(3, 4)
    mu[row] = float("nan")
    return mu


@pytest.mark.parametrize("bad, err, match", [
    (dict(labels=torch.tensor([0, 3])), ValueError, r"outside \[0, 3\)"),
    (dict(acts=torch.randn(2, 5, 6)), ValueError, "channels of acts and mu/sigma"),
    (dict(acts=torch.tensor(float("inf")).expand(2, 4, 6)), ValueError, "NaN or Inf"),
    (dict(mu=torch.zeros(2, 4)), ValueError, "one shape"),
    (dict(mu=torch.zeros(3, 4, 1), sigma=torch.ones(3, 4, 1)), ValueError, "mu must have 2 dimensions"),
    (dict(mu=_nan_row(2)), ValueError, "NaN or Inf for a class in labels"),
    (dict(sigma=-torch.ones(3, 4)), ValueError, "non-negative"),
])
def test_align_front_end_errors(bad, err, match):
    args = dict(acts=torch.randn(2, 4, 6), labels=torch.tensor([0, 2]), mu=torch.zeros(3, 4),
                sigma=torch.ones(3, 4), backend="cpu")
    args.update(bad)
    with pytest.raises(err, match=match):
        flow_align(**args)


def test_align_accepts_nan_flow_of_unused_class():
    loss = flow_align(torch.randn(2, 4, 6), torch.tensor([0, 2]), _nan_row(1), torch.ones(3, 4), backend="cpu")
    assert torch.isfinite(loss).all()


@pytest.mark.parametrize("on", CPP_BACKENDS, ids=case_id)
@pytest.mark.parametrize("bad, match", [
    (dict(acts=torch.randn(2, 5, 4).transpose(1, 2)), "acts must be contiguous"),
    (dict(acts=torch.randn(2, 4, 6, dtype=torch.float16)), "float32 or float64"),
    (dict(acts=torch.randn(2, 4, 0)), "no points"),
    (dict(labels=torch.tensor([0, 3])), r"label 3 is outside \[0, 3\)"),
    (dict(labels=torch.tensor([0, 1], dtype=torch.int32)), "labels must be int64"),
    (dict(labels=torch.tensor([0])), "labels has 1 entries"),
    (dict(num_classes=0), "num_classes must be positive"),
])
def test_direct_stats_call_errors(on, bad, match):
    args = dict(acts=torch.randn(2, 4, 6), labels=torch.tensor([0, 2]), num_classes=3)
    args.update(bad)
    with pytest.raises(RuntimeError, match=match):
        library.kernel(on.backend, "flow_stats")(*on(*args.values()))


def _align_args(**bad):
    args = dict(acts=torch.randn(2, 4, 6), labels=torch.tensor([0, 2]), mu=torch.zeros(3, 4),
                sigma=torch.ones(3, 4))
    args.update(bad)
    return args


@pytest.mark.parametrize("on", CPP_BACKENDS, ids=case_id)
@pytest.mark.parametrize("bad, match", [
    (dict(labels=torch.tensor([0, 3])), r"outside \[0, 3\)"),
    (dict(labels=torch.tensor([-2, 0])), r"outside \[0, 3\)"),
    (dict(mu=torch.zeros(3, 5)), "mu has 5 channels"),
    (dict(sigma=torch.ones(2, 4)), "mu and sigma must have one shape"),
    (dict(sigma=torch.ones(3, 4, dtype=torch.int64)), "sigma must be floating point"),
    (dict(mu=torch.zeros(0, 4), sigma=torch.ones(0, 4)), "no classes"),
    (dict(acts=torch.randn(2, 4)), "acts must have 3 dimensions"),
])
def test_direct_align_forward_call_errors(on, bad, match):
    with pytest.raises(RuntimeError, match=match):
        library.kernel(on.backend, "flow_align_forward")(*on(*_align_args(**bad).values()))


@pytest.mark.parametrize("on", CPP_BACKENDS, ids=case_id)
@pytest.mark.parametrize("bad, match", [
    (dict(grad_loss=torch.ones(3)), "grad_loss has 3 entries"),
    (dict(mean=torch.zeros(2, 4)), "mean must be float64"),
    (dict(std=torch.ones(2, 3, dtype=torch.float64)), r"std must have shape \(2, 4\)"),
    (dict(labels=torch.tensor([5, 0])), r"outside \[0, 3\)"),
])
def test_direct_align_backward_call_errors(on, bad, match):
    args = _align_args()
    args = dict(grad_loss=torch.ones(2), **args, mean=torch.zeros(2, 4, dtype=torch.float64),
                std=torch.ones(2, 4, dtype=torch.float64))
    args.update(bad)
    with pytest.raises(RuntimeError, match=match):
        library.kernel(on.backend, "flow_align_backward")(*on(*args.values()))
