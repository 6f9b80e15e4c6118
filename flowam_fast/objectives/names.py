"""The objectives' choices, free of torch so that the command line lists them in its help
without importing the terms."""
from __future__ import annotations

#: The flow term's statistics: per-channel mean and std over the points ("moments", docs/design.md's
#: objective), or each channel's whole distribution over the points ("quantiles": a 1-D
#: Wasserstein-2 distance per channel, `ops.quantile_align`; needs flows with quantiles).
ALIGNMENTS = ("moments", "quantiles")
#: The weights of a channel visualization's prior, channel(layer) + flow_weight * flow() +
#: continuity_weight * continuity(), where the caller gives none (`flowam-fast explain --channel`,
#: the demo's channel sheet); chosen on the demo PointNet (docs/design.md, "Channels": at 3 its
#: channels' visualizations are the closest to real clouds, and still excite their channel more
#: than any test cloud).
CHANNEL_PRIOR = {"flow_weight": 3.0, "continuity_weight": 1.0}
