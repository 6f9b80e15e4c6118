"""pytest-benchmark micro-benchmarks of one AM step (forward + backward to the input), logit
only and the full FlowAM objective, fast path against the plain PyTorch path, on the
full-width models at a small batch (B=2, N=512).

    pytest benchmarks/test_bench_am_step.py --benchmark-group-by=param:case
"""
import pytest

from flowam_fast.benchmarks import am_step as am
from flowam_fast.ops import backend

pytest.importorskip("pytest_benchmark")
pytestmark = pytest.mark.skipif(not backend.has_cpu_kernels(), reason="flowam_fast._C is not built")

B, N = 2, 512
_PROBLEMS = {}


def _problem(arch):
    if arch not in _PROBLEMS:
        _PROBLEMS[arch] = am.make_problem(arch, B, N)
    return _PROBLEMS[arch]


@pytest.mark.parametrize("case", [f"{arch} {obj}" for arch in ("dgcnn", "pointnet") for obj in am.OBJECTIVES])
@pytest.mark.parametrize("impl", ["fast", "plain"])
def test_am_step(benchmark, case, impl):
    arch, objective = case.split()
    problem = _problem(arch)
    step = am.am_step(problem, objective, impl == "fast")
    # The timed step must compute what the other path computes (float32: near-ties allowed).
    other = am.am_step(problem, objective, impl != "fast")
    am.float32_check({})(step(), other())
    benchmark.pedantic(step, rounds=5, iterations=1, warmup_rounds=1)
