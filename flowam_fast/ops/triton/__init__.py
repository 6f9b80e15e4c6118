"""Triton kernels of the fused ops (backend="triton"), one module per op, behind launchers with
the signatures and results of flowam_fast._C's CPU functions (same layouts, dtypes and tie
rules), so each op's one autograd.Function calls either through
flowam_fast.ops.backend.kernel.

They run on CUDA tensors, or on CPU tensors under the Triton interpreter, which is how the
tests check them without a GPU. The interpreter is chosen per process: TRITON_INTERPRET=1 must
be set before triton is first imported (triton decorates its own library for one mode at that
import), so a process that already compiles for the GPU cannot also interpret.

Importing this package needs triton; flowam_fast and flowam_fast.ops import it only when
backend "triton" runs.
"""
from .edge_max import edge_max_backward, edge_max_forward
from .flow import flow_align_backward, flow_align_forward, flow_stats
from .group_gather import group_gather_backward, group_gather_forward
from .knn import knn_backward, knn_forward
from .linear_max import linear_max_backward, linear_max_forward
from .sampling import ball_query, farthest_point_sample

__all__ = ["knn_forward", "knn_backward", "edge_max_forward", "edge_max_backward", "linear_max_forward",
           "linear_max_backward", "group_gather_forward", "group_gather_backward", "flow_stats", "flow_align_forward",
           "flow_align_backward", "farthest_point_sample", "ball_query"]
