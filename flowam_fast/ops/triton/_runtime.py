"""What every Triton launcher shares: block configs for the current mode (compiled or
interpreted), the checks that keep a direct call from reading out of bounds, and the device a
launch runs on."""
from __future__ import annotations

import contextlib

import torch
import triton

from ..backend import triton_interpreting

FLOATS = (torch.float32, torch.float64)
# The mode @triton.jit decorates the kernel modules in: TRITON_INTERPRET as it is when they are
# imported, which is right after triton here unless triton was imported earlier.
DECORATED_INTERPRETED = bool(triton.knobs.runtime.interpret) if hasattr(triton, "knobs") else triton_interpreting()


def autotune(gpu_configs, interpreter_config, key):
    """@triton.autotune over `gpu_configs` on a GPU. Under the interpreter timings mean
    nothing and each extra config would run the kernel again, so it gets one fixed config.
    Evaluated when the kernel module is (re)loaded, so it follows the mode."""
    return triton.autotune(configs=[interpreter_config] if DECORATED_INTERPRETED else gpu_configs, key=key)


def block(gpu: int, interpreter: int) -> int:
    """A fixed block size: `gpu` when compiled; under the interpreter, which pays per operation
    and per program rather than per element, the larger `interpreter`."""
    return interpreter if DECORATED_INTERPRETED else gpu


def pow2(n: int, least: int = 1) -> int:
    """The block size covering n: Triton blocks have power-of-two sizes."""
    return max(least, triton.next_power_of_2(int(n)))


def require(ok: bool, op: str, message: str) -> None:
    """The launchers trust the front ends' value checks (flowam_fast.ops.checks) but check
    what a direct call could get wrong and turn into an out-of-bounds read: layout, dtype,
    device, shapes. RuntimeError, as the C++ kernels' TORCH_CHECK raises."""
    if not ok:
        raise RuntimeError(f"{op}: {message}")


def dense(op: str, floats=(), **tensors) -> torch.device:
    """All `tensors` contiguous and on one device that Triton can run on; those named in
    `floats` float32 or float64. Returns the device."""
    devices = {t.device for t in tensors.values()}
    require(len(devices) == 1, op, f"tensors are on different devices: {sorted(map(str, devices))}")
    for name, t in tensors.items():
        require(t.is_contiguous(), op, f"{name} must be contiguous")
        if name in floats:
            require(t.dtype in FLOATS, op, f"{name} must be float32 or float64, got {t.dtype}")
    device = devices.pop()
    interpreting = triton_interpreting()
    require(DECORATED_INTERPRETED == interpreting, op,
            "TRITON_INTERPRET changed between the imports of triton and of flowam_fast.ops.triton, so their "
            "kernels were decorated for different modes; set it before triton is first imported")
    require(device.type == "cuda" or (device.type == "cpu" and interpreting), op,
            f"Triton kernels need CUDA tensors, or CPU tensors under TRITON_INTERPRET=1; got {device}")
    return device


def on(device: torch.device):
    """Triton launches on the current CUDA device: make it the tensors' one."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
