"""Activation flows: per-class, per-channel statistics of a model's per-point activations over
all points of all training samples of each class (docs/design.md), plus the data bounds and the
continuity target the FlowAM objective needs.

`compute_flows` makes one pass over the data; the reduction runs in the fused `flow_stats`
op and batches are merged with Chan's parallel update.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import h5py
import numpy as np
import torch
from tqdm import tqdm

from .. import __version__, ops
from ..atomic import atomic_path
from ..identity import Identity, setting
from ..models.activations import default_layers, get_activations
from ..models.adapter import layer_root
from ..ops.quantile_align import sample_quantiles
from .reprs import counted, model_name, short_list


@dataclass(repr=False)
class ModelDescription(Identity):
    """What flows and explanations record of the model that made them (`describe`): its class,
    size and architecture settings, where an adapted classifier reads its logits, and the
    version of its activation taps (`tap_version`: a built-in model's taps that move get the
    next version, and flows of another version are refused, `Flows.check_taps`). The settings a
    model lacks are left out of the stored form.

    Stored forms: version 1 had no `tap_version` (implied 1, the first taps).
    """

    VERSION = 2
    NAME = "model description"

    arch: str = setting(key="class")
    parameters: int = 0
    num_classes: int | None = setting(None, sparse=True)
    k: int | None = setting(None, sparse=True)
    emb_dims: int | None = setting(None, sparse=True)
    width: float | None = setting(None, sparse=True)
    feature_transform: bool | None = setting(None, sparse=True)
    logits: int | str | None = setting(None, sparse=True)
    tap_version: int | None = setting(None, since=2, implied=1, sparse=True)

    @classmethod
    def of(cls, model: torch.nn.Module) -> "ModelDescription":
        """The description of `model`; an adapted classifier is described by its wrapped module
        and where its logits are read."""
        root = layer_root(model)
        extra = {k: getattr(root, k) for k in ("num_classes", "k", "emb_dims", "width", "feature_transform",
                                                "tap_version")
                 if isinstance(getattr(root, k, None), (int, float, bool))}
        if root is not model:
            extra["logits"] = model.logits if isinstance(model.logits, (int, str)) else getattr(
                model.logits, "__name__", type(model.logits).__name__)
        return cls(arch=type(root).__name__, parameters=sum(p.numel() for p in model.parameters()), **extra)

    def to_json(self) -> str:
        # A model without taps of its own (a DGCNN, an own model) writes no version of them,
        # as its stored form always did; one with version 1 writes it, as it always did.
        stored = json.loads(super().to_json())
        stored.pop("tap_version", None)
        if self.tap_version is not None:
            stored["tap_version"] = self.tap_version
        return json.dumps(stored, sort_keys=True)


def describe_model(model: torch.nn.Module) -> str:
    """The stored form of `ModelDescription.of(model)`, as flows and explanations record it."""
    return ModelDescription.of(model).to_json()


@dataclass(repr=False)
class Flows:
    """Per-class activation flows of one model, with the data geometry FlowAM needs.

    Made by `compute_flows`; stored in HDF5 by `save` and read back by `load`.

    The quantiles of a class are the mean over its training samples of each sample's quantile
    function over its points. That mean is the Wasserstein-2 barycenter of the samples'
    distributions, the one target closest to all of them on average, which is what a single
    cloud is compared with; it also reduces batch by batch, as the moments do, at K x C x Q
    numbers per layer whatever the number of samples.

    Attributes:
        layers: Names of the layers with flows, in order.
        mean: Per layer, each class's per-channel mean over all points of its samples
            (K, C_l), float32.
        std: Per layer, the matching population std (K, C_l), float32; NaN for a class
            without samples.
        count: Training samples per class (K,), int64.
        lo: Per-axis lower bounds of the data (3,).
        hi: Per-axis upper bounds of the data (3,).
        d2_target: Mean squared distance of a training point to its `continuity_k` nearest
            neighbours (self excluded), on clouds of `num_points` points.
        continuity_k: Neighbours of `d2_target`.
        class_names: Names of the classes (may be empty).
        model: A description of the model, as JSON.
        num_points: Points per training cloud, the count the flows were computed at (the
            default cloud size of runs with them, `am.config.cloud_size`); 0 where unknown.
        quantiles: Optional, for FlowAM's `alignment="quantiles"`: per layer, each class's
            quantile function per channel at the Q levels (j + 0.5) / Q, (K, C_l, Q) float32;
            None when not computed.
    """

    layers: list
    mean: dict
    std: dict
    count: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor
    d2_target: float
    continuity_k: int = 3
    class_names: list = field(default_factory=list)
    model: str = ""
    num_points: int = 0
    quantiles: dict | None = None

    def __repr__(self) -> str:
        layers = [f"{layer} ({int(self.mean[layer].shape[1])})" for layer in self.layers]
        if len(layers) > 3:
            layers = [*layers[:2], "...", layers[-1]]
        stats = f"moments+quantiles({self.quantile_levels})" if self.quantiles else "moments"
        names = self.class_names or range(self.num_classes)
        return (f"Flows(model={model_name(self.model)!r}, {counted(self.num_classes, 'class')} {short_list(names)}, "
                f"{counted(len(self.layers), 'layer')}: {', '.join(layers)}, {self.num_points} points, {stats})")

    @property
    def quantile_levels(self) -> int:
        """Q, the number of stored quantile levels; 0 when the flows have no quantiles."""
        return int(next(iter(self.quantiles.values())).shape[-1]) if self.quantiles else 0

    def class_quantiles(self, layer: str):
        """The quantile flow of `layer`, as FlowAM's quantile alignment reads it.

        Returns:
            A tuple of the quantiles (K, C, Q) and the std (K, C) of the layer.

        Raises:
            ValueError: The flows have no quantiles.
        """
        if not self.quantiles:
            raise ValueError("these flows have no quantiles (alignment='quantiles' needs them); recompute them with "
                             "compute_flows(..., quantile_levels=Q) or `flowam-fast flows --quantile-levels Q`")
        return self.quantiles[layer], self.std[layer]

    @property
    def num_classes(self) -> int:
        """K, the number of classes."""
        return int(self.count.shape[0])

    def channels(self) -> dict:
        """The number of channels of each layer, by layer name."""
        return {layer: int(self.mean[layer].shape[1]) for layer in self.layers}

    def class_flow(self, layer: str):
        """The moment flow of `layer`: a tuple of the mean (K, C) and the std (K, C)."""
        return self.mean[layer], self.std[layer]

    def check_classes(self, classes) -> None:
        """Check that every one of `classes` has a flow.

        Raises:
            ValueError: A class is out of range or had no training samples.
        """
        for c in classes:
            if not 0 <= int(c) < self.num_classes:
                raise ValueError(f"unknown class {c}: the flows cover classes 0..{self.num_classes - 1}")
            if int(self.count[int(c)]) == 0:
                raise ValueError(f"class {c} has no training samples in the flows")

    def check_taps(self, model) -> None:
        """Check that the flows were computed at the model's version of its activation taps.

        Raises:
            ValueError: The flows were computed at another version of the taps.
        """
        want = getattr(layer_root(model), "tap_version", None)
        if want is None or not self.model:
            return
        try:
            have = ModelDescription.from_json(self.model).tap_version
        except (ValueError, TypeError):
            have = None  # not a description of this package's: its taps are unknown
        if have != want:
            raise ValueError(f"flows were computed at version {have} of {type(model).__name__}'s activation taps, "
                             f"the model has version {want} (the taps moved); recompute them (flowam-fast flows)")

    def check_compatible(self, layers, channels: dict, model=None) -> None:
        """Check that the flows fit a model.

        Args:
            layers: Layers the caller will align.
            channels: The model's channel count of each of `layers`, by name.
            model: The model, whose activation tap version is checked too; None skips that.

        Raises:
            ValueError: A layer without flows, a channel count that differs, or flows of
                another version of the model's taps.
        """
        if model is not None:
            self.check_taps(model)
        missing = [layer for layer in layers if layer not in self.layers]
        if missing:
            raise ValueError(f"flows were computed for layers {self.layers}, not {missing}; "
                             "recompute them for this model (flowam-fast flows)")
        mine = self.channels()
        bad = {k: (mine[k], channels[k]) for k in layers if mine[k] != channels[k]}
        if bad:
            raise ValueError("flows do not match the model's channel counts "
                             + ", ".join(f"{k}: flows {a} vs model {b}" for k, (a, b) in bad.items())
                             + "; they were computed for another model (" + self.model + ")")

    def save(self, path) -> None:
        """Write the flows to the HDF5 file `path`, atomically."""
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
            f.attrs["format"] = "flowam_fast.flows"
            f.attrs["version"] = __version__
            f.attrs["model"] = self.model
            f.attrs["layers"] = json.dumps(self.layers)
            f.attrs["class_names"] = json.dumps(list(self.class_names))
            f.attrs["d2_target"] = float(self.d2_target)
            f.attrs["continuity_k"] = int(self.continuity_k)
            f.attrs["num_points"] = int(self.num_points)
            f["count"] = self.count.numpy()
            f["lo"] = self.lo.numpy()
            f["hi"] = self.hi.numpy()
            for i, layer in enumerate(self.layers):
                g = f.create_group(f"layer{i}")
                g.attrs["name"] = layer
                g["mean"] = self.mean[layer].numpy()
                g["std"] = self.std[layer].numpy()
                if self.quantiles:
                    g["quantiles"] = self.quantiles[layer].numpy()

    @classmethod
    def load(cls, path) -> "Flows":
        """Read flows written by `save`.

        Raises:
            FileNotFoundError: There is no file at `path`.
            ValueError: The file is not a readable, complete flows file.
        """
        try:
            f = h5py.File(path, "r")
        except FileNotFoundError:
            raise FileNotFoundError(f"flows file not found: {path}") from None
        except OSError as exc:
            raise ValueError(f"cannot read flows file {path}: {exc}") from None
        with f:
            if f.attrs.get("format") != "flowam_fast.flows":
                raise ValueError(f"{path} is not a flowam_fast flows file")
            try:
                layers = json.loads(f.attrs["layers"])
                mean, std, quantiles = {}, {}, {}
                for i, layer in enumerate(layers):
                    g = f[f"layer{i}"]
                    mean[layer] = torch.from_numpy(g["mean"][()])
                    std[layer] = torch.from_numpy(g["std"][()])
                    if "quantiles" in g:  # files written before quantiles existed have none
                        quantiles[layer] = torch.from_numpy(g["quantiles"][()])
                if quantiles and len(quantiles) != len(layers):
                    raise ValueError(f"flows file {path} has quantiles for some layers only")
                return cls(layers=layers, mean=mean, std=std, count=torch.from_numpy(f["count"][()]),
                           lo=torch.from_numpy(f["lo"][()]), hi=torch.from_numpy(f["hi"][()]),
                           d2_target=float(f.attrs["d2_target"]), continuity_k=int(f.attrs["continuity_k"]),
                           class_names=json.loads(f.attrs["class_names"]), model=str(f.attrs["model"]),
                           # Files that predate the count record none: 0, "unknown" (`cloud_size`).
                           num_points=int(f.attrs.get("num_points", 0)), quantiles=quantiles or None)
            except KeyError as exc:
                raise ValueError(f"flows file {path} is incomplete: missing {exc}") from None


#: Quantile levels stored where alignment="quantiles" is wanted and the caller names none: 64
#: levels keep a flows file small (K x C x 64 numbers per layer, under 2 MB for the demo
#: models) and, read by linear interpolation, follow a channel's distribution closely at the
#: demo's 512 points. Fewer levels than points is the untested part of the prototype's recipe.
DEFAULT_QUANTILE_LEVELS = 64


def _batches(dataset, batch_size):
    """(points (B, N, 3) float32, labels (B,) int64) batches of any dataset `compute_flows`
    takes; a dataset's `points` and `labels` arrays, where it has them, are sliced directly."""
    pts = getattr(dataset, "points", None)
    labels = getattr(dataset, "labels", None)
    if pts is not None and labels is not None:
        for start in range(0, len(dataset), batch_size):
            yield torch.as_tensor(np.asarray(pts[start:start + batch_size]), dtype=torch.float32), \
                torch.as_tensor(np.asarray(labels[start:start + batch_size]), dtype=torch.int64)
    elif isinstance(dataset, torch.utils.data.DataLoader):
        for i, batch in enumerate(dataset):
            p, y = _pair(batch, f"batch {i} of the DataLoader")
            p = _points(p, f"batch {i} of the DataLoader", batched=True)
            yield p, _labels(y, len(p), f"batch {i} of the DataLoader")
    elif hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__"):
        n = len(dataset)
        for start in range(0, n, batch_size):
            items = [(i, *_pair(dataset[i], f"sample {i}")) for i in range(start, min(start + batch_size, n))]
            p = [_points(p, f"sample {i}") for i, p, _ in items]
            if len({q.shape for q in p}) > 1:
                raise ValueError(f"samples {start}..{items[-1][0]} have different numbers of points "
                                 f"({sorted({q.shape[0] for q in p})}); give every cloud the same number of points")
            yield torch.stack(p), _labels([y for _, _, y in items], len(p), f"samples {start}..{items[-1][0]}")
    else:
        raise TypeError(f"compute_flows reads a sequence or torch Dataset of (points (N, 3), label) pairs, or a "
                        f"DataLoader of (points (B, N, 3), labels (B,)) batches; got a {type(dataset).__name__}")


def _num_samples(dataset) -> int | None:
    """The number of samples of a dataset (of a DataLoader's dataset), None where unknown."""
    try:
        return len(dataset.dataset) if isinstance(dataset, torch.utils.data.DataLoader) else len(dataset)
    except TypeError:  # an iterable-style dataset has no length
        return None


def _class_names(dataset) -> list:
    """The dataset's `classes` (a DataLoader's dataset's), or []."""
    source = dataset.dataset if isinstance(dataset, torch.utils.data.DataLoader) else dataset
    return list(getattr(source, "classes", None) or [])


def _pair(item, where: str):
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return item
    what = f"a {type(item).__name__} of {len(item)}" if isinstance(item, (tuple, list)) else f"a {type(item).__name__}"
    raise ValueError(f"{where} is {what}; compute_flows reads (points, label) pairs")


def _points(p, where: str, batched: bool = False) -> torch.Tensor:
    """Points as float32 (N, 3), or (B, N, 3) where `batched`; (3, N) layouts are refused."""
    p = torch.as_tensor(p, dtype=torch.float32)
    want, lead = ("(B, N, 3)", 1) if batched else ("(N, 3)", 0)
    if p.dim() == lead + 2 and p.shape[-1] == 3:
        return p
    if p.dim() == lead + 2 and p.shape[lead] == 3:
        swap = "points.transpose(1, 2)" if batched else "points.T"
        raise ValueError(f"{where} has points of shape {tuple(p.shape)}, channels first; compute_flows takes "
                         f"points {want}: transpose them ({swap})")
    raise ValueError(f"{where} has points of shape {tuple(p.shape)}; compute_flows takes points {want}")


def _labels(y, n: int, where: str) -> torch.Tensor:
    """Integer class labels (n,), from ints, 0-d or (n,) / (n, 1) tensors and arrays."""
    try:
        y = torch.as_tensor(np.asarray(y))
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{where}: labels must be class indices, got {type(y).__name__}") from None
    if y.numel() != n or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"{where}: labels must be {n} integer class indices, got {y.dtype} of shape "
                         f"{tuple(y.shape)}")
    return y.reshape(n).to(torch.int64)


def neighbour_d2(points: torch.Tensor, k: int, backend: str = "auto") -> torch.Tensor:
    """Squared distances (B,N,k) to the k nearest neighbours of each point, self excluded."""
    d2, _ = ops.knn(points, k + 1, backend=backend)
    return d2[..., 1:]


@torch.no_grad()
def compute_flows(model, dataset, layers=None, batch_size: int = 64, num_classes: int | None = None,
                  continuity_k: int = 3, device=None, backend: str = "auto", quiet: bool = False,
                  classes=None, geometry_of: Flows | None = None, quantile_levels: int = 0) -> Flows:
    """Compute a model's activation flows in one pass over a dataset.

    Args:
        model: The classifier, mapping points (B, 3, N) to logits (B, K) (a model whose
            output holds the logits among other things: adapt it with `as_classifier`); run
            in eval mode, its mode restored after.
        dataset: A sequence or torch `Dataset` of (points (N, 3), label) pairs, or a
            `DataLoader` of (points (B, N, 3), labels (B,)) batches (its own batch size
            then applies). Points are channels last, as datasets store them; the model is
            given them transposed. A dataset with `points` and `labels` arrays (such as
            `ModelNet40`) is read in batches from them.
        layers: Names of modules whose outputs are per-point activations (B, C, *), every
            trailing position a point; None takes the model's `flow_layers`.
        batch_size: Samples per forward pass.
        num_classes: K; None takes len(dataset.classes) (of a DataLoader's dataset), else
            the width of the model's logits.
        continuity_k: Neighbours of the continuity target.
        device: Device of the forward passes; None takes the model's.
        backend: Kernel backend of the fused ops.
        quiet: No progress bar.
        classes: Only the samples of these classes go through the model (the others get
            count 0, and the bounds and continuity target come from these samples alone). A
            class's flow depends on its own samples only, so it is the same as from the
            whole pass. None takes every class.
        geometry_of: Flows whose data bounds, continuity target (and k) and point count are
            taken as they are instead of measured again: they depend on the data alone, not
            on the model, so flows of another model on the same data (a randomized one, say)
            skip that work.
        quantile_levels: Q > 0 also stores each class's quantile functions at Q levels (see
            `Flows.quantiles`; FlowAM's alignment="quantiles" reads them); 0 stores none.

    Returns:
        The flows of the model on the dataset.

    Raises:
        ValueError: A negative quantile_levels, labels outside [0, num_classes), points
            that are not (N, 3), a model whose output is not logits (B, K)
            (`ClassifierOutputError`), an unknown layer, or no samples (of the requested
            classes).
        TypeError: A dataset of another kind.
    """
    if quantile_levels < 0:
        raise ValueError(f"quantile_levels must be >= 0, got {quantile_levels}")
    if geometry_of is not None:
        continuity_k = geometry_of.continuity_k
    layers = list(layers) if layers is not None else default_layers(model)
    class_names = _class_names(dataset)
    if num_classes is None and class_names:
        num_classes = len(class_names)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    stats = {layer: None for layer in layers}
    qsum = {}
    samples = None  # made once K is known: at the first forward pass where the model tells it
    lo = torch.full((3,), float("inf"))
    hi = torch.full((3,), float("-inf"))
    d2_sum, d2_n, num_points = 0.0, 0, 0
    bar = tqdm(total=_num_samples(dataset), desc="flows", disable=quiet, unit="sample")
    wanted = None if classes is None else torch.as_tensor(sorted({int(c) for c in classes}), dtype=torch.int64)

    def check_labels(labels):
        if int(labels.min()) < 0 or (num_classes is not None and int(labels.max()) >= num_classes):
            raise ValueError(f"labels outside [0, {num_classes or 'K'}) in the dataset "
                             f"(found {int(labels.min())}..{int(labels.max())})")

    try:
        for pts, labels in _batches(dataset, batch_size):
            check_labels(labels)
            if wanted is not None:
                keep = torch.isin(labels, wanted)
                bar.update(len(labels) - int(keep.sum()))
                pts, labels = pts[keep], labels[keep]
                if len(labels) == 0:
                    continue
            pts = pts.to(device)
            logits, acts = get_activations(model, pts.transpose(1, 2), layers)
            if samples is None:
                num_classes = num_classes or int(logits.shape[1])
                check_labels(labels)
                samples = torch.zeros(num_classes, dtype=torch.int64)
            num_points = pts.shape[1]
            samples += torch.bincount(labels, minlength=num_classes)
            if geometry_of is None:
                flat = pts.reshape(-1, 3)
                lo = torch.minimum(lo, flat.min(0).values.cpu())
                hi = torch.maximum(hi, flat.max(0).values.cpu())
                d2 = neighbour_d2(pts, continuity_k, backend=backend)
                d2_sum += float(d2.double().sum())
                d2_n += d2.numel()
            for layer in layers:
                part = ops.flow_stats(acts[layer], labels.to(device), num_classes, backend=backend)
                stats[layer] = part if stats[layer] is None else ops.merge_flow_stats(stats[layer], part)
                if quantile_levels:
                    # Sorting is exact in any dtype: float64 only for the sum over samples.
                    q = sample_quantiles(acts[layer], quantile_levels, backend=backend).cpu().double()
                    if layer not in qsum:
                        qsum[layer] = torch.zeros((num_classes,) + q.shape[1:], dtype=torch.float64)
                    qsum[layer].index_add_(0, labels, q)
            bar.update(len(labels))
    finally:
        bar.close()
        model.train(was_training)
    if samples is None or int(samples.sum()) == 0:
        raise ValueError("the dataset is empty" if classes is None else f"the dataset has no samples of classes {sorted(set(classes))}")
    mean, std = {}, {}
    for layer in layers:
        count, m, m2 = (t.cpu() for t in stats[layer])
        mean[layer] = m.float()
        std[layer] = ops.flow_std(count, m2).float()
    # A class without samples gets NaN quantiles (0 / 0), as its std is NaN.
    quantiles = {layer: (qsum[layer] / samples.to(torch.float64).view(-1, 1, 1)).float() for layer in layers} \
        if quantile_levels else None
    if geometry_of is not None:
        g = geometry_of
        lo, hi, d2_sum, d2_n, num_points = g.lo.clone(), g.hi.clone(), g.d2_target, 1, g.num_points
    return Flows(layers=layers, mean=mean, std=std, count=samples, lo=lo, hi=hi,
                 d2_target=d2_sum / d2_n, continuity_k=continuity_k,
                 class_names=class_names, model=describe_model(model),
                 num_points=num_points, quantiles=quantiles)
