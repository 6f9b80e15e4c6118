import os

import pytest
import torch

from tests.helpers import TinyNet

# Two runs on the same machine must agree bit for bit; keep thread counts fixed.
torch.set_num_threads(int(os.environ.get("FLOWAM_TEST_THREADS", "2")))


@pytest.fixture
def tiny_net():
    return TinyNet().eval()
