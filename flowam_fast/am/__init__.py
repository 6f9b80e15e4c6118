"""Activation maximization: per-class activation flows, the batched engine (`AM`, of any
objective of `flowam_fast.objectives`, and `FlowAM`, its presets) and its search spaces, the
(target x seed) grid, the explanations store and its contact sheets, and the autoencoder of
the generative baseline. Uses ops, models, data and objectives; knows no evaluation.

The names below are imported on first use, so that a torch-free module of this package
(`names`: the choices the command line lists in its help) imports without the engine."""
from __future__ import annotations

from ..lazy import lazy_exports

#: name -> module of this package that defines it.
_API = {"AMConfig": "config", "cloud_size": "config", "resolve_classes": "grid", "AM": "engine", "FlowAM": "engine", "continuity_loss": "engine", "METHODS": "names", "ALIGNMENTS": "names",
        "Explanations": "explanations", "Flows": "flows", "compute_flows": "flows", "parse_classes": "grid",
        "parse_seeds": "grid"}

__all__ = ["AMConfig", "cloud_size", "resolve_classes", "AM", "FlowAM", "METHODS", "ALIGNMENTS", "continuity_loss", "Explanations", "Flows", "compute_flows",
           "parse_classes", "parse_seeds"]

__getattr__, __dir__ = lazy_exports(__name__, _API, __all__)
