"""Metrics of explanations, vectorized over jobs and references (no Python loops over points,
no batch-1 forwards)."""
from __future__ import annotations

import numpy as np
import torch

from . import ops


def success_rate(logits, classes) -> float:
    """Fraction of jobs whose target class is the argmax."""
    logits = torch.as_tensor(logits)
    classes = torch.as_tensor(classes)
    return float((logits.argmax(1) == classes).float().mean()) if len(classes) else float("nan")


def chamfer(a: torch.Tensor, b: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Chamfer distance per pair: mean over a of the squared distance to the nearest point of b,
    plus the same from b to a. a (P,N,3), b (P,M,3) -> (P,). Uses the fused knn."""
    da, _ = ops.knn(a, 1, ref=b, backend=backend)
    db, _ = ops.knn(b, 1, ref=a, backend=backend)
    return da.squeeze(-1).mean(1) + db.squeeze(-1).mean(1)


def references_by_class(points: np.ndarray, labels: np.ndarray, num_refs: int, seed: int = 0) -> dict:
    """Up to `num_refs` real samples per class, chosen by a fixed seed: {class: (R,M,3)}."""
    rng = np.random.default_rng(seed)
    refs = {}
    for c in np.unique(labels):
        idx = np.nonzero(labels == c)[0]
        if idx.size > num_refs:
            idx = np.sort(rng.choice(idx, num_refs, replace=False))
        refs[int(c)] = torch.as_tensor(points[idx], dtype=torch.float32)
    return refs


def chamfer_to_class(points, classes, refs: dict, chunk: int = 256, backend: str = "auto") -> np.ndarray:
    """Per job: Chamfer distance to the real samples of its class, averaged over those refs.
    points (J,N,3); classes (J,); refs {class: (R,M,3)} (see `references_by_class`)."""
    points = torch.as_tensor(np.asarray(points), dtype=torch.float32)
    classes = np.asarray(classes)
    missing = sorted(set(classes.tolist()) - set(refs))
    if missing:
        raise ValueError(f"no real samples of classes {missing} to compare with")
    out = np.zeros(len(classes), np.float64)
    for c in np.unique(classes):
        jobs = np.nonzero(classes == c)[0]
        ref = refs[int(c)]
        # Every (job, reference) pair of this class, a chunk of pairs at a time.
        pj = np.repeat(jobs, ref.shape[0])
        pr = np.tile(np.arange(ref.shape[0]), jobs.size)
        vals = np.empty(pj.size, np.float64)
        for s in range(0, pj.size, chunk):
            a = points[pj[s:s + chunk]]
            b = ref[pr[s:s + chunk]]
            vals[s:s + chunk] = chamfer(a, b, backend=backend).double().numpy()
        out[jobs] = vals.reshape(jobs.size, ref.shape[0]).mean(1)
    return out
