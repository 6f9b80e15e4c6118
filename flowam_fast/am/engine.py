"""The batched activation-maximization engine over a (target x seed) grid, all jobs optimized
together (docs/design.md, "The FlowAM objective").

`AM` maximizes any objective of `flowam_fast.objectives` (`logit() + 100 * flow(flows) +
continuity()`, `channel("feat.act3")`, ...): per job j with target t and points x (N,3) the
loss is -score_t(x), and after each Adam step x <- clamp(x, lo, hi). Adam is elementwise and
the model is frozen in eval mode, so each job's trajectory does not depend on which batch it
ran in (unless the objective couples the jobs of a target: `diversity`); the loss is summed
(not averaged) over jobs so that Adam's epsilon sees the same gradient scale too.

`FlowAM` is the engine with the paper's objective and its baselines as presets
(`names.PRESETS`): "flowam" is logit() + flow_weight * flow() + continuity_weight *
continuity(); "ae-latent" runs Adam on an autoencoder's latent code z (initialized from the
training codes' per-dimension Gaussian, seeded by (class, seed), projected into the training
codes' per-dimension range after each step) with the classifier seeing x = decode(z), and
the target logit alone as objective, as in generative-model AM.
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

from ..models.activations import get_activations
from ..models.adapter import classify
from ..objectives import Objective, Run, Step, continuity, flow, logit, parse_objective
from ..objectives.terms import continuity_loss  # noqa: F401  (am.continuity_loss)
from .config import AMConfig, cloud_size
from .explanations import Explanations
from .flows import Flows, describe_model
from .grid import resolve_classes
from .names import GENERAL, PRESETS
from .reprs import counted
from .spaces import BoxSpace, LatentSpace, PointSpace


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


class AM:
    """Activation maximization of any objective over a (target x seed) grid.

    ```python
    from flowam_fast.objectives import channel, continuity, flow

    am = ff.AM(model, channel("feat.act3") + 3 * flow() + continuity(), flows=flows, steps=300)
    units = am.run(targets=[3, 17, 42], seeds=range(4))   # channels 3, 17, 42 of feat.act3
    ```

    All jobs of a batch are optimized together with Adam. For class targets each job keeps
    the iterate with the highest target logit among those the model classifies as the target
    (the last iterate if none does); for channel targets, the iterate with the highest score.

    Args:
        model: Any nn.Module taking (B, 3, N) points and returning logits (B, K) (adapt one
            whose output holds more with `as_classifier`); the built-in models run on their
            fused fast paths. It is frozen while the engine runs and restored afterwards.
        objective: An `Objective` (`flowam_fast.objectives`), or its text
            (`"channel('feat.act3') + 3 * flow()"`). Its targets are classes (`logit`) or the
            channels of one layer (`channel`, `neuron`).
        flows: The model's `Flows`: the data bounds (clamp), the continuity target and the
            flows of `flow()` terms that name none. None where nothing needs them.
        steps: Adam steps per job.
        lr: Adam's learning rate.
        num_points: Points per cloud; None takes `cloud_size`'s rule (the autoencoder's,
            else the flows', else 1024).
        init: Initial cloud of each job: "uniform", "normal" or "sphere", drawn from a
            generator seeded by (target, seed).
        init_scale: Half-width (uniform), std (normal) or radius (sphere) of the initial cloud.
        clamp: Clamp the points to the flows' data bounds after each step (the latent range
            with an autoencoder); None clamps where flows (or an autoencoder) are given.
        autoencoder: Search the autoencoder's latent space instead of the points.
        device: Device of the optimization; None takes the model's.
        backend: Kernel backend of the fused ops ("auto", "cpu", "cuda", "triton", "torch").
        quiet: No progress bar.

    Raises:
        ValueError: An objective that does not fit the model or the flows (an unknown
            layer, a channel or point index out of range, terms of two target kinds, a term
            that needs flows without them; the message says which), a setting `AMConfig`
            refuses, or a model whose output is not logits.
    """

    def __init__(self, model, objective, flows: Flows | None = None, steps: int = AMConfig.steps,
                 lr: float = AMConfig.lr, num_points: int | None = None, init: str = AMConfig.init,
                 init_scale: float = AMConfig.init_scale, clamp: bool | None = None, autoencoder=None, device=None,
                 backend: str = AMConfig.backend, quiet: bool = AMConfig.quiet):
        if isinstance(objective, str):
            objective = parse_objective(objective)
        if not isinstance(objective, Objective):
            raise TypeError(f"objective must be an Objective (flowam_fast.objectives) or its text, got "
                            f"{type(objective).__name__}")
        if clamp is None:
            clamp = flows is not None or autoencoder is not None
        if clamp and flows is None and autoencoder is None:
            raise ValueError("clamp=True clamps to the data bounds of the flows: pass flows=, or clamp=False")
        n = cloud_size(num_points, autoencoder=autoencoder, flows=flows)
        kind = objective.target_kind()
        bound = objective.bind(Run(model, flows, n, kind))
        config = AMConfig(method=GENERAL, objective=str(bound), target_layer=objective.target_layer() or "",
                          steps=steps, lr=lr, flow_weight=0.0, continuity_weight=0.0, num_points=n, init=init,
                          init_scale=init_scale, clamp=bool(clamp), backend=backend, quiet=quiet, device=device,
                          autoencoder=describe_autoencoder(autoencoder) if autoencoder is not None else "")
        self._setup(model, bound, config, flows, autoencoder, device)

    def _setup(self, model, objective: Objective, config: AMConfig, flows, autoencoder, device) -> None:
        """What every engine does once its objective is bound and its config made."""
        self.model = model
        self.flows = flows
        self.autoencoder = autoencoder
        self.objective = objective
        self.config = config
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.backend = config.backend
        self.quiet = config.quiet
        self.target_kind = "channel" if config.target_layer else "class"
        layers = objective.layers()  # {layer: takes LinearActs}
        self._layers, self._linear = list(layers), [k for k, takes in layers.items() if takes]
        if autoencoder is not None and int(autoencoder.config["num_points"]) != config.num_points:
            raise ValueError(f"the autoencoder decodes {autoencoder.config['num_points']} points but num_points is "
                             f"{config.num_points}")
        self._check_model()

    def __repr__(self) -> str:
        cfg = self.config
        return (f"AM({self.objective}, model={type(self.model).__name__!r}, steps={cfg.steps}, lr={cfg.lr:g}, "
                f"{cfg.num_points} points, device={str(self.device)!r})")

    def _check_model(self) -> None:
        """One forward pass now, so that a model that does not return logits, or does not fit
        the objective or the flows, is refused here rather than mid-run; it sets `num_classes`
        (the model's) and `num_targets` (its classes, or the target layer's channels)."""
        with torch.no_grad():
            # One cloud of the run's size: a DGCNN needs at least k points for its graphs.
            g = torch.Generator().manual_seed(0)
            probe = torch.rand(1, 3, self.config.num_points, generator=g).to(self.device) - 0.5
            self.model.eval()
            logits, acts = self._forward(probe)
        self.num_classes = int(logits.shape[1])
        run = Run(self.model, self.flows, self.config.num_points, self.target_kind, num_classes=self.num_classes,
                  channels={k: v.shape[1] for k, v in acts.items()},
                  points={k: v.shape[2] for k, v in acts.items() if isinstance(v, torch.Tensor)})
        self.objective.check(run)
        self.num_targets = int(run.channels[self.config.target_layer]) if self.config.target_layer else self.num_classes

    def _forward(self, inp):
        """The logits and the activations the objective reads, in one forward pass."""
        if not self._layers:
            return classify(self.model, inp), {}
        return get_activations(self.model, inp, self._layers, linear=self._linear)

    # -- the objective -------------------------------------------------------------------
    def loss(self, x: torch.Tensor, targets: torch.Tensor):
        """The loss of each job (minus its score), with the logits and the terms' values.

        Args:
            x: Points (J, N, 3), one cloud per job.
            targets: Target of each job (J,), int64: a class or a channel.

        Returns:
            A tuple of the loss (J,), the logits (J, K) and a dict of each term's unweighted
            value (J,) by name ("logit", "flow", "continuity", ...; `Objective.score`).
        """
        logits, acts = self._forward(x.transpose(1, 2))
        score, values = self.objective.score(Step(x, targets, logits, acts, self.backend))
        return -score, logits, values

    # -- the sweep -------------------------------------------------------------------------
    def run(self, targets, seeds, batch_size: int | None = None, store=None) -> Explanations:
        """Optimize every (target, seed) job of the grid.

        Args:
            targets: The targets: classes by index or by name (the flows' class names), e.g.
                `["cube", 3]`, or channel indices where the objective's targets are channels.
            seeds: Seeds of each target.
            batch_size: Jobs optimized together; None runs them all in one batch. An
                objective that couples the jobs of a target (`diversity`) keeps each target's
                jobs in one batch.
            store: An HDF5 path: jobs already stored there (a config that `matches` this
                engine's) are skipped, and the store is rewritten atomically after each batch.

        Returns:
            The explanations of every job, those read from `store` included; their `classes`
            hold the targets.

        Raises:
            ValueError: A target the model does not have (an unknown class name: the message
                lists the names; a channel out of range), a class without flows, or a store
                written with another config.
        """
        seeds = [int(s) for s in seeds]
        return self.run_jobs([(t, s) for t in targets for s in seeds], batch_size=batch_size, store=store)

    def run_jobs(self, jobs, batch_size: int | None = None, store=None) -> Explanations:
        """As `run`, for any list of (target, seed) jobs rather than a full grid (a sweep's shard).

        Args:
            jobs: (target, seed) pairs, a class by index or by name; a repeated pair runs once.
            batch_size: Jobs optimized together; None runs them all in one batch.
            store: An HDF5 path, as in `run`.

        Returns:
            The explanations of every job, those read from `store` included.
        """
        jobs = list(jobs)
        targets = self._resolve_targets([t for t, _ in jobs])
        # A repeated job would be optimized twice and stored twice; keep the first.
        jobs = list(dict.fromkeys((t, int(s)) for t, (_, s) in zip(targets, jobs)))
        if self.flows is not None and self.target_kind == "class" and any(
                t.name == "flow" for t in self.objective.terms):
            self.flows.check_classes(list(dict.fromkeys(t for t, _ in jobs)))
        done = self._empty_result()
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
        bar = tqdm(total=len(jobs) * self.config.steps, desc=self.config.method, disable=self.quiet, unit="step")
        results = [done]
        for batch in self._batches(jobs, batch_size or max(1, len(jobs))):
            results.append(self._optimize(batch, bar))
            if store is not None:
                Explanations.concat(results).save(store)
        bar.close()
        return Explanations.concat(results)

    def _resolve_targets(self, targets) -> list:
        if self.target_kind == "class":
            return resolve_classes(targets, self._class_names(), self.num_targets)
        out = []
        for t in targets:
            if isinstance(t, str) and t.strip().isdigit():
                t = int(t)
            if isinstance(t, bool) or not hasattr(t, "__index__"):
                raise TypeError(f"the targets of {self.objective} are channels of {self.config.target_layer!r} "
                                f"(indices), got {t!r}")
            if not 0 <= int(t) < self.num_targets:
                raise ValueError(f"channel {int(t)} of layer {self.config.target_layer!r}: it has "
                                 f"{self.num_targets} channels (0..{self.num_targets - 1})")
            out.append(int(t))
        return out

    def _batches(self, jobs, batch_size: int):
        """Consecutive batches of about `batch_size` jobs; whole targets where the objective
        couples a target's jobs."""
        if not self.objective.couples_jobs():
            return [jobs[i:i + batch_size] for i in range(0, len(jobs), batch_size)]
        by_target = {}
        for job in jobs:
            by_target.setdefault(job[0], []).append(job)
        batches, current = [], []
        for group in by_target.values():
            current += group
            if len(current) >= batch_size:
                batches.append(current)
                current = []
        return batches + ([current] if current else [])

    def _class_names(self) -> list:
        return list(self.flows.class_names) if self.flows is not None else []

    def _empty_result(self) -> Explanations:
        n = self.config.num_points
        return Explanations(points=np.zeros((0, n, 3), np.float32), classes=np.zeros(0, np.int64),
                            seeds=np.zeros(0, np.int64), logits=np.zeros((0, self.num_classes), np.float32),
                            method=self.config.method, config=self.config.to_json(),
                            model=describe_model(self.model), class_names=self._class_names())

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
        tgt = torch.tensor([t for t, _ in jobs], dtype=torch.int64, device=self.device)
        p = space.init(jobs).to(self.device).requires_grad_(True)
        opt = torch.optim.Adam([p], lr=cfg.lr)
        with torch.no_grad():
            space.project(p)
            x = space.points(p)
        best_x = x.detach().clone()
        best = torch.full((len(jobs),), -math.inf, device=self.device)
        best_logits = None
        found = torch.zeros(len(jobs), dtype=torch.bool, device=self.device)
        for step in range(cfg.steps + 1):
            last = step == cfg.steps
            with torch.set_grad_enabled(not last):
                x = space.points(p)
                loss, logits, _ = self.loss(x, tgt)
            with torch.no_grad():
                if self.target_kind == "class":
                    target = logits.gather(1, tgt[:, None]).squeeze(1)
                    success = logits.argmax(1) == tgt
                    better = success & (target > best)
                    # Where no step has succeeded yet the latest iterate stands in (the fallback).
                    take = better | (~found & ~success)
                    found |= success
                else:
                    target = -loss.detach()
                    better = take = target > best
                if best_logits is None:
                    best_logits = logits.detach().clone()
                best_x[take] = x.detach()[take]
                best_logits[take] = logits.detach()[take]
                best[better] = target[better]
            if last:
                break
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
            with torch.no_grad():
                space.project(p)
            if not self.quiet:
                if self.target_kind == "class":
                    prob = torch.softmax(logits.detach(), 1).gather(1, tgt[:, None]).mean()
                    bar.set_postfix(p_target=f"{float(prob):.3f}", success=f"{float(found.float().mean()):.2f}",
                                    refresh=False)
                else:
                    bar.set_postfix(score=f"{float(-loss.detach().mean()):.3f}", refresh=False)
                bar.update(len(jobs))
        return Explanations(points=best_x.cpu().numpy().astype(np.float32), classes=tgt.cpu().numpy(),
                            seeds=np.array([s for _, s in jobs], np.int64),
                            logits=best_logits.cpu().numpy().astype(np.float32), method=cfg.method,
                            config=cfg.to_json(), model=describe_model(self.model),
                            class_names=self._class_names())


class FlowAM(AM):
    """FlowAM and its baselines: `AM` with the paper's objective as presets (`names.PRESETS`).

    "flowam" maximizes logit() + flow_weight * flow() + continuity_weight * continuity() in
    the data bounds; "regularized" is flow weight 0; "vanilla" the logit alone, unclamped;
    "ae-latent" the logit in an autoencoder's latent space; "random" takes no step.

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
        if method == GENERAL:
            raise ValueError(f"method {GENERAL!r} is the general engine: use AM(model, objective, ...)")
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
        config = AMConfig(method=method, steps=steps, lr=lr, flow_weight=fw, continuity_weight=cw,
                          continuity_k=continuity_k, init=init, init_scale=init_scale, clamp=cl,
                          num_points=cloud_size(num_points, autoencoder=autoencoder, flows=flows),
                          alignment=alignment if fw > 0 else AMConfig.alignment, backend=backend, quiet=quiet,
                          device=device)
        if (fw > 0 or cw > 0 or (cl and autoencoder is None)) and flows is None:
            raise ValueError(f"method {method!r} needs flows (bounds, continuity target"
                             f"{', activation flows' if fw > 0 else ''}); compute them with compute_flows")
        layers = tuple(layers) if layers is not None else (tuple(flows.layers) if (flows is not None and fw > 0) else ())
        if fw > 0 and not layers:
            from ..models.activations import default_layers

            layers = tuple(default_layers(model))
        config = dataclasses.replace(
            config, layers=layers if fw > 0 else (),
            autoencoder=describe_autoencoder(autoencoder) if autoencoder is not None else "")
        objective = preset_objective(config, flows)
        bound = objective.bind(Run(model, flows, config.num_points, "class"))
        self._setup(model, bound, config, flows, autoencoder, device)

    def __repr__(self) -> str:
        cfg = self.config
        flow = f"flow_weight={cfg.flow_weight:g} ({cfg.alignment}, {counted(len(cfg.layers), 'layer')}), " \
            if cfg.flow_weight > 0 else ""
        return (f"FlowAM(method={cfg.method!r}, model={type(self.model).__name__!r}, steps={cfg.steps}, lr={cfg.lr:g}, "
                f"{flow}continuity_weight={cfg.continuity_weight:g}, {cfg.num_points} points, "
                f"device={str(self.device)!r})")


def preset_objective(config: AMConfig, flows=None) -> Objective:
    """The objective of a preset method's config: logit() + flow_weight * flow(...) +
    continuity_weight * continuity(k) (zero-weight terms left out)."""
    objective = logit()
    if config.flow_weight > 0:
        objective = objective + config.flow_weight * flow(flows, config.alignment, config.layers)
    if config.continuity_weight > 0:
        objective = objective + config.continuity_weight * continuity(config.continuity_k)
    return objective
