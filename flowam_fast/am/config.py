"""A run's identity: `AMConfig`, the settings of an activation-maximization run that change its
results, validated where it is made, compared with `matches`, stored with `to_json` and read
back (from the stored form of any earlier version) with `from_json`; and `cloud_size`, the one
rule for the number of points of a run's clouds. Torch-free, so that the command line takes its
defaults from here (docs/design.md, "Run identity").
"""
from __future__ import annotations

import json
import math
import operator
from dataclasses import dataclass, fields

from ..identity import Identity, setting
from .names import ALIGNMENTS, GENERAL, INITS, METHODS
from .reprs import model_name, short_list

#: Points per cloud where neither the flows nor the checkpoint record a count.
DEFAULT_NUM_POINTS = 1024


@dataclass(repr=False)
class AMConfig(Identity):
    """The settings of an activation-maximization run (`FlowAM.config`), validated when made.

    The identity fields change the explanations and are what stores record (`to_json`) and
    compare (`matches`); `backend`, `device` and `quiet` do not change them (nor does the batch
    size, an argument of `FlowAM.run`) and are neither stored nor compared.

    Versions of the stored form (`VERSION` is the current one): 1 had no `autoencoder`
    (implied ""), 2 had no `alignment` (implied "moments"), 3 writes `alignment` only where it
    is not "moments", 4 adds the general engine's `objective` and `target_layer` (implied "",
    written only by method "am"). A field added later gets a `since` and an `implied` value,
    and is written only where it differs from that value (so earlier stores keep matching).

    Methods: the presets (`names.METHODS`) are defined by their weights (`flow_weight`,
    `continuity_weight`, `alignment`, `layers`); method "am" (`flowam_fast.am.AM`) by its
    `objective`, the bound objective's text, and `target_layer`, the layer whose channels its
    targets are ("" for classes), with the preset weights at 0.

    Steps: every method optimizes for at least one step except "random", whose clouds are drawn
    and never optimized: it records steps=0 and takes no other value.

    Raises:
        ValueError: A field out of range, or a name not among its choices; the message names
            the field (`flow_weight must be >= 0, got -1.0`).
        TypeError: A field of the wrong type (a string for a number, say).
    """

    VERSION = 4
    NAME = "AM config"

    method: str = "flowam"
    steps: int = 600
    lr: float = 0.01
    flow_weight: float = 100.0
    continuity_weight: float = 1.0
    continuity_k: int = 3
    num_points: int = DEFAULT_NUM_POINTS
    init: str = "uniform"
    init_scale: float = 0.5
    clamp: bool = True
    layers: tuple = ()
    autoencoder: str = setting("", since=2, implied="")
    alignment: str = setting("moments", since=3, implied="moments", sparse=True)
    objective: str = setting("", since=4, implied="", sparse=True)
    target_layer: str = setting("", since=4, implied="", sparse=True)
    backend: str = setting("auto", identity=False)
    device: str | None = setting(None, identity=False)
    quiet: bool = setting(False, identity=False)

    def __post_init__(self):
        self.method = _choice("method", self.method, METHODS + (GENERAL,))
        self.alignment = _choice("alignment", self.alignment, ALIGNMENTS)
        self.init = _choice("init", self.init, INITS)
        self.steps = _integer("steps", self.steps)
        if self.method == "random" and self.steps != 0:
            raise ValueError(f"steps must be 0 for method 'random' (its clouds are not optimized), got {self.steps}")
        if self.method != "random" and self.steps < 1:
            raise ValueError(f"steps must be >= 1 for method {self.method!r}, got {self.steps}")
        self.lr = _number("lr", self.lr, positive=True)
        self.flow_weight = _number("flow_weight", self.flow_weight)
        self.continuity_weight = _number("continuity_weight", self.continuity_weight)
        self.init_scale = _number("init_scale", self.init_scale, positive=True)
        self.continuity_k = _integer("continuity_k", self.continuity_k)
        if self.continuity_k < 1:
            raise ValueError(f"continuity_k must be >= 1, got {self.continuity_k}")
        self.num_points = _integer("num_points", self.num_points)
        if self.num_points <= self.continuity_k:
            raise ValueError(f"num_points must be > continuity_k ({self.continuity_k}), got {self.num_points}")
        if not isinstance(self.clamp, bool):
            raise TypeError(f"clamp must be True or False, got {self.clamp!r}")
        if isinstance(self.layers, str) or not all(isinstance(layer, str) for layer in self.layers):
            raise TypeError(f"layers must be a sequence of layer names, got {self.layers!r}")
        self.layers = tuple(self.layers)
        if not isinstance(self.autoencoder, str):
            raise TypeError(f"autoencoder must be the autoencoder's description (JSON), got {type(self.autoencoder)}")
        if not isinstance(self.objective, str) or not isinstance(self.target_layer, str):
            raise TypeError("objective and target_layer must be strings (an objective's text, a layer name)")
        if (self.method == GENERAL) != bool(self.objective):
            raise ValueError(f"method {GENERAL!r} needs its objective's text, and only it has one (method "
                             f"{self.method!r}, objective {self.objective!r})")
        if self.target_layer and self.method != GENERAL:
            raise ValueError(f"target_layer is method {GENERAL!r}'s (channel targets), not {self.method!r}'s")
        if self.method == GENERAL and (self.flow_weight or self.continuity_weight or self.layers):
            raise ValueError(f"method {GENERAL!r} is defined by its objective: flow_weight, continuity_weight and "
                             "layers stay at 0, 0 and ()")
        if self.device is not None:
            self.device = str(self.device)

    def __repr__(self) -> str:
        # The settings that define a run always; the rest only where they differ from the default.
        always = ("method", "steps", "lr", "flow_weight", "continuity_weight", "num_points")
        default, hidden = AMConfig(), ("layers", "autoencoder")
        if self.method == GENERAL:  # the objective says what the preset weights would
            always = ("method", "objective", "steps", "lr", "num_points")
            hidden += ("flow_weight", "continuity_weight", "continuity_k")
        shown = [f"{k}={getattr(self, k)!r}" for k in always]
        shown += [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.name not in always + hidden
                  and getattr(self, f.name) != getattr(default, f.name)]
        if self.layers:
            shown.append(f"layers={short_list(self.layers, 2)} ({len(self.layers)})")
        if self.autoencoder:
            shown.append(f"autoencoder={model_name(self.autoencoder)!r}")
        return f"AMConfig({', '.join(shown)})"

    def objective_key(self) -> str:
        """The stored form without the method's name, which only labels a run: two methods
        that optimize one objective (FlowAM at flow weight 0 and regularized AM) give the same
        explanations bit for bit, and the same `objective_key()`."""
        return json.dumps({k: v for k, v in json.loads(self.to_json()).items() if k != "method"}, sort_keys=True)


def stored_config(config) -> AMConfig:
    """An AMConfig from itself or its stored form (`AMConfig.from_json`)."""
    return config if isinstance(config, AMConfig) else AMConfig.from_json(config)


def migrated(text: str) -> str:
    """A stored config in today's stored form where it can be read (so that a field an
    earlier version left implicit is not reported as a change), else the text as it is."""
    try:
        return AMConfig.from_json(text).to_json()
    except (ValueError, TypeError):
        return text


def cloud_size(num_points=None, *, autoencoder=None, flows=None, checkpoint=None) -> int:
    """The number of points of a run's clouds, by one rule everywhere (Python, command line,
    sweeps): the caller's `num_points`, else the autoencoder's (it decodes a fixed count), else
    the flows' (the count they were computed at), else the checkpoint's (`num_points` in its
    meta), else DEFAULT_NUM_POINTS.

    Args:
        num_points: The caller's choice; None (or 0) for none.
        autoencoder: The autoencoder of method "ae-latent", or None.
        flows: The run's `Flows`, or None; flows that record no count (older files) count as none.
        checkpoint: The classifier's checkpoint path, or None; a file without a readable meta
            counts as none.

    Returns:
        The point count.
    """
    if num_points:
        return int(num_points)
    if autoencoder is not None:
        return int(autoencoder.num_points)
    if flows is not None and flows.num_points:
        return int(flows.num_points)
    if checkpoint is not None:
        from ..models.checkpoint import CheckpointError, checkpoint_meta

        try:
            meta = checkpoint_meta(checkpoint)
        except (CheckpointError, FileNotFoundError):
            meta = {}
        if isinstance(meta.get("num_points"), int) and meta["num_points"] > 0:
            return meta["num_points"]
    return DEFAULT_NUM_POINTS


def _choice(name: str, value, choices) -> str:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
    return value


def _integer(name: str, value) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise TypeError(f"{name} must be an integer, got {value!r}") from None


def _number(name: str, value, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be a finite number {'>' if positive else '>='} 0, got {value}")
    return value
