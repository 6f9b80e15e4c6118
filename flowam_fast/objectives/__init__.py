"""Composable activation-maximization objectives: terms that add and scale.

```python
from flowam_fast.objectives import logit, channel, flow, continuity

flowam = logit() + 100 * flow(flows) + continuity()            # FlowAM's objective
unit = channel("feat.act3") + 3 * flow(flows) + continuity()   # a channel, flows as prior
```

An objective is a score per job that `flowam_fast.am.AM` maximizes over a (target x seed)
grid; its targets are classes (`logit`) or the channels of one layer (`channel`, `neuron`).
`flow` and `continuity` are minus FlowAM's penalties, so adding them with positive weights
makes the prior. The bounds and the search space (points, or an autoencoder's latent) are
settings of the run, not terms. Uses ops and models; knows no engine.

The names below are imported on first use, so that the torch-free `names` (the choices the
command line lists in its help) imports without the terms.
"""
from __future__ import annotations

from ..lazy import lazy_exports

#: name -> module of this package that defines it.
_API = {**{name: "terms" for name in ("Objective", "Term", "Step", "Run", "TARGET_KINDS", "logit", "channel", "neuron",
                                       "flow", "continuity", "diversity", "continuity_loss", "channel_prior")},
        "parse_objective": "expression", "ALIGNMENTS": "names", "CHANNEL_PRIOR": "names"}

__all__ = ["Objective", "Term", "Step", "Run", "TARGET_KINDS", "logit", "channel", "neuron", "flow", "continuity",
           "diversity", "channel_prior", "continuity_loss", "parse_objective", "ALIGNMENTS", "CHANNEL_PRIOR"]

__getattr__, __dir__ = lazy_exports(__name__, _API, __all__)
