"""A sweep's inputs, loaded and checked before any long work: every checkpoint, flows file and
autoencoder is read, the flows are checked against their model, the classes are resolved, and
one engine per (model, method) is built on the CPU (which checks every engine option). A bad
input fails the sweep here, with its reason, not hours later in a worker."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import __version__
from ..am.config import cloud_size
from ..am.engine import FlowAM
from ..am.flows import Flows
from ..am.grid import parse_classes
from ..models import ClassifierOutputError, as_classifier, classify, load_checkpoint
from .spec import DEFAULT_LOADING, SpecError, SweepSpec


def file_digest(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class ModelInputs:
    """One model of the spec, loaded: the classifier, its flows and autoencoder (CPU), the
    sha256 of each file, its classes resolved against the flows' class names, and how its
    checkpoint was loaded (`ModelSpec.loading`)."""

    name: str
    model: torch.nn.Module
    flows: Flows
    autoencoder: torch.nn.Module | None
    files: dict  # what -> {"path": str, "sha256": str}
    classes: list
    loading: dict = field(default_factory=lambda: dict(DEFAULT_LOADING))

    def payload(self) -> tuple:
        """What a worker needs to build this model's engines."""
        return self.model, self.flows, self.autoencoder


@dataclass(frozen=True)
class Unit:
    """One (model, method) of a sweep: its jobs in (class, seed) order, the FlowAM options it
    runs with, the engine's config (the stores' `config`), and the hash that names its shards."""

    model: str
    method: str
    options: dict
    batch_size: int | None
    config: str
    digest: str
    jobs: tuple
    files: dict
    loading: dict = field(default_factory=lambda: dict(DEFAULT_LOADING))

    @property
    def key(self) -> str:
        return f"{self.model}/{self.method}"

    def record(self) -> dict:
        """What sweep.json keeps of the unit, to tell a later run what changed."""
        return {"config": self.config, "options": dict(self.options), "files": self.files,
                "loading": dict(self.loading), "hash": self.digest,
                "classes": sorted({c for c, _ in self.jobs}), "seeds": sorted({s for _, s in self.jobs})}


def _load(what: str, path: Path, load):
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return load(path)


def load_inputs(spec: SweepSpec) -> dict:
    """name -> ModelInputs for every model of the spec, each checked (see the module docstring)."""
    from ..am.autoencoder import load_autoencoder

    out = {}
    for m in spec.models:
        try:
            model = _load("checkpoint", m.checkpoint,
                          lambda p: load_checkpoint(p, arch=m.arch, factory=m.factory, trusted=m.trusted))
            if m.logits is not None:
                model = as_classifier(model, m.logits)
            flows = _load("flows file", m.flows, Flows.load)
            ae = _load("autoencoder", m.autoencoder, load_autoencoder) if m.autoencoder else None
            classes = parse_classes(spec.classes, flows.class_names, flows.num_classes)
        except (ValueError, FileNotFoundError) as exc:
            raise type(exc)(f"model {m.name!r}: {exc}") from None
        files = {"checkpoint": m.checkpoint, "flows": m.flows, **({"autoencoder": m.autoencoder} if ae else {})}
        out[m.name] = ModelInputs(name=m.name, model=model, flows=flows, autoencoder=ae, classes=classes,
                                  files={k: {"path": str(p), "sha256": file_digest(p)} for k, p in files.items()},
                                  loading=m.loading())
    return out


def _num_points(options: dict, method: str, inp: ModelInputs) -> int:
    return cloud_size(options.get("num_points"), autoencoder=inp.autoencoder if method == "ae-latent" else None,
                      flows=inp.flows, checkpoint=inp.files["checkpoint"]["path"])


def make_engine(payload: tuple, method: str, options: dict, device=None) -> FlowAM:
    """A unit's engine on `device`, from a ModelInputs.payload() (in the driver or a worker)."""
    model, flows, ae = payload
    if device is not None:
        model = model.to(device)
        ae = ae.to(device) if ae is not None else None
    return FlowAM(model, flows, method=method, autoencoder=ae if method == "ae-latent" else None, device=device,
                  quiet=True, **options)


def unit_digest(config: str, options: dict, files: dict, loading: dict | None = None) -> str:
    """Names a unit's shard files: what a job's explanation depends on, and nothing else (not
    the classes, seeds or shard size, so adding seeds keeps the finished shards). `loading`
    (`ModelSpec.loading`) counts where it differs from DEFAULT_LOADING: the same file loads
    as another model through another factory or logits, and a built-in model's digest stays
    what it was before these settings existed."""
    settings = {"config": config, "options": options, "files": {k: f["sha256"] for k, f in files.items()},
                "version": __version__}
    if loading and loading != DEFAULT_LOADING:
        settings["loading"] = loading
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _check_logits(inp: ModelInputs, num_points: int) -> None:
    """An own model must return logits: run it once, and say in the spec's words what to set
    where it does not (a fault FlowAM's own check would blame on the flows)."""
    if inp.loading == DEFAULT_LOADING:
        return
    try:
        with torch.no_grad():
            classify(inp.model, torch.rand(2, 3, num_points) - 0.5)
    except ClassifierOutputError as exc:
        how = f"logits = {exc.fix!r}" if exc.fix is not None else \
            "logits = the index, dict key or submodule name of the logits"
        raise SpecError(f"model {inp.name!r}: {exc.problem}; a classifier must return logits (B, K): set {how} in "
                        "its [[models]] entry") from None
    except (RuntimeError, ValueError) as exc:
        raise SpecError(f"model {inp.name!r} fails on {num_points} random points: {exc}") from None


def make_units(spec: SweepSpec, inputs: dict) -> list:
    """Every (model, method) of the spec as a Unit, in spec order; building each one's engine
    on the CPU checks its options against the model, the flows and the autoencoder."""
    units = []
    for m in spec.models:
        inp = inputs[m.name]
        _check_logits(inp, _num_points(spec.options("flowam"), "flowam", inp))
        try:
            # FlowAM's own check of the flows against the model (layers, channels, tap version,
            # classes), for every model, whichever methods the sweep runs.
            flowam = spec.options("flowam")
            FlowAM(inp.model, inp.flows, method="flowam", quiet=True, num_points=_num_points(flowam, "flowam", inp),
                   **({"layers": flowam["layers"]} if "layers" in flowam else {}))
            inp.flows.check_classes(inp.classes)
        except ValueError as exc:
            raise SpecError(f"model {m.name!r}: flows {m.flows} do not fit checkpoint {m.checkpoint}: {exc}") from None
        for method in spec.methods:
            options = spec.options(method)
            # Kept apart from the hashed options: it sets memory use, not results.
            batch_size = options.pop("batch_size", None)
            options["num_points"] = _num_points(options, method, inp)
            files = {k: v for k, v in inp.files.items() if k != "autoencoder" or method == "ae-latent"}
            jobs = tuple(sorted({(c, s) for c in inp.classes for s in spec.seeds}))
            try:
                config = make_engine(inp.payload(), method, options).config.to_json()
            except (ValueError, TypeError) as exc:
                raise SpecError(f"{m.name}/{method}: {exc}") from None
            units.append(Unit(m.name, method, options, batch_size, config,
                              unit_digest(config, options, files, inp.loading), jobs, files, inp.loading))
    return units
