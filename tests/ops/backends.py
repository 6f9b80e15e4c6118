"""The kernel backends the ops' tests run each property on: every concrete backend but "torch"
(the reference the others are held against) that runs here, on each device here. Without a
GPU that is "cpu" and "triton" under the Triton interpreter (conftest.py asks for it before
triton's first import); on a GPU machine also "cuda" and compiled "triton" on CUDA tensors."""
from __future__ import annotations

from typing import NamedTuple

import pytest
import torch

from flowam_fast.ops.backend import available_backends


class On(NamedTuple):
    """A kernel backend and the device of its inputs."""

    backend: str
    device: torch.device

    def __call__(self, *tensors):
        """Copies of the tensors on this case's device (one alone, several as a tuple; other values as
        they are): a test may then make them require grad without touching its originals."""
        out = tuple(t.to(self.device, copy=True) if isinstance(t, torch.Tensor) else t for t in tensors)
        return out if len(out) > 1 else out[0]

    @property
    def interpreted(self) -> bool:
        """Triton's interpreter, hundreds of times slower than a kernel: tests give it smaller inputs."""
        return self.backend == "triton" and self.device.type == "cpu"

    def size(self, kernel, interpreted):
        """`kernel` on a compiled backend, the smaller `interpreted` under the interpreter."""
        return interpreted if self.interpreted else kernel


def _cases() -> list[On]:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return [On(b, torch.device(d)) for d in devices for b in available_backends(d) if b != "torch"]


KERNEL_BACKENDS = _cases()
#: The C++ kernel backends here ("cpu", and "cuda" on a GPU), which share their direct-call checks.
CPP_BACKENDS = [o for o in KERNEL_BACKENDS if o.backend in ("cpu", "cuda")]


def case_id(on: On) -> str:
    return f"{on.backend}-{on.device.type}"


def cases(by_case):
    """pytest params (on, *values) for every backend here, `by_case(on)` giving each one's
    value tuples: for a property whose sizes or corner cases depend on the kernel."""
    return [pytest.param(on, *values, id=f"{case_id(on)}-" + "-".join(map(str, values)))
            for on in KERNEL_BACKENDS for values in by_case(on)]


#: Parametrizes a test's `on` argument over KERNEL_BACKENDS.
each_backend = pytest.mark.parametrize("on", KERNEL_BACKENDS, ids=case_id)
