"""The terms of an activation-maximization objective and their sums.

An objective is a score per job that the engine maximizes: a linear combination of terms,
built with `+`, `-` and multiplication by numbers (`logit() + 100 * flow(flows) + continuity()`).
A term is made unbound (what the user writes), then bound to a run (`bind`): its defaults are
resolved against the model, the flows and the cloud size, and what is wrong is refused then,
before any step. A bound objective's `str` is its identity: it names every setting that
changes results, and runs are compared by it.

What a term sees of a step is a `Step`: the clouds, each job's target, the logits, and the
activations of the layers the objective asked for, read in one forward pass.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .. import ops
from .names import ALIGNMENTS, CHANNEL_PRIOR

#: Added to squared neighbour distances inside the continuity log (docs/design.md).
CONT_EPS = 1e-7
#: Neighbours of the continuity term where neither the caller nor the flows give k.
DEFAULT_K = 3
#: What a target indexes: a class (logits), or a channel of one layer.
TARGET_KINDS = ("class", "channel")


def continuity_loss(x: torch.Tensor, k: int, d2_target: float, backend: str = "auto") -> torch.Tensor:
    """The continuity loss: how far neighbour distances are from the data's.

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


@dataclass
class Step:
    """What the terms of an objective see of one step of a batch of jobs.

    Attributes:
        points: The clouds (J, N, 3), differentiable.
        targets: Each job's target (J,), int64: a class or a channel, as the objective says.
        logits: The model's logits (J, K).
        acts: The activations of the layers the objective asked for, by name: (J, C, M), or
            `LinearActs` where every term reading the layer takes them.
        backend: Kernel backend of the fused ops.
    """

    points: torch.Tensor
    targets: torch.Tensor
    logits: torch.Tensor
    acts: dict
    backend: str = "auto"


@dataclass
class Run:
    """What a term is bound to (`Term.bind`): the settings of the run it belongs to.

    Attributes:
        model: The classifier.
        flows: The run's `Flows` (bounds, continuity target, activation flows), or None.
        num_points: Points per cloud.
        target_kind: "class" or "channel": what the objective's targets index.
        num_classes: The model's classes, once probed (0 before).
        channels: The channel count of each layer the model has been probed at, by name.
        points: The point count of each probed layer, by name.
    """

    model: object
    flows: object
    num_points: int
    target_kind: str
    num_classes: int = 0
    channels: dict = field(default_factory=dict)
    points: dict = field(default_factory=dict)


class Objective:
    """A score per job to maximize: sum of weight * term over its parts.

    Build one from the term functions (`logit`, `channel`, `neuron`, `flow`, `continuity`,
    `diversity`) with `+`, `-`, and `*` or `/` by a number. Zero-weight parts are dropped;
    repeated terms keep their own weights (`logit() + logit()` is 2 * logit(), evaluated twice).
    """

    def __init__(self, parts=()):
        self.parts = tuple((float(w), t) for w, t in parts if float(w) != 0.0)

    # -- algebra ---------------------------------------------------------------------------
    def __add__(self, other):
        if isinstance(other, (int, float)) and other == 0:  # sum() starts from 0
            return self
        other = _objective(other, "add")
        return Objective(self.parts + other.parts)

    __radd__ = __add__

    def __mul__(self, weight):
        weight = _weight(weight)
        return Objective((w * weight, t) for w, t in self.parts)

    __rmul__ = __mul__

    def __truediv__(self, weight):
        weight = _weight(weight)
        if weight == 0:
            raise ZeroDivisionError("an objective divided by 0")
        return Objective((w / weight, t) for w, t in self.parts)

    def __neg__(self):
        return self * -1.0

    def __sub__(self, other):
        return self + (-_objective(other, "subtract"))

    def __rsub__(self, other):
        return (-self) + other

    # -- description -----------------------------------------------------------------------
    def __str__(self) -> str:
        if not self.parts:
            return "0"
        out = ""
        for w, t in self.parts:
            sign, mag = ("-", -w) if w < 0 else ("+", w)
            text = str(t) if mag == 1.0 else f"{mag:g} * {t}"
            out = (f"-{text}" if sign == "-" else text) if not out else f"{out} {sign} {text}"
        return out

    def __repr__(self) -> str:
        return f"Objective({self})"

    def __eq__(self, other) -> bool:
        return isinstance(other, (Objective, Term)) and str(self) == str(_objective(other, "compare"))

    __hash__ = None

    @property
    def terms(self) -> tuple:
        """The terms, in order (without their weights)."""
        return tuple(t for _, t in self.parts)

    def target_kind(self) -> str:
        """What the targets index: "channel" where a term reads a channel (`channel`, `neuron`),
        else "class".

        Raises:
            ValueError: Terms that index targets of different kinds, or channels of two layers.
        """
        kinds = {t.indexes for t in self.terms if t.indexes}
        if len(kinds) > 1:
            raise ValueError(f"objective {self} mixes class targets (logit) with channel targets (channel, neuron): "
                             "its targets must be one kind")
        layers = {t.layer for t in self.terms if t.indexes == "channel"}
        if len(layers) > 1:
            raise ValueError(f"objective {self} reads channels of several layers ({', '.join(sorted(layers))}): "
                             "its targets are channels of one layer")
        return kinds.pop() if kinds else "class"

    def target_layer(self) -> str | None:
        """The layer whose channels are the targets, or None for class targets."""
        return next((t.layer for t in self.terms if t.indexes == "channel"), None)

    def couples_jobs(self) -> bool:
        """Whether a job's score depends on the other jobs of its target (`diversity`)."""
        return any(t.couples for t in self.terms)

    def layers(self) -> dict:
        """{layer: takes LinearActs} over the terms: the activations one forward pass records."""
        out = {}
        for t in self.terms:
            for layer, linear in t.layers().items():
                out[layer] = out.get(layer, True) and linear
        return out

    # -- use -------------------------------------------------------------------------------
    def bind(self, run: Run) -> "Objective":
        """The objective with every term's defaults resolved against `run` (see `Term.bind`)."""
        if not self.parts:
            raise ValueError("the objective has no terms: give at least one, e.g. logit() or channel('layer')")
        return Objective((w, t.bind(run)) for w, t in self.parts)

    def check(self, run: Run) -> None:
        """Refuse now what would fail mid-run: called after a probe forward pass filled
        `run.channels` and `run.points`."""
        for t in self.terms:
            t.check(run)

    def score(self, step: Step):
        """The score of each job and its terms' unweighted values.

        Returns:
            A tuple of the score (J,) and a dict of each term's value (J,) by its name (a
            name that repeats gets a suffix: "logit", "logit_2").
        """
        total, values = None, {}
        for w, t in self.parts:
            v = t.value(step)
            name = t.name if t.name not in values else f"{t.name}_{sum(k.startswith(t.name) for k in values) + 1}"
            values[name] = v
            # A weight of 1 adds the value itself: the presets' sums are then those of the
            # engine's earlier form, bit for bit.
            v = v if w == 1.0 else w * v
            total = v if total is None else total + v
        return total, values


class Term:
    """One term of an objective: a score per job. Subclasses set `name`, what their targets
    index (`indexes`: "class", "channel" or None; a "channel" term has a `layer`), and implement `value`."""

    name = "term"
    indexes = None  # "class", "channel", or None for a term that reads no target
    couples = False  # the value of a job depends on other jobs of its target

    def layers(self) -> dict:
        """{layer: takes LinearActs} that the term reads."""
        return {}

    def bind(self, run: Run) -> "Term":
        return self

    def check(self, run: Run) -> None:
        """Refuse settings that do not fit the probed model (`Run.channels`, `Run.points`)."""

    def value(self, step: Step) -> torch.Tensor:
        raise NotImplementedError

    # A term takes part in sums as a one-part objective.
    def __add__(self, other):
        return Objective(((1.0, self),)) + other

    __radd__ = __add__

    def __sub__(self, other):
        return Objective(((1.0, self),)) - other

    def __rsub__(self, other):
        return -Objective(((1.0, self),)) + other

    def __mul__(self, weight):
        return Objective(((1.0, self),)) * weight

    __rmul__ = __mul__

    def __truediv__(self, weight):
        return Objective(((1.0, self),)) / weight

    def __neg__(self):
        return -Objective(((1.0, self),))

    def __eq__(self, other) -> bool:
        return isinstance(other, (Objective, Term)) and str(_objective(self, "compare")) == str(_objective(other, "compare"))

    __hash__ = None

    def __repr__(self) -> str:
        return str(self)


def _objective(x, verb: str) -> Objective:
    if isinstance(x, Objective):
        return x
    if isinstance(x, Term):
        return Objective(((1.0, x),))
    raise TypeError(f"cannot {verb} {type(x).__name__} {x!r} and an objective: objectives add to objectives "
                    "(terms such as logit(), channel('layer'), flow()) and scale by numbers")


def _weight(w) -> float:
    if isinstance(w, bool) or not isinstance(w, (int, float)) and not hasattr(w, "__float__"):
        raise TypeError(f"an objective scales by a number, got {type(w).__name__} {w!r}")
    w = float(w)
    if not math.isfinite(w):
        raise ValueError(f"an objective's weight must be finite, got {w}")
    return w


def _quote(s: str) -> str:
    return repr(str(s))


# -- the terms --------------------------------------------------------------------------------
@dataclass(eq=False, repr=False)
class Logit(Term):
    """The target class's logit."""

    name = "logit"
    indexes = "class"

    def __str__(self) -> str:
        return "logit()"

    def value(self, step: Step) -> torch.Tensor:
        return step.logits.gather(1, step.targets[:, None]).squeeze(1)


@dataclass(eq=False, repr=False)
class Channel(Term):
    """A channel's mean activation over the points of a layer; the target is the channel."""

    layer: str
    name = "channel"
    indexes = "channel"

    def __str__(self) -> str:
        return f"channel({_quote(self.layer)})"

    def layers(self) -> dict:
        return {self.layer: False}

    def target_channel(self, step: Step) -> torch.Tensor:
        """Each job's target channel of the layer at every point (J, M)."""
        acts = step.acts[self.layer]
        return acts[torch.arange(acts.shape[0], device=acts.device), step.targets]

    def value(self, step: Step) -> torch.Tensor:
        return self.target_channel(step).mean(dim=1)


@dataclass(eq=False, repr=False)
class Neuron(Channel):
    """One channel of a layer at one point index; the target is the channel."""

    point: int
    name = "neuron"

    def __post_init__(self):
        if isinstance(self.point, bool) or not isinstance(self.point, int) or self.point < 0:
            raise ValueError(f"neuron's point must be a point index >= 0, got {self.point!r}")

    def __str__(self) -> str:
        return f"neuron({_quote(self.layer)}, {self.point})"

    def check(self, run: Run) -> None:
        if self.point >= run.points[self.layer]:
            raise ValueError(f"neuron({self.layer!r}, {self.point}): layer {self.layer!r} has "
                             f"{run.points[self.layer]} points per cloud (0..{run.points[self.layer] - 1})")

    def value(self, step: Step) -> torch.Tensor:
        return self.target_channel(step)[:, self.point]


@dataclass(eq=False, repr=False)
class Flow(Term):
    """Minus the flow alignment: how far each cloud's activations are from a flow, averaged
    over layers (`ops.flow_align` for moments, `ops.quantile_align` for quantiles).

    The flow compared with is the target class's for class targets; for channel targets it is
    the flow of class `cls` if given, else that of all classes together (moments only: the
    class-count-weighted mixture of the class moments)."""

    flows: object = None
    alignment: str = "moments"
    layer_names: tuple = None
    cls: int | str | None = None
    mixture: bool = False  # set by bind: channel targets compared with all classes together
    name = "flow"

    def __post_init__(self):
        if self.alignment not in ALIGNMENTS:
            raise ValueError(f"unknown alignment {self.alignment!r}; choose one of {', '.join(ALIGNMENTS)}")
        if self.layer_names is not None:
            if isinstance(self.layer_names, str) or not all(isinstance(x, str) for x in self.layer_names):
                raise TypeError(f"flow's layers must be a sequence of layer names, got {self.layer_names!r}")
            self.layer_names = tuple(self.layer_names)
        self._cache = {}

    def __str__(self) -> str:
        args = [f"alignment={_quote(self.alignment)}"]
        if self.layer_names is not None:
            args.append(f"layers=({', '.join(map(_quote, self.layer_names))}{',' if len(self.layer_names) == 1 else ''})")
        if self.cls is not None:
            args.append(f"cls={self.cls!r}")
        return f"flow({', '.join(args)})"

    def layers(self) -> dict:
        return {layer: self.alignment == "moments" for layer in self.layer_names or ()}

    def bind(self, run: Run) -> "Flow":
        from ..models.activations import default_layers

        flows = self.flows if self.flows is not None else run.flows
        if flows is None:
            raise ValueError("flow() needs the model's flows: pass them to the term, flow(flows), or to the engine, "
                             "AM(model, objective, flows=flows); compute them with compute_flows")
        layers = self.layer_names if self.layer_names is not None else tuple(flows.layers or default_layers(run.model))
        cls = self.cls
        if isinstance(cls, str):
            names = list(flows.class_names)
            if cls not in names:
                raise ValueError(f"flow(cls={cls!r}): unknown class; known classes: {', '.join(names) or 'none'}")
            cls = names.index(cls)
        if cls is not None and not 0 <= int(cls) < flows.num_classes:
            raise ValueError(f"flow(cls={cls}): classes are 0..{flows.num_classes - 1}")
        if run.target_kind == "class" and cls is not None:
            raise ValueError("flow(cls=...) fixes the class of a channel objective's flow; with class targets the "
                             "flow is the target class's")
        if run.target_kind == "channel" and cls is None and self.alignment == "quantiles":
            raise ValueError("the quantile alignment compares with one class's flow: give flow(..., cls=CLASS) for "
                             "channel targets, or use alignment='moments' (all classes together)")
        if cls is not None:
            flows.check_classes([int(cls)])
        return Flow(flows, self.alignment, tuple(layers), None if cls is None else int(cls),
                    mixture=run.target_kind == "channel" and cls is None)

    def check(self, run: Run) -> None:
        self.flows.check_compatible(self.layer_names, {k: run.channels[k] for k in self.layer_names}, run.model)
        if run.target_kind == "class" and run.num_classes != self.flows.num_classes:
            raise ValueError(f"the model has {run.num_classes} classes but the flows {self.flows.num_classes}")
        if self.alignment == "quantiles":
            self.flows.class_quantiles(self.layer_names[0])  # flows without quantiles: refused now

    def _tables(self, layer: str, device):
        """The flow tensors of `layer` on `device` (read once per device)."""
        key = (layer, str(device))
        if key not in self._cache:
            read = self.flows.class_quantiles if self.alignment == "quantiles" else self.flows.class_flow
            tables = tuple(t.to(device) for t in read(layer))
            self._cache[key] = tables
        return self._cache[key]

    def _mixture(self, layer: str, device):
        """The moments of all classes' activations together (1, C) on `device` (`flow_mixture`)."""
        key = (layer, str(device), "mixture")
        if key not in self._cache:
            mix = flow_mixture(self.flows, layer)
            self._cache[key] = (mix["mean"].float()[None].to(device), mix["std"].float()[None].to(device))
        return self._cache[key]

    def value(self, step: Step) -> torch.Tensor:
        if self.mixture:
            labels, tables = torch.zeros_like(step.targets), self._mixture
        else:
            labels = step.targets if self.cls is None else torch.full_like(step.targets, self.cls)
            tables = self._tables
        align = ops.quantile_align if self.alignment == "quantiles" else ops.flow_align
        per_layer = [align(step.acts[layer], labels, *tables(layer, step.targets.device), backend=step.backend)
                     for layer in self.layer_names]
        return -torch.stack(per_layer).mean(0)


def flow_mixture(flows, layer: str) -> dict:
    """The moments of all classes' activations of `layer` together: the class-count-weighted
    mixture of the class moments, exact for the pooled training activations (every sample
    has the same number of points). Classes without samples are left out.

    Returns:
        A dict of float64 tensors: "weight" (K, 1), each class's share of the samples (0
        without samples); "class_mean" and "class_std" (K, C), 0 for a class without samples;
        "mean" and "std" (C,), the mixture's.
    """
    mean, std = flows.class_flow(layer)
    n = flows.count.to(torch.float64)[:, None]
    have = (n > 0) & torch.isfinite(mean).all(1, keepdim=True) & torch.isfinite(std).all(1, keepdim=True)
    w = torch.where(have, n, torch.zeros_like(n))
    m64 = torch.where(have, mean.double(), torch.zeros_like(mean, dtype=torch.float64))
    s64 = torch.where(have, std.double(), torch.zeros_like(std, dtype=torch.float64))
    mu = (w * m64).sum(0) / w.sum(0)
    var = (w * (s64 ** 2 + m64 ** 2)).sum(0) / w.sum(0) - mu ** 2
    return {"weight": w / w.sum(), "class_mean": m64, "class_std": s64, "mean": mu, "std": var.clamp_min(0).sqrt()}


@dataclass(eq=False, repr=False)
class Continuity(Term):
    """Minus the continuity loss (`continuity_loss`): neighbour distances like the data's.

    k None takes the flows' (their continuity target was measured with it; another k is
    refused); d2 None takes the flows' target, scaled to the run's cloud size."""

    k: int | None = None
    d2: float | None = None
    target: float | None = None  # set by bind: d2, or the flows' target at the run's cloud size
    name = "continuity"

    def __post_init__(self):
        if self.k is not None and (isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1):
            raise ValueError(f"continuity's k must be an integer >= 1, got {self.k!r}")
        if self.d2 is not None and (isinstance(self.d2, bool) or not isinstance(self.d2, (int, float))
                                    or not math.isfinite(self.d2) or self.d2 <= 0):
            raise ValueError(f"continuity's d2 must be a finite number > 0, got {self.d2!r}")

    def __str__(self) -> str:
        # The flows are not part of an objective's text (as they are not of a run's config),
        # so a target read from them is not either.
        args = ([] if self.k is None else [f"k={self.k}"]) + ([] if self.d2 is None else [f"d2={self.d2!r}"])
        return f"continuity({', '.join(args)})"

    def bind(self, run: Run) -> "Continuity":
        f = run.flows
        if self.d2 is not None:
            k = DEFAULT_K if self.k is None else self.k
            target = float(self.d2)
        elif f is None:
            raise ValueError("continuity() needs the data's neighbour distance: pass flows= to the engine, or give "
                             "continuity(k, d2=...)")
        else:
            k = f.continuity_k if self.k is None else self.k
            if k != f.continuity_k:
                raise ValueError(f"continuity_k={k}, but the flows' continuity target was measured with "
                                 f"k={f.continuity_k}; recompute the flows with continuity_k={k}")
            # Measured on clouds of the flows' size; neighbour distances on a surface scale as
            # (area / N)^(1/2), so d2 scales as 1/N.
            target = f.d2_target * (f.num_points / run.num_points if f.num_points else 1.0)
        if run.num_points <= k:
            raise ValueError(f"num_points must be > continuity_k ({k}), got {run.num_points}")
        return Continuity(k, self.d2, target)

    def value(self, step: Step) -> torch.Tensor:
        return -continuity_loss(step.points, self.k, self.target, backend=step.backend)


@dataclass(eq=False, repr=False)
class Diversity(Term):
    """Minus the mean cosine similarity between a job's features and those of the other jobs
    of its target in the batch (0 for a job alone); the features are a layer's per-channel
    means over the points, which do not depend on the points' order. None takes the model's
    last flow layer."""

    layer: str | None = None
    name = "diversity"
    couples = True

    def __str__(self) -> str:
        return "diversity()" if self.layer is None else f"diversity({_quote(self.layer)})"

    def layers(self) -> dict:
        return {self.layer: False} if self.layer else {}

    def bind(self, run: Run) -> "Diversity":
        from ..models.activations import default_layers

        layer = self.layer
        if layer is None:
            layers = list(run.flows.layers) if run.flows is not None else default_layers(run.model)
            layer = layers[-1]
        return Diversity(layer)

    def value(self, step: Step) -> torch.Tensor:
        feats = torch.nn.functional.normalize(step.acts[self.layer].mean(dim=2), dim=1)
        sim = feats @ feats.T
        same = step.targets[:, None] == step.targets[None, :]
        others = same & ~torch.eye(len(step.targets), dtype=torch.bool, device=sim.device)
        n = others.sum(1)
        return -(sim * others).sum(1) / n.clamp_min(1)


# -- what users write -------------------------------------------------------------------------
def logit() -> Objective:
    """The target class's logit. Targets are classes."""
    return Objective(((1.0, Logit()),))


def channel(layer: str) -> Objective:
    """A channel's mean activation over the points of `layer` (a module name, as `flow_layers`
    lists them). Targets are the layer's channels."""
    return Objective(((1.0, Channel(_layer_name(layer)),),))


def neuron(layer: str, point: int) -> Objective:
    """One channel of `layer` at point index `point`. Targets are the layer's channels."""
    return Objective(((1.0, Neuron(_layer_name(layer), point)),))


def flow(flows=None, alignment: str = "moments", layers=None, cls=None) -> Objective:
    """Minus the flow alignment (`Flow`): FlowAM's prior that keeps activations like the data's.

    Args:
        flows: The model's `Flows`; None takes the engine's.
        alignment: "moments" (per-channel mean and std) or "quantiles" (needs flows with quantiles).
        layers: The aligned layers; None takes the flows' layers.
        cls: For channel targets, the class whose flow is the prior (index or name); None
            takes all classes together. Not allowed with class targets (the target's flow).
    """
    return Objective(((1.0, Flow(flows, alignment, None if layers is None else tuple(layers), cls)),))


def continuity(k: int | None = None, d2: float | None = None) -> Objective:
    """Minus the continuity loss: neighbour distances like the data's (`continuity_loss`).

    Args:
        k: Neighbours per point; None takes the flows'.
        d2: The target squared neighbour distance; None takes the flows', scaled to the
            cloud size.
    """
    return Objective(((1.0, Continuity(k, d2)),))


def diversity(layer: str | None = None) -> Objective:
    """Minus the similarity of a job to the other jobs of its target (`Diversity`). The jobs of
    a target are then optimized together, in one batch."""
    return Objective(((1.0, Diversity(None if layer is None else _layer_name(layer))),))


def _layer_name(layer) -> str:
    if not isinstance(layer, str) or not layer:
        raise TypeError(f"a layer is a module name (a string such as 'feat.act3'), got {layer!r}")
    return layer


def channel_prior(layer: str, flows=None, flow_weight: float | None = None, continuity_weight: float | None = None,
                  alignment: str = "moments", cls=None) -> Objective:
    """A channel visualization with the flows as prior: channel(layer) + flow_weight * flow()
    + continuity_weight * continuity(), the weights defaulting to `names.CHANNEL_PRIOR`.

    Args:
        layer: The layer whose channels are the targets.
        flows: The flows of the prior; None takes the engine's.
        flow_weight: Weight of the flow term (0 leaves it out).
        continuity_weight: Weight of the continuity term (0 leaves it out).
        alignment: The flow term's statistics (`flow`).
        cls: The class whose flow is the prior; None takes all classes together (`flow`).
    """
    fw = CHANNEL_PRIOR["flow_weight"] if flow_weight is None else flow_weight
    cw = CHANNEL_PRIOR["continuity_weight"] if continuity_weight is None else continuity_weight
    return channel(layer) + fw * flow(flows, alignment, cls=cls) + cw * continuity()
