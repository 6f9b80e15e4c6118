"""Fused ops with autograd, one dispatch point each (`backend=` "auto", "cpu", "cuda",
"triton" or "torch"), and their pure-PyTorch reference versions in `ops.reference`."""
from . import reference
from .backend import available_backends
from .edge_max import edge_max
from .flow import FlowStats, LinearActs, flow_align, flow_stats, flow_std, merge_flow_stats
from .grouping import group_gather, group_linear_max
from .knn import knn
from .linear_max import linear_max
from .quantile_align import quantile_align
from .sampling import ball_query, farthest_point_sample

__all__ = ["knn", "edge_max", "linear_max", "group_gather", "group_linear_max", "flow_stats", "flow_align",
           "LinearActs", "FlowStats", "merge_flow_stats", "flow_std", "quantile_align", "farthest_point_sample",
           "ball_query", "reference", "available_backends"]
