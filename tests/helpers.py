"""Helpers shared by the test modules: small stand-in models and data, and the determinism
check. conftest.py only fixes thread counts and registers fixtures."""
import numpy as np
import pytest
import torch


class TinyNet(torch.nn.Module):
    """A small per-point classifier with named per-point layers, for engine tests: a stand-in
    for a user's own model, reached only through hooks."""

    def __init__(self, num_classes=3, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv1 = torch.nn.Conv1d(3, 16, 1)
        self.act1 = torch.nn.ReLU()
        self.conv2 = torch.nn.Conv1d(16, 32, 1)
        self.act2 = torch.nn.ReLU()
        self.fc = torch.nn.Linear(32, num_classes)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x):
        h = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.fc(h.max(dim=2).values)


class ArrayData:
    """The dataset protocol compute_flows reads (points, labels, classes), over arrays."""

    def __init__(self, points, labels, classes):
        self.points, self.labels, self.classes = points, labels, classes

    def __len__(self):
        return len(self.labels)


def random_data(num=12, n=32, k=3, seed=0):
    """num Gaussian clouds of n points, labels cycling over k classes."""
    rng = np.random.default_rng(seed)
    pts = rng.normal(size=(num, n, 3)).astype(np.float32)
    labels = np.arange(num) % k
    return ArrayData(pts, labels.astype(np.int64), [f"c{i}" for i in range(k)])


def randomize(model, seed=0):
    """Random weights and BatchNorm statistics, with negative BN scales in every layer."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if p.dtype.is_floating_point:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight[::3] = -m.weight[::3].abs()
    return model.eval()


def assert_same_across_runs_and_threads(run):
    """run() -> tensors; they must be bit-identical on a second run and with one thread."""
    first = run()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = run()
    finally:
        torch.set_num_threads(threads)
    for a, b, c in zip(first, run(), single):
        assert torch.equal(a, b) and torch.equal(a, c)


class CountedLaunches:
    """Stands in for a Triton kernel object (`kernel[grid](...)`) and records each launch in
    `log`, so a test can tell that the Triton path really ran."""

    def __init__(self, kernel, name, log):
        self.kernel, self.name, self.log = kernel, name, log

    def __getitem__(self, grid):
        launch = self.kernel[grid]

        def run(*args, **kwargs):
            self.log.append(self.name)
            return launch(*args, **kwargs)

        return run


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread while a test runs (a conftest that imports this fixture applies it to
    its tests): small batches on a busy 2-core machine make two OpenMP threads spin-wait for
    each other, one is several times faster. Results do not depend on the thread count
    (tested in tests/ops)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
