"""Backend selection: the one place where an op's `backend=` argument is resolved.

Backends: "cpu" and "cuda" (the C++ and CUDA kernels of flowam_fast._C, registered as
torch.ops.flowam_fast.<name>, CUDA when built with it), "triton" (the same ops as
torch.ops.flowam_fast_triton.<name>: CUDA tensors, or CPU tensors under the Triton interpreter,
TRITON_INTERPRET=1 set before triton's first import), "torch" (the pure-PyTorch reference).
"auto" picks the fastest one available for the tensors' device: cuda, triton, torch on CUDA
tensors; cpu, torch on CPU ones. "cpu" and "cuda" name one op, torch.ops.flowam_fast.<name>, whose
kernel the dispatcher picks by the inputs' device; `library.kernel` finds a backend's op.

`KERNELS` are the ops' names as the extension lists them (csrc/op_list.h); `CPU_ONLY_KERNELS`
have a CPU kernel alone (their ops run on torch elsewhere; the op's front end says so).
"""
from __future__ import annotations

import torch

BACKENDS = ("auto", "cpu", "cuda", "triton", "torch")

try:
    from flowam_fast import _C  # noqa: F401  (registers torch.ops.flowam_fast)

    _C_ERROR = None
except ImportError as exc:  # the package still works on the reference path
    _C = None
    _C_ERROR = exc

KERNELS: tuple = tuple(getattr(_C, "kernels", ()))
CPU_ONLY_KERNELS: tuple = tuple(getattr(_C, "cpu_only_kernels", ()))


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


def triton_error() -> str | None:
    """Why triton cannot be imported, or None when it can. Imported only here and in
    flowam_fast.ops.triton, so the package works without it."""
    try:
        import triton  # noqa: F401
    except ImportError as exc:
        return f"triton is not installed ({exc})"
    return None


def triton_interpreting() -> bool:
    """Whether triton runs kernels through its interpreter. Triton settles that once per
    process, when it is first imported: TRITON_INTERPRET=1 must be set by then, because its own
    library functions (tl.max, tl.sum, ...) are decorated for one mode or the other at that
    import. So this asks triton, not the variable. False without triton."""
    try:
        import triton.language as tl
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:
        return False
    return isinstance(tl.standard.max, InterpretedFunction)


def has_triton(device: torch.device | str = "cuda") -> bool:
    """Whether backend "triton" runs on tensors of `device`: CUDA tensors need triton and a
    GPU; CPU tensors need the interpreter."""
    device = torch.device(device)
    if triton_error() is not None:
        return False
    if device.type == "cuda":
        return torch.cuda.is_available()
    return device.type == "cpu" and triton_interpreting()


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """The backends that run on tensors of `device` in this installation.

    "auto" picks among them: on CUDA tensors cuda, then triton, then torch; on CPU tensors
    cpu, then torch.

    Args:
        device: A torch device or its name.

    Returns:
        The concrete backend names, in the order of `BACKENDS`; "torch" is always among them.
    """
    device = torch.device(device)
    usable = {
        "cpu": device.type == "cpu" and has_cpu_kernels(),
        "cuda": device.type == "cuda" and has_cuda_kernels(),
        "triton": has_triton(device),
        "torch": True,
    }
    return [b for b in BACKENDS[1:] if usable[b]]


def _auto(device: torch.device, unsupported) -> str:
    if device.type == "cuda":
        candidates = [b for b in ("cuda", "triton") if unsupported(b) is None]
        if "cuda" in candidates and has_cuda_kernels():
            return "cuda"
        # The interpreter is a test harness, hundreds of times slower than torch: never a default.
        if "triton" in candidates and triton_error() is None and not triton_interpreting():
            return "triton"
    elif device.type == "cpu" and has_cpu_kernels() and unsupported("cpu") is None:
        return "cpu"
    return "torch"


def resolve(backend: str, device: torch.device, op: str, unsupported=None) -> str:
    """Map `backend` to a concrete backend for tensors on `device`, or raise a clear error:
    ValueError for an unknown backend or one that does not run on `device` or cannot take this
    call, RuntimeError for one that is not available in this installation.

    `unsupported(backend)` says why a kernel backend cannot take this particular call (e.g. a k
    above the CUDA kNN's register lists), or None; "auto" then passes over that backend.
    """
    unsupported = unsupported or (lambda _backend: None)
    if backend not in BACKENDS:
        raise ValueError(f"{op}: unknown backend {backend!r}; choose one of {BACKENDS}")
    if backend == "auto":
        return _auto(device, unsupported)
    if backend == "cpu":
        if device.type != "cpu":
            raise ValueError(f"{op}: backend 'cpu' needs CPU tensors, got {device}")
        extension()
    elif backend == "cuda":
        if device.type != "cuda":
            raise ValueError(f"{op}: backend 'cuda' needs CUDA tensors, got {device}")
        if not has_cuda_kernels():
            why = "is not built" if _C is None else "was built without CUDA"
            raise RuntimeError(f"{op}: backend 'cuda' is not available: flowam_fast._C {why}")
    elif backend == "triton":
        why = triton_error()
        if why is not None:
            raise RuntimeError(f"{op}: backend 'triton' is not available: {why}")
        if device.type == "cpu" and not triton_interpreting():
            raise ValueError(f"{op}: backend 'triton' needs CUDA tensors; CPU tensors run only under the "
                             "Triton interpreter (set TRITON_INTERPRET=1 before triton is first imported)")
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"{op}: backend 'triton' needs CUDA tensors, got {device}")
    why = None if backend == "torch" else unsupported(backend)
    if why is not None:
        raise ValueError(f"{op}: backend {backend!r} cannot take this call: {why}")
    return backend
