"""The batched activation-maximization engine: FlowAM and its baselines over a (class x seed)
grid, all jobs optimized together (docs/design.md, "The FlowAM objective").

Per job j with target class c and points x (N,3):
    L(x) = -z_c(x) + flow_weight * mean_l flow_align_l(x) + continuity_weight * cont(x)
and after each Adam step x <- clamp(x, lo, hi). Adam is elementwise and the model is frozen
in eval mode, so each job's trajectory does not depend on which batch it ran in; the loss is
summed (not averaged) over jobs so that Adam's epsilon sees the same gradient scale too.

method="ae-latent" is the generative baseline: Adam runs on an autoencoder's latent code z
(initialized from the training codes' per-dimension Gaussian, seeded by (class, seed),
projected into the training codes' per-dimension range after each step) and the classifier
sees x = decode(z); the objective is the target logit alone, as in generative-model AM.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import numpy as np
import torch
from tqdm import tqdm

from .. import ops
from .config import AMConfig, cloud_size
from .explanations import Explanations
from .flows import Flows, describe_model
from .spaces import BoxSpace, LatentSpace, PointSpace
from ..models.activations import default_layers, get_activations
from ..models.adapter import classify
from .grid import resolve_classes
from .names import PRESETS
from .reprs import counted

#: Added to squared neighbour distances inside the continuity log (docs/design.md).
CONT_EPS = 1e-7


def continuity_loss(x: torch.Tensor, k: int, d2_target: float, backend: str = "auto") -> torch.Tensor:
    """The continuity term: how far neighbour distances are from the data's.

    Per job, the mean over points and their k nearest neighbours (self excluded) of
    |log((d2 + eps) / d2_target)|, d2 the squared distance to the neighbour.

    Args:
        x: Points (J, N, 3).
        k: Neighbours per point.
        d2_target: The data's mean squared neighbour distance (`Flows.d2_target`).
        backend: Kernel backend of the kNN search.

    Returns:
        The loss of each job (J,), differentiable with respect to x.
    """
    d2, _ = ops.knn(x, k + 1, backend=backend)
    return torch.log((d2[..., 1:] + CONT_EPS) / d2_target).abs().mean(dim=(1, 2))


def describe_autoencoder(ae) -> str:
    return json.dumps({"class": type(ae).__name__, **dict(getattr(ae, "config", {}))}, sort_keys=True)


@contextlib.contextmanager
def frozen(model):
    """Eval mode and no parameter gradients while optimizing inputs; restored afterwards."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


class FlowAM:
    """Activation maximization over a (class x seed) grid.

    All jobs of a batch are optimized together with Adam; each job's result does not depend
    on the batch it ran in. Each job keeps the iterate with the highest target logit among
    those the model classifies as the target class (the last iterate if none does).

    Args:
        model: Any nn.Module taking (B, 3, N) points and returning logits (B, K) (one whose
            output holds the logits among other things: adapt it with `as_classifier`); the
            built-in PointNet and DGCNN run on the fused fast paths in eval mode. It is
            frozen while the engine runs and restored afterwards.
        flows: The `Flows` of this model, needed for method "flowam" (the flow term) and for
            the data bounds and continuity target of any method that uses them.
        method: "flowam" (logit, flow alignment, continuity, bounds), "vanilla" (logit only,
            no clamp), "regularized" (logit, continuity, bounds) or "ae-latent" (logit only,
            optimized in the latent space of `autoencoder`, whose decoding the classifier
            sees), or "random", the control of the randomization check: uniform clouds in the
            flows' data bounds, seeded by (class, seed), with no step taken (the config
            records steps=0), so that they do not depend on the model at all.
        steps: Adam steps per job (ignored by "random").
        lr: Adam's learning rate.
        flow_weight: Weight of the flow alignment term; None takes the method's preset.
        continuity_weight: Weight of the continuity term; None takes the method's preset.
        continuity_k: Neighbours of the continuity term; None takes the flows' (whose
            continuity target was measured with it; another k is refused).
        num_points: Points per explanation; None takes `cloud_size`'s rule: the
            autoencoder's count, else the flows' (the count they were computed at), else 1024.
        init: Initial cloud of each job: "uniform" (in a cube), "normal" or "sphere", drawn
            from a generator seeded by (class, seed).
        init_scale: Half-width (uniform), std (normal) or radius (sphere) of the initial cloud.
        clamp: Clamp the points to the flows' data bounds after each step (the latent range
            for "ae-latent"); None takes the method's preset.
        layers: Layers of the flow term; None takes the flows' layers.
        autoencoder: The autoencoder of method "ae-latent" (and only of it).
        device: Device of the optimization; None takes the model's.
        backend: Kernel backend of the fused ops ("auto", "cpu", "cuda", "triton", "torch").
        quiet: No progress bar.
        alignment: Statistics of the flow term: "moments" (per-channel mean and std) or
            "quantiles" (a 1-D Wasserstein-2 distance per channel; needs flows with quantiles).

    Raises:
        ValueError: A setting `AMConfig` refuses (an unknown method, alignment or init, a
            negative weight, steps < 1, lr <= 0, num_points <= continuity_k, ...: the message
            names it), a missing or unexpected autoencoder, missing flows for a method that
            needs them, flows that do not match the model (layers, channels, classes), or a
            model whose output is not logits (B, K) (`ClassifierOutputError`).
        TypeError: A setting of the wrong type (`AMConfig`).
    """

    def __init__(self, model, flows: Flows | None = None, method: str = AMConfig.method, steps: int = AMConfig.steps,
                 lr: float = AMConfig.lr, flow_weight: float | None = None, continuity_weight: float | None = None,
                 continuity_k: int | None = None, num_points: int | None = None, init: str = AMConfig.init,
                 init_scale: float = AMConfig.init_scale, clamp: bool | None = None, layers=None, autoencoder=None,
                 device=None, backend: str = AMConfig.backend, quiet: bool = AMConfig.quiet,
                 alignment: str = AMConfig.alignment):
        # The names first, so that an unknown one is refused before any preset is looked up.
        AMConfig(method=method, alignment=alignment, init=init, steps=0 if method == "random" else 1)
        if (method == "ae-latent") != (autoencoder is not None):
            raise ValueError("method 'ae-latent' needs autoencoder= (see flowam_fast.am.autoencoder), and only it "
                             f"takes one (method {method!r})")
        fw, cw, cl = PRESETS[method]
        fw = fw if flow_weight is None else float(flow_weight)
        cw = cw if continuity_weight is None else float(continuity_weight)
        cl = cl if clamp is None else bool(clamp)
        if continuity_k is None:
            continuity_k = flows.continuity_k if flows is not None else 3
        if method == "random":
            steps, cl = 0, True  # its clouds are drawn in the bounds, never optimized
        self.config = AMConfig(method=method, steps=steps, lr=lr, flow_weight=fw, continuity_weight=cw,
                               continuity_k=continuity_k, init=init, init_scale=init_scale, clamp=cl,
                               num_points=cloud_size(num_points, autoencoder=autoencoder, flows=flows),
                               alignment=alignment if fw > 0 else AMConfig.alignment, backend=backend, quiet=quiet,
                               device=device)
        if (fw > 0 or cw > 0 or (cl and autoencoder is None)) and flows is None:
            raise ValueError(f"method {method!r} needs flows (bounds, continuity target"
                             f"{', activation flows' if fw > 0 else ''}); compute them with compute_flows")
        self.model = model
        self.flows = flows
        self.autoencoder = autoencoder
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.backend = backend
        self.quiet = quiet
        layers = tuple(layers) if layers is not None else (tuple(flows.layers) if (flows is not None and fw > 0) else ())
        if fw > 0 and not layers:
            layers = tuple(default_layers(model))
        self.config = dataclasses.replace(
            self.config, layers=layers if fw > 0 else (),
            autoencoder=describe_autoencoder(autoencoder) if autoencoder is not None else "")
        if autoencoder is not None and int(autoencoder.config["num_points"]) != self.config.num_points:
            raise ValueError(f"the autoencoder decodes {autoencoder.config['num_points']} points but num_points is "
                             f"{self.config.num_points}")
        self.d2_target = self._continuity_target() if cw > 0 else None
        self._check_model()

    def __repr__(self) -> str:
        cfg = self.config
        flow = f"flow_weight={cfg.flow_weight:g} ({cfg.alignment}, {counted(len(cfg.layers), 'layer')}), " \
            if cfg.flow_weight > 0 else ""
        return (f"FlowAM(method={cfg.method!r}, model={type(self.model).__name__!r}, steps={cfg.steps}, lr={cfg.lr:g}, "
                f"{flow}continuity_weight={cfg.continuity_weight:g}, {cfg.num_points} points, "
                f"device={str(self.device)!r})")

    def _continuity_target(self) -> float:
        """The flows' d2_target for clouds of num_points points. It was measured on clouds of
        flows.num_points points; neighbour distances on a surface scale as (area / N)^(1/2), so
        d2 scales as 1/N. A different k would need another measurement, so it is refused."""
        cfg, f = self.config, self.flows
        if cfg.continuity_k != f.continuity_k:
            raise ValueError(f"continuity_k={cfg.continuity_k}, but the flows' continuity target was measured "
                             f"with k={f.continuity_k}; recompute the flows with continuity_k={cfg.continuity_k}")
        return f.d2_target * (f.num_points / cfg.num_points if f.num_points else 1.0)

    def _check_model(self) -> None:
        """One forward pass now, so that a model that does not return logits, or does not fit
        the flows, is refused here rather than mid-run."""
        with torch.no_grad():
            # One cloud of the run's size: a DGCNN needs at least k points for its graphs.
            g = torch.Generator().manual_seed(0)
            probe = torch.rand(1, 3, self.config.num_points, generator=g).to(self.device) - 0.5
            self.model.eval()
            if self.config.flow_weight == 0:
                classify(self.model, probe)
                return
            logits, acts = get_activations(self.model, probe, list(self.config.layers))
        self.flows.check_compatible(self.config.layers, {k: v.shape[1] for k, v in acts.items()}, self.model)
        if self.config.alignment == "quantiles":
            self.flows.class_quantiles(self.config.layers[0])  # flows without quantiles: refused now
        if logits.shape[1] != self.flows.num_classes:
            raise ValueError(f"the model has {logits.shape[1]} classes but the flows {self.flows.num_classes}")

    # -- the objective -------------------------------------------------------------------
    def objective(self, x: torch.Tensor, classes: torch.Tensor):
        """The loss of each job, with the logits and the terms it is made of.

        Args:
            x: Points (J, N, 3), one cloud per job.
            classes: Target class of each job (J,), int64.

        Returns:
            A tuple of the total loss (J,), the logits (J, K) and a dict of the unweighted
            terms (J,) by name: "logit" (the target logit), and "flow" and "continuity"
            where their weights are positive.
        """
        cfg = self.config
        inp = x.transpose(1, 2)
        terms = {}
        if cfg.flow_weight > 0:
            # Moments of a max-pooled layer come from its input's covariance (ops.LinearActs).
            logits, acts = get_activations(self.model, inp, list(cfg.layers), linear=cfg.alignment == "moments")
            if cfg.alignment == "quantiles":
                per_layer = [ops.quantile_align(acts[layer], classes, *self._flow_tensors(layer), backend=self.backend)
                             for layer in cfg.layers]
            else:
                per_layer = [ops.flow_align(acts[layer], classes, *self._flow_tensors(layer), backend=self.backend)
                             for layer in cfg.layers]
            align = torch.stack(per_layer).mean(0)
            terms["flow"] = align
        else:
            logits = classify(self.model, inp)
        target = logits.gather(1, classes[:, None]).squeeze(1)
        terms["logit"] = target
        total = -target
        if cfg.flow_weight > 0:
            total = total + cfg.flow_weight * terms["flow"]
        if cfg.continuity_weight > 0:
            terms["continuity"] = continuity_loss(x, cfg.continuity_k, self.d2_target, backend=self.backend)
            total = total + cfg.continuity_weight * terms["continuity"]
        return total, logits, terms

    def _flow_tensors(self, layer):
        cache = self.__dict__.setdefault("_flow_cache", {})
        if layer not in cache:
            read = self.flows.class_quantiles if self.config.alignment == "quantiles" else self.flows.class_flow
            cache[layer] = tuple(t.to(self.device) for t in read(layer))
        return cache[layer]

    # -- the sweep -------------------------------------------------------------------------
    def run(self, classes, seeds, batch_size: int | None = None, store=None) -> Explanations:
        """Optimize every (class, seed) job of the grid.

        Args:
            classes: Target classes, by index or by name (the flows' class names), e.g.
                `["cube", 3]`.
            seeds: Seeds of each class.
            batch_size: Jobs optimized together; None runs them all in one batch.
            store: An HDF5 path: jobs already stored there (a config that `matches` this
                engine's) are skipped, and the store is rewritten atomically after each batch.

        Returns:
            The explanations of every job, those read from `store` included.

        Raises:
            ValueError: A class the model does not have (an unknown name: the message lists the
                names), a class without flows, or a store written with another config.
        """
        seeds = [int(s) for s in seeds]
        return self.run_jobs([(c, s) for c in classes for s in seeds], batch_size=batch_size, store=store)

    def run_jobs(self, jobs, batch_size: int | None = None, store=None) -> Explanations:
        """As `run`, for any list of (class, seed) jobs rather than a full grid (a sweep's shard).

        Args:
            jobs: (class, seed) pairs, a class by index or by name; a repeated pair runs once.
            batch_size: Jobs optimized together; None runs them all in one batch.
            store: An HDF5 path, as in `run`.

        Returns:
            The explanations of every job, those read from `store` included.
        """
        # A repeated job would be optimized twice and stored twice; keep the first.
        num_classes = self._num_classes()
        jobs = list(jobs)
        targets = resolve_classes([c for c, _ in jobs], self._class_names(), num_classes)
        jobs = list(dict.fromkeys((c, int(s)) for c, (_, s) in zip(targets, jobs)))
        classes = list(dict.fromkeys(c for c, _ in jobs))
        if self.flows is not None and self.config.flow_weight > 0:
            self.flows.check_classes(classes)
        done = self._empty_result(num_classes)
        if store is not None:
            done = Explanations.resume(store, self.config, done)
            have = set(zip(done.classes.tolist(), done.seeds.tolist()))
            wanted, jobs = len(jobs), [j for j in jobs if j not in have]
            if not jobs:
                # Nothing to optimize: one line rather than an empty progress bar.
                if not self.quiet and wanted:
                    print(f"{self.config.method}: all {counted(wanted, 'job')} were already in {store}",
                          file=sys.stderr)
                return done
        batch_size = batch_size or max(1, len(jobs))
        bar = tqdm(total=len(jobs) * self.config.steps, desc=self.config.method, disable=self.quiet, unit="step")
        results = [done]
        for start in range(0, len(jobs), batch_size):
            part = self._optimize(jobs[start:start + batch_size], bar)
            results.append(part)
            if store is not None:
                Explanations.concat(results).save(store)
        bar.close()
        return Explanations.concat(results)

    def _class_names(self) -> list:
        return list(self.flows.class_names) if self.flows is not None else []

    def _num_classes(self) -> int:
        if self.flows is not None:
            return self.flows.num_classes
        with torch.no_grad():
            self.model.eval()
            probe = torch.rand(1, 3, self.config.num_points, device=self.device) - 0.5
            return int(classify(self.model, probe).shape[1])

    def _empty_result(self, num_classes: int) -> Explanations:
        n = self.config.num_points
        return Explanations(points=np.zeros((0, n, 3), np.float32), classes=np.zeros(0, np.int64),
                            seeds=np.zeros(0, np.int64), logits=np.zeros((0, num_classes), np.float32),
                            method=self.config.method, config=self.config.to_json(),
                            model=describe_model(self.model),
                            class_names=self._class_names())

    def _optimize(self, jobs, bar) -> Explanations:
        with contextlib.ExitStack() as stack:
            stack.enter_context(frozen(self.model))
            if self.autoencoder is not None:
                stack.enter_context(frozen(self.autoencoder))
            return self._optimize_frozen(jobs, bar)

    def _space(self):
        cfg = self.config
        if self.autoencoder is not None:
            return LatentSpace(self.autoencoder, cfg.clamp)
        if cfg.method == "random":
            return BoxSpace(cfg, self.flows.lo.to(self.device), self.flows.hi.to(self.device))
        if cfg.clamp:
            return PointSpace(cfg, self.flows.lo.to(self.device), self.flows.hi.to(self.device))
        return PointSpace(cfg)

    def _optimize_frozen(self, jobs, bar) -> Explanations:
        cfg = self.config
        space = self._space()
        cls = torch.tensor([c for c, _ in jobs], dtype=torch.int64, device=self.device)
        p = space.init(jobs).to(self.device).requires_grad_(True)
        opt = torch.optim.Adam([p], lr=cfg.lr)
        with torch.no_grad():
            space.project(p)
            x = space.points(p)
        best_x = x.detach().clone()
        best_logit = torch.full((len(jobs),), -math.inf, device=self.device)
        best_logits = None
        found = torch.zeros(len(jobs), dtype=torch.bool, device=self.device)
        for step in range(cfg.steps + 1):
            last = step == cfg.steps
            with torch.set_grad_enabled(not last):
                x = space.points(p)
                total, logits, _ = self.objective(x, cls)
            with torch.no_grad():
                target = logits.gather(1, cls[:, None]).squeeze(1)
                success = logits.argmax(1) == cls
                better = success & (target > best_logit)
                # Where no step has succeeded yet the latest iterate stands in (the fallback).
                take = better | (~found & ~success)
                if best_logits is None:
                    best_logits = logits.detach().clone()
                best_x[take] = x.detach()[take]
                best_logits[take] = logits.detach()[take]
                best_logit[better] = target[better]
                found |= success
            if last:
                break
            opt.zero_grad(set_to_none=True)
            total.sum().backward()
            opt.step()
            with torch.no_grad():
                space.project(p)
            if not self.quiet:
                prob = torch.softmax(logits.detach(), 1).gather(1, cls[:, None]).mean()
                bar.set_postfix(p_target=f"{float(prob):.3f}", success=f"{float(found.float().mean()):.2f}",
                                refresh=False)
                bar.update(len(jobs))
        return Explanations(points=best_x.cpu().numpy().astype(np.float32), classes=cls.cpu().numpy(),
                            seeds=np.array([s for _, s in jobs], np.int64),
                            logits=best_logits.cpu().numpy().astype(np.float32), method=cfg.method,
                            config=cfg.to_json(), model=describe_model(self.model),
                            class_names=self._class_names())
