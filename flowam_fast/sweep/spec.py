"""The sweep spec: a TOML file naming the models, methods, classes, seeds, shard size and engine
options of a sweep (docs/design.md, "Sweeps"). This module only parses and checks the file's shape; what
the files it names hold is checked when they are loaded (inputs.py).

    classes = "all"            # or [0, 3, "chair"], or "0,3,chair"
    seeds = "0-9"              # or [0, 1, 5]
    methods = ["flowam", "vanilla"]
    shard_size = 16
    [engine]                   # FlowAM options for every method
    steps = 600
    [engine.vanilla]           # overrides for one method
    steps = 300
    [[models]]
    name = "pointnet"
    checkpoint = "model.pt"    # relative to the spec file
    flows = "flows.h5"
    [[models]]                 # your own model (see flowam_fast.models.load_checkpoint)
    name = "mine"
    checkpoint = "mine.pt"     # its state_dict (or, with trusted = true, the whole module)
    flows = "mine_flows.h5"
    factory = "mypkg.nets:build"   # builds the module; not with arch
    logits = 0                 # where its output holds the logits (as_classifier); or "fc3"
    trusted = false            # true: the file may pickle code (only for files you trust)
"""
from __future__ import annotations

import inspect
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..am.engine import FlowAM
from ..am.grid import parse_seeds
from ..am.names import METHODS
from ..am.reprs import counted, int_ranges, short_list

DEFAULT_SHARD_SIZE = 16
#: Engine options a spec may set, with the TOML types they take. All but batch_size are FlowAM
#: keyword arguments (tests/sweep checks that); batch_size caps the jobs one engine batch holds
#: inside a shard (memory), and changes no result (the engine is batch-composition invariant).
OPTION_TYPES = {"steps": int, "lr": float, "flow_weight": float, "continuity_weight": float, "continuity_k": int,
                "num_points": int, "init": str, "init_scale": float, "clamp": bool, "layers": list, "backend": str,
                "alignment": str, "batch_size": int}
_TOP_KEYS = {"classes", "seeds", "methods", "shard_size", "engine", "models"}
_MODEL_KEYS = {"name", "checkpoint", "flows", "arch", "autoencoder", "factory", "logits", "trusted"}
# Model names become directory names: keep them to one safe path component.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
#: How a [[models]] entry's checkpoint loads when the entry says nothing more: a built-in model.
DEFAULT_LOADING = {"factory": None, "logits": None, "trusted": False}
#: Seeds are stored as int64 and seed numpy's SeedSequence, which takes no negative entropy.
MAX_SEED = 2**63 - 1


class SpecError(ValueError):
    """A sweep spec that cannot be run, with the reason."""


def engine_parameters() -> set:
    """The FlowAM keyword arguments a spec can set (the rest are the sweep's to give)."""
    return set(inspect.signature(FlowAM.__init__).parameters) - {"self", "model", "flows", "method", "autoencoder",
                                                                   "device", "quiet"}


@dataclass(frozen=True)
class ModelSpec:
    """One `[[models]]` entry: its files and how its checkpoint is loaded (`arch`, or your own
    module through `factory` / `trusted`, adapted by `logits`: see
    `flowam_fast.models.load_checkpoint` and `as_classifier`)."""

    name: str
    checkpoint: Path
    flows: Path
    arch: str | None = None
    autoencoder: Path | None = None
    factory: str | None = None
    logits: int | str | None = None
    trusted: bool = False

    def loading(self) -> dict:
        """The settings beyond the checkpoint's contents that decide which model it loads as
        (DEFAULT_LOADING's keys): what a sweep hashes and compares besides the files."""
        return {"factory": self.factory, "logits": self.logits, "trusted": self.trusted}

    def to_dict(self) -> dict:
        return {"name": self.name, "checkpoint": str(self.checkpoint), "flows": str(self.flows), "arch": self.arch,
                "autoencoder": str(self.autoencoder) if self.autoencoder else None, "factory": self.factory,
                "logits": self.logits, "trusted": self.trusted}


@dataclass(repr=False)
class SweepSpec:
    """A parsed and checked sweep spec (see `load_spec`).

    Attributes:
        classes: The classes as written ("all" or a comma list), resolved per model against
            its flows' class names.
        seeds: The seeds, resolved.
        methods: The AM methods, each once.
        models: The models, each with its checkpoint, flows and optional autoencoder (paths
            absolute).
        shard_size: Jobs per shard.
        engine: FlowAM options common to every method.
        method_engine: Per-method FlowAM options, overriding the common ones.
        source: The spec file, if it came from one.
    """

    classes: str
    seeds: list
    methods: list
    models: list
    shard_size: int = DEFAULT_SHARD_SIZE
    engine: dict = field(default_factory=dict)
    method_engine: dict = field(default_factory=dict)
    source: Path | None = None

    def __repr__(self) -> str:
        # Seeds can number thousands and model paths are absolute: counts and names, not lists.
        models = [m.name for m in self.models]
        source = f", source={self.source.name!r}" if self.source else ""
        return (f"SweepSpec({counted(len(models), 'model')} {short_list(models)}, methods {list(self.methods)}, "
                f"classes {self.classes!r}, {counted(len(self.seeds), 'seed')} {int_ranges(self.seeds)}, "
                f"shard_size={self.shard_size}, engine {self.engine}{source})")

    def options(self, method: str) -> dict:
        """The engine options of one method: the common ones, then its overrides."""
        return {**self.engine, **self.method_engine.get(method, {})}

    def to_dict(self) -> dict:
        """The spec as a JSON-ready dict (the record a sweep keeps to tell a changed spec)."""
        engine = {**self.engine, **{m: dict(o) for m, o in self.method_engine.items()}}
        return {"classes": self.classes, "seeds": list(self.seeds), "methods": list(self.methods),
                "shard_size": self.shard_size, "engine": engine, "models": [m.to_dict() for m in self.models],
                "source": str(self.source) if self.source else None}


def load_spec(path) -> SweepSpec:
    """Read and check the TOML sweep spec at `path`.

    Relative paths in the spec are relative to its directory.

    Returns:
        The parsed spec.

    Raises:
        FileNotFoundError: There is no file at `path`.
        SpecError: The file is not valid TOML, or the spec cannot be run (the message names
            the file and the reason).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep spec not found: {path}")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}") from None
    try:
        return parse_spec(raw, base_dir=path.parent, source=path)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None


def parse_spec(raw: dict, base_dir=".", source=None) -> SweepSpec:
    """Check a spec given as a dict of its tables.

    Args:
        raw: The spec's tables, as TOML parses them.
        base_dir: The directory relative paths are relative to.
        source: The file the spec came from, if any.

    Returns:
        The parsed spec.

    Raises:
        SpecError: An unknown or missing key, an unknown or repeated method, an invalid
            shard size, seeds, engine options or model entry.
    """
    base_dir = Path(base_dir).resolve()
    _no_unknown(raw, _TOP_KEYS, "the spec")
    for key in ("seeds", "methods", "models"):
        if key not in raw:
            raise SpecError(f"the spec has no {key!r}")
    methods = raw["methods"]
    if not isinstance(methods, list) or not methods or not all(isinstance(m, str) for m in methods):
        raise SpecError(f"methods must be a non-empty list of method names, got {methods!r}")
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise SpecError(f"unknown method(s) {bad}; choose from {list(METHODS)}")
    if len(set(methods)) != len(methods):
        raise SpecError(f"methods lists a method twice: {methods}")
    shard_size = raw.get("shard_size", DEFAULT_SHARD_SIZE)
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise SpecError(f"shard_size must be a positive integer, got {shard_size!r}")
    engine, per_method = _engine(raw.get("engine", {}), methods)
    models = _models(raw["models"], base_dir, methods)
    return SweepSpec(classes=_classes(raw.get("classes", "all")), seeds=_seeds(raw["seeds"]), methods=list(methods),
                     models=models, shard_size=shard_size, engine=engine, method_engine=per_method,
                     source=Path(source).resolve() if source else None)


def _no_unknown(table: dict, known: set, where: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise SpecError(f"unknown key(s) {unknown} in {where}; known: {sorted(known)}")


def _classes(value) -> str:
    """The class list as parse_classes reads it ("all" or a comma list)."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, list) and value and all(isinstance(c, (int, str)) and not isinstance(c, bool)
                                                 for c in value):
        return ",".join(str(c) for c in value)
    raise SpecError(f'classes must be "all", a list of class indices and names, or a comma list; got {value!r}')


def _seeds(value) -> list:
    if isinstance(value, str):
        try:
            seeds = parse_seeds(value)
        except ValueError as exc:
            raise SpecError(f"seeds {value!r}: {exc}") from None
    elif isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        seeds = list(value)
    else:
        raise SpecError(f'seeds must be a range string like "0-9" or a list of integers, got {value!r}')
    bad = [s for s in seeds if not 0 <= s <= MAX_SEED]
    if bad:
        raise SpecError(f"seeds must be in 0..{MAX_SEED}, got {bad[:5]}")
    return list(dict.fromkeys(seeds))


def _engine(table, methods) -> tuple:
    if not isinstance(table, dict):
        raise SpecError(f"[engine] must be a table, got {table!r}")
    common = {k: v for k, v in table.items() if not isinstance(v, dict)}
    per_method = {k: v for k, v in table.items() if isinstance(v, dict)}
    for m, sub in per_method.items():
        if m not in METHODS:
            raise SpecError(f"[engine.{m}]: {m!r} is not a method; sub-tables of [engine] override the options of "
                            f"one of {list(METHODS)}")
        if m not in methods:
            raise SpecError(f"[engine.{m}] sets options of a method that the spec does not run ({methods})")
        _check_options(sub, f"[engine.{m}]")
    _check_options(common, "[engine]")
    return common, per_method


def _check_options(options: dict, where: str) -> None:
    _no_unknown(options, set(OPTION_TYPES), where)
    for key, value in options.items():
        want = OPTION_TYPES[key]
        if not _has_type(value, want):
            kind = "a list of layer names" if want is list else want.__name__
            raise SpecError(f"{where} {key} must be {kind}, got {value!r}")
    if options.get("batch_size", 1) < 1:
        raise SpecError(f"{where} batch_size must be at least 1")


def _has_type(value, want) -> bool:
    if want is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):  # TOML's true is no number
        return False
    if want is float:
        return isinstance(value, (int, float))
    if want is list:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return isinstance(value, want)


def _path(base_dir: Path, text: str) -> Path:
    return (base_dir / Path(text).expanduser()).resolve()


def _models(entries, base_dir: Path, methods) -> list:
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise SpecError("models must be a non-empty array of tables ([[models]])")
    out, names = [], set()
    for i, e in enumerate(entries):
        where = f"models[{i}]" + (f" ({e['name']!r})" if isinstance(e.get("name"), str) else "")
        _no_unknown(e, _MODEL_KEYS, where)
        for key in ("name", "checkpoint", "flows"):
            if not isinstance(e.get(key), str) or not e[key]:
                raise SpecError(f"{where} needs {key} = \"...\"")
        name = e["name"]
        if not _NAME.match(name):
            raise SpecError(f"{where}: model names become directory names; use letters, digits, '_', '-' and '.'")
        if name in names:
            raise SpecError(f"two models are named {name!r}")
        names.add(name)
        arch = e.get("arch")
        if arch is not None and not isinstance(arch, str):
            raise SpecError(f"{where}: arch must be a string")
        factory, logits, trusted = e.get("factory"), e.get("logits"), e.get("trusted", False)
        if factory is not None and not (isinstance(factory, str) and _FACTORY.match(factory)):
            raise SpecError(f'{where}: factory must name a callable as "package.module:name", got {factory!r}')
        if factory is not None and arch is not None:
            raise SpecError(f"{where}: give arch (a built-in architecture) or factory (your own module), not both")
        if logits is not None and (isinstance(logits, bool) or not isinstance(logits, (int, str)) or logits == ""):
            raise SpecError(f'{where}: logits must be an index into the output (0) or a dict key or submodule name '
                            f'("fc3"), got {logits!r}')
        if not isinstance(trusted, bool):
            raise SpecError(f"{where}: trusted must be true or false, got {trusted!r}")
        ae = e.get("autoencoder")
        if "ae-latent" in methods and not ae:
            raise SpecError(f"{where}: method 'ae-latent' needs autoencoder = \"ae.pt\"")
        out.append(ModelSpec(name=name, checkpoint=_path(base_dir, e["checkpoint"]), flows=_path(base_dir, e["flows"]),
                             arch=arch, autoencoder=_path(base_dir, ae) if ae else None, factory=factory,
                             logits=logits, trusted=trusted))
    return out
