"""quantile_align (FlowAM's alignment="quantiles"), on the CPU kernel and the torch reference,
against a direct float64 computation of the per-channel Wasserstein-2 distance, its gradient by
gradcheck, the kernel against the reference, and input validation."""
import numpy as np
import pytest
import torch

from flowam_fast.ops import library, quantile_align
from flowam_fast.ops.quantile_align import quantile_levels, resample_quantiles, sample_quantiles


def _case(B=4, C=3, N=20, K=3, Q=7, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    acts = (torch.randn(B, C, N, generator=g, dtype=torch.float64) * 2 + 0.5).to(dtype)
    labels = torch.randint(0, K, (B,), generator=g)
    q = torch.randn(K, C, Q, generator=g, dtype=torch.float64).sort(-1).values
    sigma = torch.rand(K, C, generator=g, dtype=torch.float64) + 0.1
    return acts, labels, q, sigma


def _direct(acts, labels, q, sigma):
    """One channel at a time in NumPy: sort, read the class's quantile function at (i + 0.5)/N
    by np.interp over the stored levels, mean squared difference over s^2, mean over channels."""
    a, q, sigma = acts.double().numpy(), q.double().numpy(), sigma.double().numpy()
    B, C, N = a.shape
    stored = (np.arange(q.shape[-1]) + 0.5) / q.shape[-1]
    wanted = (np.arange(N) + 0.5) / N
    out = np.zeros(B)
    for b in range(B):
        k = int(labels[b])
        for c in range(C):
            target = np.interp(wanted, stored, q[k, c])
            out[b] += np.mean((np.sort(a[b, c]) - target) ** 2) / (sigma[k, c] + 1e-3) ** 2 / C
    return out


BACKENDS = ["cpu", "torch"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("Q", [1, 7, 20, 64])
def test_matches_the_direct_computation(Q, backend):
    acts, labels, q, sigma = _case(Q=Q)
    np.testing.assert_allclose(quantile_align(acts, labels, q, sigma, backend=backend).numpy(),
                               _direct(acts, labels, q, sigma), rtol=1e-12, atol=1e-14)
    got32 = quantile_align(acts.float(), labels, q.float(), sigma.float(), backend=backend)
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.numpy(), _direct(acts, labels, q, sigma), rtol=1e-5)


def test_is_the_squared_wasserstein_distance_between_equal_sized_clouds():
    """At Q = N it is W2^2 between two empirical distributions of N values: the optimal
    matching in 1-D pairs the sorted values, checked against the brute-force best assignment."""
    from itertools import permutations

    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(1, 1, 6, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    sigma = torch.full((1, 1), 1.0 - 1e-3, dtype=torch.float64)  # s = 1
    got = float(quantile_align(a, torch.zeros(1, dtype=torch.long), b.sort().values.view(1, 1, 6), sigma))
    best = min(float(((a[0, 0] - b[list(p)]) ** 2).mean()) for p in permutations(range(6)))
    assert got == pytest.approx(best, rel=1e-12)


def test_gaussian_limit_is_the_moment_loss():
    """For Gaussians W2^2 = (m1 - m2)^2 + (s1 - s2)^2: with many points and levels the two
    alignments agree, so one flow weight means the same for both."""
    from flowam_fast.ops import reference

    n = 4000
    probit = torch.distributions.Normal(0.0, 1.0).icdf(quantile_levels(n))
    acts = (probit * 1.5 + 0.3).view(1, 1, n)
    q = (probit * 0.7 - 0.2).view(1, 1, n)
    sigma = torch.full((1, 1), 0.7, dtype=torch.float64)
    labels = torch.zeros(1, dtype=torch.long)
    moments = reference.flow_align(acts, labels, torch.full((1, 1), -0.2, dtype=torch.float64), sigma)
    assert float(quantile_align(acts, labels, q, sigma)) == pytest.approx(float(moments), rel=2e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient(backend):
    acts, labels, q, sigma = _case(B=3, C=2, N=9, Q=5, seed=1)
    acts.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: quantile_align(a, labels, q, sigma, backend=backend), (acts,))
    # The flows are constants: no gradient reaches them even when they ask for one.
    q2 = q.clone().requires_grad_(True)
    quantile_align(acts, labels, q2, sigma, backend=backend).sum().backward()
    assert q2.grad is None


def test_resampling():
    q = torch.tensor([[0.0, 1.0, 4.0]], dtype=torch.float64)
    assert torch.equal(resample_quantiles(q, 3), q)
    # Levels 1/12, 3/12, ..., 11/12 read on the stored grid 1/6, 3/6, 5/6; constant at the tails.
    np.testing.assert_allclose(resample_quantiles(q, 6).numpy(), [[0.0, 0.25, 0.75, 1.75, 3.25, 4.0]])
    acts = torch.tensor([[[3.0, 1.0, 2.0, 0.0]]], dtype=torch.float64)
    np.testing.assert_allclose(sample_quantiles(acts, 2).numpy(), [[[0.5, 2.5]]])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B, N, C", [(2, 1, 3), (3, 70, 11), (2, 513, 40)])
def test_sample_quantiles_kernel_sorts_as_torch_does(dtype, B, N, C):
    """The radix sort (float32) and the stable sort (float64) give torch.sort's values exactly,
    with ties and signed zeros, on (B, C, N) and on points-last memory."""
    g = torch.Generator().manual_seed(11)
    mem = torch.randn(B, N, C, generator=g, dtype=torch.float64).to(dtype)
    mem[:, ::3] = mem[:, :1].clone()  # ties
    mem[0, :, 0] = 0.0
    mem[0, ::2, 0] = -0.0
    for acts in (mem.transpose(1, 2), mem.transpose(1, 2).contiguous()):
        got = sample_quantiles(acts, 7, backend="cpu")
        assert torch.equal(got, sample_quantiles(acts, 7, backend="torch")) and got.dtype == dtype
        assert torch.equal(library.kernel("cpu", "quantile_sort")(mem, True), acts.sort(-1).values)
    with pytest.raises(RuntimeError, match="no points"):
        library.kernel("cpu", "quantile_sort")(mem[:, :0].contiguous(), True)
    with pytest.raises(ValueError, match="NaN"):
        sample_quantiles(mem.transpose(1, 2).masked_fill(mem.transpose(1, 2) > 1, float("nan")), 7)


def test_validation():
    acts, labels, q, sigma = _case()
    with pytest.raises(ValueError, match="3 dimensions"):
        quantile_align(acts, labels, q[..., 0], sigma)
    with pytest.raises(ValueError, match="disagree"):
        quantile_align(acts, labels, q, sigma[:, :2])
    with pytest.raises(ValueError, match="channels"):
        quantile_align(acts[:, :2], labels, q, sigma)
    with pytest.raises(ValueError, match="outside"):
        quantile_align(acts, labels + 5, q, sigma)
    with pytest.raises(ValueError, match="NaN"):
        quantile_align(acts.masked_fill(acts > 1, float("nan")), labels, q, sigma)
    bad = q.clone()
    bad[labels[0]] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf for a class"):
        quantile_align(acts, labels, bad, sigma)
    unused = q.clone()
    unused[[k for k in range(3) if k not in labels.tolist()]] = float("nan")  # classes not in labels may lack flows
    quantile_align(acts, labels, unused, sigma)
    with pytest.raises(ValueError, match="non-negative"):
        quantile_align(acts, labels, q, -sigma)
    with pytest.raises(ValueError, match="at least one level"):
        quantile_levels(0)


@pytest.mark.parametrize("N", [1, 5, 256, 700])
def test_kernel_equals_the_reference_in_float32(N):
    """The radix sort on float32 bit patterns: negative, positive and tiny values, rows whose
    values share their high bytes (skipped passes), and a weighted sum's gradient."""
    g = torch.Generator().manual_seed(N)
    B, C, K = 5, 7, 4
    acts = torch.randn(B, C, N, generator=g) * torch.logspace(-3, 2, C).view(1, C, 1)
    acts[0, 0] = 1.0 + torch.randperm(N, generator=g) * 2.0 ** -20  # one exponent and high bytes, no ties
    acts[1, 1] = -acts[1, 1].abs()  # all negative
    labels = torch.randint(0, K, (B,), generator=g)
    q = torch.randn(K, C, 16, generator=g).sort(-1).values
    sigma = torch.rand(K, C, generator=g) + 0.05
    w = torch.rand(B, generator=g)
    out = {}
    for backend in BACKENDS:
        a = acts.clone().requires_grad_(True)
        loss = quantile_align(a, labels, q, sigma, backend=backend)
        (loss * w).sum().backward()
        out[backend] = (loss.detach(), a.grad)
    torch.testing.assert_close(out["cpu"][0], out["torch"][0], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out["cpu"][1], out["torch"][1], rtol=1e-5, atol=1e-9)


def test_kernel_is_deterministic_with_ties():
    """Equal values take the quantiles in index order: the same loss and gradient every call,
    and the loss equals the reference's (which tied value gets which level does not change it)."""
    acts = torch.tensor([[[0.5, -1.0, 0.5, 0.5, 2.0, -1.0, 0.0, 0.5]]]).repeat(3, 4, 1)
    labels = torch.tensor([0, 1, 0])
    q = torch.linspace(-2, 2, 6).repeat(2, 4, 1)
    sigma = torch.ones(2, 4)
    runs = []
    for _ in range(3):
        a = acts.clone().requires_grad_(True)
        loss = quantile_align(a, labels, q, sigma, backend="cpu")
        loss.sum().backward()
        runs.append((loss.detach(), a.grad))
    assert all(torch.equal(r[0], runs[0][0]) and torch.equal(r[1], runs[0][1]) for r in runs)
    torch.testing.assert_close(runs[0][0], quantile_align(acts, labels, q, sigma, backend="torch"))


@pytest.mark.parametrize("N", [63, 64, 65, 700, 1024, 1025, 2500])
@pytest.mark.parametrize("points_last", [False, True])
def test_kernel_gives_tied_values_their_levels_in_index_order(N, points_last):
    """Float32 rows of up to 1024 points go through the bitonic network on AVX-512 hosts (padded
    to 64, 128, ... words), longer ones through the radix sort; both rank equal values in index
    order, as a stable sort does, so each point's gradient is that of its stable rank's level."""
    g = torch.Generator().manual_seed(N)
    B, C, K = 2, 19, 3  # 19 channels: a full tile of 16 and a partial one
    acts = torch.randint(-8, 8, (B, C, N), generator=g).float() * 0.25  # many ties
    labels = torch.tensor([0, 2])
    q = torch.randn(K, C, 9, generator=g).sort(-1).values
    sigma = torch.rand(K, C, generator=g) + 0.1
    mem = acts.transpose(1, 2).contiguous() if points_last else acts
    a = mem.clone().requires_grad_(True)
    quantile_align(a.transpose(1, 2) if points_last else a, labels, q, sigma, backend="cpu").sum().backward()
    grad = a.grad.transpose(1, 2) if points_last else a.grad
    order = acts.sort(dim=-1, stable=True).indices
    target = resample_quantiles(q[labels].double(), N)
    s2 = (sigma[labels].double() + 1e-3).square().unsqueeze(-1)
    per_rank = 2 * (acts.double().gather(-1, order) - target) / s2 / (N * C)
    expected = torch.empty_like(per_rank).scatter_(-1, order, per_rank)
    torch.testing.assert_close(grad.double(), expected, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_points_last_memory_is_read_in_place(dtype, monkeypatch):
    """A (B, C, N) view of points-last memory (what the fast paths give the flow term) goes to
    the kernel as it is, with no transposing copy, and gives the contiguous input's loss and
    gradient bit for bit; the gradient comes back in the same layout."""
    g = torch.Generator().manual_seed(9)
    B, N, C = 3, 70, 11
    mem = torch.randn(B, N, C, generator=g, dtype=torch.float64).to(dtype)
    labels = torch.tensor([1, 0, 1])
    q = torch.randn(2, C, 9, generator=g, dtype=torch.float64).sort(-1).values.to(dtype)
    sigma = torch.rand(2, C, generator=g, dtype=torch.float64).to(dtype) + 0.1
    view = mem.clone().requires_grad_(True)
    dense = mem.transpose(1, 2).contiguous().requires_grad_(True)
    layouts = []
    real = library.kernel("cpu", "quantile_align_forward")
    lookup = library.kernel
    def spy(a, *rest):
        layouts.append((a.shape, rest[-1]))
        return real(a, *rest)

    monkeypatch.setattr(library, "kernel", lambda b, name: spy if name == "quantile_align_forward" else lookup(b, name))
    w = torch.tensor([0.5, 1.0, 2.0], dtype=dtype)
    got = quantile_align(view.transpose(1, 2), labels, q, sigma, backend="cpu")
    want = quantile_align(dense, labels, q, sigma, backend="cpu")
    (got * w).sum().backward()
    (want * w).sum().backward()
    assert layouts == [((B, N, C), True), ((B, C, N), False)]
    assert torch.equal(got, want)
    assert torch.equal(view.grad, dense.grad.transpose(1, 2))


def test_kernel_refuses_bad_direct_calls():
    fwd = library.kernel("cpu", "quantile_align_forward")
    a, lab, q, s = torch.rand(2, 3, 8), torch.zeros(2, dtype=torch.long), torch.rand(4, 3, 5), torch.rand(4, 3)
    fwd(a, lab, q, s, False)
    fwd(a.transpose(1, 2).contiguous(), lab, q, s, True)
    with pytest.raises(RuntimeError, match="quantiles must have shape"):
        fwd(a, lab, q[:, :2].contiguous(), s, False)
    with pytest.raises(RuntimeError, match="quantiles must have shape"):
        fwd(a, lab, q, s, True)  # (B, N, C) = (2, 3, 8) has 8 channels
    with pytest.raises(RuntimeError, match="inv_scale must have shape"):
        fwd(a, lab, q, s[:, :2].contiguous(), False)
    with pytest.raises(RuntimeError, match="dtype"):
        fwd(a, lab, q.double(), s, False)
    with pytest.raises(RuntimeError, match="contiguous"):
        fwd(a.transpose(1, 2).contiguous().transpose(1, 2), lab, q, s, False)
    with pytest.raises(RuntimeError, match="no points"):
        fwd(a[:, :, :0].contiguous(), lab, q, s, False)
    with pytest.raises(RuntimeError, match="no points"):
        fwd(a.transpose(1, 2)[:, :0].contiguous(), lab, q, s, True)
    with pytest.raises(RuntimeError, match="labels has values outside"):
        fwd(a, lab + 4, q, s, False)
    with pytest.raises(RuntimeError, match="labels must be int64"):
        fwd(a, lab.int(), q, s, False)
    with pytest.raises(ValueError, match="CPU only|cpu' only"):
        library.kernel("cuda", "quantile_align_forward")
    with pytest.raises(ValueError, match="backend 'cuda' needs CUDA tensors"):
        quantile_align(a, torch.zeros(2, dtype=torch.long), torch.rand(1, 3, 4), torch.rand(1, 3), backend="cuda")
