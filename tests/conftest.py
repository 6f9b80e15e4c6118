import os

import pytest
import torch

# Two runs on the same machine must agree bit for bit; keep thread counts fixed.
torch.set_num_threads(int(os.environ.get("FLOWAM_TEST_THREADS", "2")))


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


@pytest.fixture
def tiny_net():
    return TinyNet().eval()
