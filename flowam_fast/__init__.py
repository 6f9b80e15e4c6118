"""flowam_fast: fast FlowAM global explanations of point-cloud classifiers.

The main API is here (AM, FlowAM, Flows, compute_flows, Explanations) and every layer of the
package is an attribute (ff.ops, ff.models, ff.data, ff.training, ff.objectives, ff.am, ff.evaluation,
ff.attribution, ff.sweep, ff.pipelines, ff.cli). Both are imported on first use, so `import flowam_fast`
stays cheap (no torch import) for tools that only need the version or one subpackage.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: name -> module that defines it.
_API = {"AM": "flowam_fast.am.engine", "FlowAM": "flowam_fast.am.engine", "Explanations": "flowam_fast.am.explanations",
        "Flows": "flowam_fast.am.flows", "compute_flows": "flowam_fast.am.flows"}
_SUBPACKAGES = ("ops", "models", "data", "training", "objectives", "am", "evaluation", "attribution", "sweep", "pipelines", "benchmarks", "cli")

__all__ = ["AM", "FlowAM", "Explanations", "Flows", "compute_flows", "__version__", *_SUBPACKAGES]


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
