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
from dataclasses import dataclass, field, fields

from .names import ALIGNMENTS, INITS, METHODS
from .reprs import model_name, short_list

#: Points per cloud where neither the flows nor the checkpoint record a count.
DEFAULT_NUM_POINTS = 1024


def _settings(identity: bool = True, since: int = 1, implied=None, sparse: bool = False) -> dict:
    """A field's place in the run's identity. identity: the field changes results (stored,
    compared); since: the config version that added it; implied: its value in stores of
    earlier versions (which lack it); sparse: written only where it differs from `implied`, so
    that a config an earlier version could express keeps that version's stored form (and the
    sweeps' shard names, which hash it)."""
    return {"identity": identity, "since": since, "implied": implied, "sparse": sparse}


@dataclass(repr=False)
class AMConfig:
    """The settings of an activation-maximization run (`FlowAM.config`), validated when made.

    The identity fields change the explanations and are what stores record (`to_json`) and
    compare (`matches`); `backend`, `device` and `quiet` do not change them (nor does the batch
    size, an argument of `FlowAM.run`) and are neither stored nor compared.

    Versions of the stored form (`VERSION` is the current one): 1 had no `autoencoder`
    (implied ""), 2 had no `alignment` (implied "moments"), 3 writes `alignment` only where it
    is not "moments". A field added later gets a `since` and an `implied` value, and is
    written only where it differs from that value (so earlier stores keep matching).

    Steps: every method optimizes for at least one step except "random", whose clouds are drawn
    and never optimized: it records steps=0 and takes no other value.

    Raises:
        ValueError: A field out of range, or a name not among its choices; the message names
            the field (`flow_weight must be >= 0, got -1.0`).
        TypeError: A field of the wrong type (a string for a number, say).
    """

    VERSION = 3

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
    autoencoder: str = field(default="", metadata=_settings(since=2, implied=""))
    alignment: str = field(default="moments", metadata=_settings(since=3, implied="moments", sparse=True))
    backend: str = field(default="auto", metadata=_settings(identity=False))
    device: str | None = field(default=None, metadata=_settings(identity=False))
    quiet: bool = field(default=False, metadata=_settings(identity=False))

    def __post_init__(self):
        self.method = _choice("method", self.method, METHODS)
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
        if self.device is not None:
            self.device = str(self.device)

    def __repr__(self) -> str:
        # The settings that define a run always; the rest only where they differ from the default.
        always = ("method", "steps", "lr", "flow_weight", "continuity_weight", "num_points")
        default = AMConfig()
        shown = [f"{k}={getattr(self, k)!r}" for k in always]
        shown += [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.name not in always
                  + ("layers", "autoencoder") and getattr(self, f.name) != getattr(default, f.name)]
        if self.layers:
            shown.append(f"layers={short_list(self.layers, 2)} ({len(self.layers)})")
        if self.autoencoder:
            shown.append(f"autoencoder={model_name(self.autoencoder)!r}")
        return f"AMConfig({', '.join(shown)})"

    @classmethod
    def identity_fields(cls) -> tuple:
        """The names of the fields that change results, in order."""
        return tuple(f.name for f in fields(cls) if f.metadata.get("identity", True))

    def identity(self) -> dict:
        """{field: value} of the identity fields."""
        return {name: getattr(self, name) for name in self.identity_fields()}

    def to_json(self) -> str:
        """The stored form: the identity fields as a JSON object with sorted keys, a sparse
        field left out at its implied value (see the class docstring)."""
        out = {}
        for f in fields(self):
            meta, value = f.metadata, getattr(self, f.name)
            if not meta.get("identity", True) or (meta.get("sparse") and value == meta["implied"]):
                continue
            out[f.name] = list(value) if f.name == "layers" else value
        return json.dumps(out, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "AMConfig":
        """Read a config from its stored form, that of this version or of any earlier one.

        Args:
            text: A JSON object as `to_json` writes it (or wrote it in an earlier version).

        Returns:
            The config, with the fields an earlier version lacked at their implied values.

        Raises:
            ValueError: Not a JSON object, a field missing that every version stores, fields
                unknown to this version (a store of a newer flowam_fast), or an invalid value.
        """
        try:
            stored = json.loads(text)
        except (TypeError, json.JSONDecodeError):
            stored = None
        if not isinstance(stored, dict):
            raise ValueError(f"not a stored AM config (a JSON object): {str(text)[:80]!r}")
        version = stored.pop("version", cls.VERSION)
        if not isinstance(version, int) or version > cls.VERSION:
            raise ValueError(f"AM config of version {version!r}; this flowam_fast reads versions up to {cls.VERSION}: "
                             "upgrade it")
        known = {f.name: f for f in fields(cls) if f.metadata.get("identity", True)}
        unknown = sorted(set(stored) - set(known))
        if unknown:
            raise ValueError(f"AM config with fields unknown to this version ({', '.join(unknown)}): written by a "
                             "newer flowam_fast? upgrade it")
        # A field added after version 1 is missing from the stores of the versions before it.
        implied = {name: f.metadata["implied"] for name, f in known.items() if f.metadata.get("since", 1) > 1}
        missing = [name for name in known if name not in stored and name not in implied]
        if missing:
            raise ValueError(f"stored AM config lacks {', '.join(map(repr, missing))}: {str(text)[:80]!r}")
        values = {**implied, **stored}
        values["layers"] = tuple(values["layers"]) if isinstance(values["layers"], list) else values["layers"]
        return cls(**values)

    def objective(self) -> str:
        """The stored form without the method's name, which only labels a run: two methods
        that optimize one objective (FlowAM at flow weight 0 and regularized AM) give the same
        explanations bit for bit, and the same `objective()`."""
        return json.dumps({k: v for k, v in json.loads(self.to_json()).items() if k != "method"}, sort_keys=True)

    def matches(self, other) -> bool:
        """Whether `other` names the same run: equal identity fields, whatever the rest.

        Args:
            other: An AMConfig, or a stored config (JSON, of any version); one that cannot be
                read matches nothing.
        """
        if isinstance(other, str):
            try:
                other = AMConfig.from_json(other)
            except (ValueError, TypeError):
                return False
        return isinstance(other, AMConfig) and self.identity() == other.identity()


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
