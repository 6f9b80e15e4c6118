"""Argument groups shared by several commands."""
from __future__ import annotations


def add_am_arguments(p) -> None:
    """Options of the objective, shared by the commands that run the engine."""
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--flow-weight", type=float, default=None, help="default: the method's preset (flowam: 100)")
    p.add_argument("--continuity-weight", type=float, default=None, help="default: the method's preset (1)")
    p.add_argument("--num-points", type=int, default=None, help="default: as in the flows")
    p.add_argument("--batch-size", type=int, default=None, help="jobs per batch (default: all at once)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
