"""The kernels as PyTorch operators (`torch.library`), so that autograd, `torch.compile` and
`torch.export` see them and anyone can call `torch.ops.flowam_fast.<name>`.

The ops and their schemas are listed once, in csrc/op_list.h: the extension defines every
schema in the `flowam_fast` namespace and registers its CPU and (in CUDA builds) CUDA kernel
per dispatch key, and tells Python the names (`_C.kernels`). The parts that are Python are
registered here, by name, from the op's front end module (`register`): a fake kernel (output
shapes and dtypes from the inputs', for tracing) and, for a differentiable op, its autograd
formula, whose backward calls the op's backward kernel through the dispatcher too.

The Triton kernels are the same ops in a second namespace, `flowam_fast_triton`, each one
defined from its launcher's signature (`triton_kernel`) when backend "triton" first runs, with
the same fake kernel and autograd formula. They run on the same devices as the C++ kernels, so
they cannot be told apart by dispatch key: backend="triton" selects that namespace.
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import torch

from . import backend as _backend

NAMESPACE = "flowam_fast"
TRITON_NAMESPACE = "flowam_fast_triton"


class _Python(NamedTuple):
    """What an op registers from Python: its fake kernel, and its autograd formula when it is
    differentiable; `backward(kernels, ctx, *grads)` gets the namespace of the backend that ran
    the forward (torch.ops.flowam_fast or torch.ops.flowam_fast_triton)."""

    fake: Callable
    setup_context: Callable | None
    backward: Callable | None


_PYTHON: dict[str, _Python] = {}
_TRITON_DEFINED: set[str] = set()


def _attach(namespace: str, name: str, part: _Python) -> None:
    qualname = f"{namespace}::{name}"
    torch.library.register_fake(qualname, part.fake)
    if part.backward is not None:
        kernels = getattr(torch.ops, namespace)
        torch.library.register_autograd(qualname, functools.partial(part.backward, kernels),
                                        setup_context=part.setup_context)


def register(name: str, fake: Callable, setup_context: Callable | None = None,
             backward: Callable | None = None) -> None:
    """Register the Python parts of kernel op `name`, on the C++ op when the extension is built
    and on the Triton op when it is defined (now or later).

    Args:
        name: The op's name in csrc/op_list.h.
        fake: Its fake kernel: the outputs' shapes, dtypes and devices from the inputs'.
        setup_context: For a differentiable op, `torch.library.register_autograd`'s
            setup_context(ctx, inputs, output).
        backward: For a differentiable op, backward(kernels, ctx, *grads), `kernels` the
            namespace of the ops of the backend that ran the forward.
    """
    part = _Python(fake, setup_context, backward)
    _PYTHON[name] = part
    if name in _backend.KERNELS:
        _attach(NAMESPACE, name, part)
    if name in _TRITON_DEFINED:
        _attach(TRITON_NAMESPACE, name, part)


def triton_kernel(launcher: Callable):
    """Decorator: define a Triton launcher as the op flowam_fast_triton::<its name>.

    Its schema is read from its annotations; it gets the fake kernel and autograd formula its
    C++ twin's front end registered under that name.

    Args:
        launcher: The launcher, named as its op in csrc/op_list.h.

    Returns:
        The op (callable as the launcher was).
    """
    name = launcher.__name__
    op = torch.library.custom_op(f"{TRITON_NAMESPACE}::{name}", launcher, mutates_args=())
    _TRITON_DEFINED.add(name)
    if name in _PYTHON:
        _attach(TRITON_NAMESPACE, name, _PYTHON[name])
    return op


def kernel(backend: str, name: str):
    """The op `name` of a concrete kernel backend.

    Args:
        backend: "cpu" or "cuda": torch.ops.flowam_fast.<name>, whose kernel the dispatcher
            picks by the inputs' device; "triton": torch.ops.flowam_fast_triton.<name>.
        name: One of the ops of csrc/op_list.h (`backend.KERNELS`).

    Returns:
        The op's overload, called with the schema's arguments.

    Raises:
        ValueError: An unknown op, a backend without kernels ("torch"), or a CPU-only op
            asked of another backend.
        RuntimeError: "cpu" or "cuda" without the extension built.
    """
    if backend == "triton":
        from . import triton  # noqa: F401  (defines the Triton ops)

        namespace = TRITON_NAMESPACE
    elif backend in ("cpu", "cuda"):
        _backend.extension()
        namespace = NAMESPACE
        if name in _backend.CPU_ONLY_KERNELS and backend != "cpu":
            raise ValueError(f"kernel {name!r} exists for backend 'cpu' only, not {backend!r}")
    else:
        raise ValueError(f"backend {backend!r} has no kernels (kernel backends: 'cpu', 'cuda', 'triton')")
    ops = getattr(torch.ops, namespace)
    if not hasattr(ops, name):
        raise ValueError(f"unknown kernel {name!r} of backend {backend!r}; the kernels are {_backend.KERNELS}")
    return getattr(ops, name).default
