"""Local explanations: one score per point of each cloud for its target class (saliency and its
spherical form, integrated gradients, Grad-CAM, critical points, occlusion), batched on the
models' fast paths, with deletion and insertion curves against a random order, the model
randomization check of attributions, their store and views. Uses evaluation and below.

The names below are imported on first use, so that importing the package stays cheap."""
from __future__ import annotations

from ..lazy import lazy_exports

#: name -> module of this package that defines it.
_API = {"attribute": "methods", "METHODS": "methods", "critical_counts": "cam", "remove": "removal",
        "centroid_baseline": "removal", "faithfulness_curves": "curves", "curve_areas": "curves",
        "summarize_curves": "curves", "randomization_check": "curves", "FRACTIONS": "curves",
        "AttributionStore": "store", "write_html": "views", "attribution_sheet": "views"}

__all__ = ["attribute", "METHODS", "critical_counts", "remove", "centroid_baseline", "faithfulness_curves",
           "curve_areas", "summarize_curves", "randomization_check", "FRACTIONS", "AttributionStore", "write_html",
           "attribution_sheet"]

__getattr__, __dir__ = lazy_exports(__name__, _API, __all__)
