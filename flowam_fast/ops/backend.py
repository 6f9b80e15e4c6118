"""Backend selection: the one place where an op's `backend=` argument is resolved.

Backends: "cpu" (C++ in flowam_fast._C), "cuda" (CUDA in flowam_fast._C, when built with it),
"triton" (when triton is importable and the tensors are on a GPU, or TRITON_INTERPRET=1),
"torch" (the pure-PyTorch reference). "auto" picks the fastest one available for the device.
"""
from __future__ import annotations

import os

import torch

BACKENDS = ("auto", "cpu", "cuda", "triton", "torch")

try:
    from flowam_fast import _C  # noqa: F401

    _C_ERROR = None
except ImportError as exc:  # the package still works on the reference path
    _C = None
    _C_ERROR = exc


def extension():
    """The compiled module, or a clear error saying why it is missing."""
    if _C is None:
        raise RuntimeError(
            "flowam_fast._C is not built; install with `pip install --no-build-isolation -e .` "
            f"(import error: {_C_ERROR})"
        )
    return _C


def has_cpu_kernels() -> bool:
    return _C is not None


def has_cuda_kernels() -> bool:
    return _C is not None and bool(getattr(_C, "with_cuda", False)) and torch.cuda.is_available()


def has_triton() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"


def available_backends(op_backends=("cpu", "cuda", "triton", "torch")) -> list[str]:
    checks = {"cpu": has_cpu_kernels, "cuda": has_cuda_kernels, "triton": has_triton, "torch": lambda: True}
    return [b for b in op_backends if checks[b]()]


def resolve(backend: str, device: torch.device, op: str, implemented=("cpu", "torch")) -> str:
    """Map `backend` to a concrete backend for tensors on `device`, or raise a clear error.

    `implemented` lists the backends this op has; "auto" takes the first one that runs on
    `device`, in the order cuda, triton, cpu, torch.
    """
    if backend not in BACKENDS:
        raise ValueError(f"{op}: unknown backend {backend!r}; choose one of {BACKENDS}")
    on_gpu = device.type == "cuda"
    if backend == "auto":
        order = ("cuda", "triton", "torch") if on_gpu else ("cpu", "torch")
        for b in order:
            if b in implemented and b in available_backends((b,)):
                return b
        return "torch"
    if backend not in implemented:
        raise NotImplementedError(f"{op}: backend {backend!r} is not implemented (have {implemented})")
    if backend == "cpu":
        if on_gpu:
            raise ValueError(f"{op}: backend 'cpu' needs CPU tensors, got {device}")
        extension()
    elif backend == "cuda":
        if not on_gpu:
            raise ValueError(f"{op}: backend 'cuda' needs CUDA tensors, got {device}")
        if not has_cuda_kernels():
            raise RuntimeError(f"{op}: flowam_fast._C was built without CUDA")
    elif backend == "triton" and not has_triton():
        raise RuntimeError(f"{op}: triton is not available (install it, or set TRITON_INTERPRET=1 on CPU)")
    return backend
