"""pytest-benchmark micro-benchmarks of knn and edge_max, fused ("cpu") against the reference
("torch"), at one DGCNN-sized batch each (B=16, N=1024, k=20).

    pytest benchmarks/test_bench_knn_edge.py --benchmark-group-by=param:op
"""
import pytest
import torch

from flowam_fast.ops import backend, knn, reference
from flowam_fast.ops.edge_max import edge_max

pytest.importorskip("pytest_benchmark")
pytestmark = pytest.mark.skipif(not backend.has_cpu_kernels(), reason="flowam_fast._C is not built")

K = 20


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _run(benchmark, fn):
    with torch.no_grad():
        benchmark.pedantic(fn, rounds=5, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("op", ["knn D=3", "knn D=64", "knn D=128"])
@pytest.mark.parametrize("impl", ["cpu", "matmul+topk"])
def test_knn(benchmark, op, impl):
    D = int(op.split("=")[1])
    x = torch.randn(16, 1024, D, generator=_gen())
    fn = (lambda: knn(x, K, backend="cpu")) if impl == "cpu" else (lambda: reference.knn_topk(x, K))
    _run(benchmark, fn)


@pytest.mark.parametrize("op", ["edge_max C=64", "edge_max C=256"])
@pytest.mark.parametrize("impl", ["cpu", "torch"])
def test_edge_max(benchmark, op, impl):
    C = int(op.split("=")[1])
    g = _gen()
    feat = torch.randn(16, 1024, C, generator=g)
    idx = torch.randint(0, 1024, (16, 1024, K), generator=g)
    _run(benchmark, lambda: edge_max(feat, idx, backend=impl))
