import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # Small batches on a busy 2-core machine: two OpenMP threads spin-wait for each other, one
    # is several times faster (as in tests/sweep). Results do not depend on the thread count.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
