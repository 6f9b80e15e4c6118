"""pytest-benchmark micro-benchmarks of linear_max, flow_stats and flow_align, fused ("cpu")
against the reference ("torch"), at one PointNet-sized batch each.

    pytest benchmarks/test_bench_linear_flow.py --benchmark-group-by=param:op
"""
import pytest
import torch

from flowam_fast.ops import backend
from flowam_fast.ops.flow import flow_align, flow_stats
from flowam_fast.ops.linear_max import linear_max

pytest.importorskip("pytest_benchmark")
pytestmark = pytest.mark.skipif(not backend.has_cpu_kernels(), reason="flowam_fast._C is not built")

BACKENDS = ["cpu", "torch"]
K = 40


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def pointnet_global():
    """B=16 clouds of 1024 points through PointNet's 128 -> 1024 layer."""
    g = _gen()
    x = torch.randn(16, 1024, 128, generator=g)
    w = torch.randn(1024, 128, generator=g) / 128**0.5
    return x, w, torch.rand(1024, generator=g) + 0.5, torch.randn(1024, generator=g) * 0.1


@pytest.fixture(scope="module")
def activations():
    """B=16 samples of a 128-channel per-point layer over 1024 points, with labels and a flow."""
    g = _gen(1)
    acts = torch.relu(torch.randn(16, 128, 1024, generator=g) + 0.3)
    labels = torch.randint(0, K, (16,), generator=g)
    return acts, labels, torch.rand(K, 128, generator=g), torch.rand(K, 128, generator=g) + 0.1


@pytest.mark.parametrize("impl", BACKENDS)
def test_linear_max_forward(benchmark, pointnet_global, impl):
    benchmark.extra_info["op"] = "linear_max fwd"
    with torch.no_grad():
        out = benchmark(linear_max, *pointnet_global, 0.0, backend=impl)
    assert out.shape == (16, 1024)


@pytest.mark.parametrize("impl", BACKENDS)
def test_linear_max_forward_backward(benchmark, pointnet_global, impl):
    benchmark.extra_info["op"] = "linear_max fwd+bwd"
    x, w, scale, shift = pointnet_global
    x = x.clone().requires_grad_(True)

    def step():
        return torch.autograd.grad(linear_max(x, w, scale, shift, 0.0, backend=impl).sum(), x)[0]

    assert benchmark(step).shape == x.shape


@pytest.mark.parametrize("impl", BACKENDS)
def test_flow_stats(benchmark, activations, impl):
    benchmark.extra_info["op"] = "flow_stats"
    acts, labels, _, _ = activations
    count, _, _ = benchmark(flow_stats, acts, labels, K, backend=impl)
    assert int(count.sum()) == acts.shape[0] * acts.shape[2]


@pytest.mark.parametrize("impl", BACKENDS)
def test_flow_align_forward_backward(benchmark, activations, impl):
    benchmark.extra_info["op"] = "flow_align fwd+bwd"
    acts, labels, mu, sigma = activations
    a = acts.clone().requires_grad_(True)

    def step():
        return torch.autograd.grad(flow_align(a, labels, mu, sigma, backend=impl).sum(), a)[0]

    assert benchmark(step).shape == a.shape
