"""Chamfer distance on the fused knn: both the autoencoder's training loss (am) and a metric
(evaluation) need it, so it sits with the ops they share."""
from __future__ import annotations

import torch

from .knn import knn


def chamfer(a: torch.Tensor, b: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Chamfer distance per pair: mean over a of the squared distance to the nearest point of b,
    plus the same from b to a. a (P,N,3), b (P,M,3) -> (P,). Differentiable w.r.t. a and b."""
    da, _ = knn(a, 1, ref=b, backend=backend)
    db, _ = knn(b, 1, ref=a, backend=backend)
    return da.squeeze(-1).mean(1) + db.squeeze(-1).mean(1)
