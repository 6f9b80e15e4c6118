"""The ops' tests run every property on every backend available here (`backends`): without a
GPU the Triton kernels run under the Triton interpreter on CPU tensors. Triton picks interpreter
or compiler once per process, at its first import, so the interpreter is asked for here, before
any test module imports triton; on a GPU machine nothing is forced."""
import os
import sys

import torch

if not torch.cuda.is_available() and "triton" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "1")
