"""Triton kernels of the fused ops (backend="triton"), one module per op, behind launchers with
the schemas and results of flowam_fast._C's kernels (same layouts, dtypes and tie rules). Each
launcher is the op torch.ops.flowam_fast_triton.<name> (`library.triton_kernel`), with the fake
kernel and autograd formula of its C++ twin, so an op's front end calls either the same way
(`library.kernel`).

They run on CUDA tensors, or on CPU tensors under the Triton interpreter, which is how the
tests check them without a GPU. The interpreter is chosen per process: TRITON_INTERPRET=1 must
be set before triton is first imported (triton decorates its own library for one mode at that
import), so a process that already compiles for the GPU cannot also interpret.

Importing this package needs triton; flowam_fast and flowam_fast.ops import it only when
backend "triton" runs.
"""
from . import edge_max, flow, group_gather, knn, linear_max, sampling  # noqa: F401  (each defines its ops)
