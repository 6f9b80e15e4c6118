"""The search spaces of the engine: where Adam runs, how a job's start is drawn, and the
projection after each step. PointSpace optimizes the points themselves; LatentSpace an
autoencoder's latent codes (the generative baseline); BoxSpace the random control's clouds. A job's start depends only on its
(class, seed), never on the batch it runs in."""
from __future__ import annotations

import numpy as np
import torch


def job_seed(cls: int, seed: int) -> int:
    """The generator seed of job (class, seed): independent of batch composition and order."""
    return int(np.random.SeedSequence([int(cls), int(seed), 0x464C4F57]).generate_state(1, np.uint64)[0] >> 1)


def initial_points(cls: int, seed: int, num_points: int, init: str = "uniform", scale: float = 0.5) -> torch.Tensor:
    g = torch.Generator().manual_seed(job_seed(cls, seed))
    if init == "uniform":
        return (torch.rand(num_points, 3, generator=g) * 2.0 - 1.0) * scale
    if init == "normal":
        return torch.randn(num_points, 3, generator=g) * scale
    if init == "sphere":
        v = torch.randn(num_points, 3, generator=g)
        return v / v.norm(dim=1, keepdim=True) * scale
    raise ValueError(f"unknown init {init!r}; choose uniform, normal or sphere")


def initial_codes(cls: int, seed: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """A latent code drawn from N(mean, std^2) per dimension by the job's own generator."""
    g = torch.Generator().manual_seed(job_seed(cls, seed))
    return mean.cpu() + std.cpu() * torch.randn(mean.shape, generator=g, dtype=mean.dtype)


class PointSpace:
    """Adam runs on the points themselves; the projection is the data-bounds clamp."""

    def __init__(self, cfg, lo=None, hi=None):
        self.cfg, self.lo, self.hi = cfg, lo, hi

    def init(self, jobs):
        cfg = self.cfg
        return torch.stack([initial_points(c, s, cfg.num_points, cfg.init, cfg.init_scale) for c, s in jobs])

    def points(self, p):
        return p

    def project(self, p):
        if self.lo is not None:
            p.clamp_(self.lo, self.hi)


class BoxSpace(PointSpace):
    """Method "random": each job's cloud is uniform in the data bounds [lo, hi], drawn by the
    job's own generator; the engine runs no step on it."""

    def init(self, jobs):
        n = self.cfg.num_points
        lo, hi = self.lo.cpu(), self.hi.cpu()
        return torch.stack([lo + (hi - lo) * torch.rand(n, 3, generator=torch.Generator().manual_seed(job_seed(c, s)))
                            for c, s in jobs])


class LatentSpace:
    """Adam runs on autoencoder codes z; the classifier sees decode(z) (method "ae-latent")."""

    def __init__(self, autoencoder, clamp: bool):
        self.ae = autoencoder
        self.clamp = clamp

    def init(self, jobs):
        return torch.stack([initial_codes(c, s, self.ae.latent_mean, self.ae.latent_std) for c, s in jobs])

    def points(self, z):
        return self.ae.decode(z)

    def project(self, z):
        if self.clamp:
            z.clamp_(self.ae.latent_lo, self.ae.latent_hi)
