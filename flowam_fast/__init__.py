"""flowam_fast: fast FlowAM global explanations of point-cloud classifiers."""

__version__ = "0.1.0"

from .engine import FlowAM  # noqa: E402
from .explanations import Explanations  # noqa: E402
from .flows import Flows, compute_flows  # noqa: E402

__all__ = ["FlowAM", "Explanations", "Flows", "compute_flows", "__version__"]
