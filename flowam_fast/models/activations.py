"""Per-point activations of any model, by module name, through forward hooks.

FlowAM aligns the outputs of named modules that produce per-point activations (B, C, *):
every trailing position is a point of the layer, so (B, C, N) and PointNet++'s grouped
(B, C, K, S) are read alike, as (B, C, M) with M the product of the trailing sizes (a view,
no copy, where the output is contiguous). For your own model, name the modules (as in
`model.named_modules()`; for a model adapted with `as_classifier`, the wrapped module's names)
whose outputs are those activations, e.g. ``["encoder.relu1", "encoder.relu2"]``; a
functional activation has no
module to hook, so add an ``nn.Identity()`` tap where you want to read (it has no parameters,
so checkpoints are unaffected). The built-in PointNet and DGCNN list theirs in
``model.flow_layers``.
"""
from __future__ import annotations

import torch

from ..ops import LinearActs
from .adapter import classify, layer_root


def default_layers(model) -> list:
    """The layers FlowAM aligns by default: the model's `flow_layers`.

    Raises:
        ValueError: The model lists none (pass the layer names explicitly then).
    """
    layers = getattr(model, "flow_layers", None)
    if not layers:
        raise ValueError(f"{type(layer_root(model)).__name__} has no default flow layers; pass layers=[...] with the "
                         "names of modules whose outputs are per-point activations (B, C, *)")
    return list(layers)


def accepts_linear(module) -> bool:
    """True when every hook on `module` is a recorder's that takes `LinearActs` (see
    ActivationRecorder's `linear`): a fast path may then hand the tap a linear layer's input
    and map instead of writing its activations out."""
    hooks = list(module._forward_hooks.values())
    return bool(hooks) and not module._forward_pre_hooks and all(getattr(h, "accepts_linear", False) for h in hooks)


class ActivationRecorder:
    """Context manager recording the outputs of the named modules during forward passes.

    ```python
    with ActivationRecorder(model, ["feat.act1"]) as rec:
        logits = model(x)
    rec.activations["feat.act1"]  # (B, C, M), still attached to the autograd graph
    ```

    Args:
        model: The model whose modules are hooked.
        layers: Names of modules (as in ``layer_root(model).named_modules()``) whose outputs
            are per-point activations (B, C, *).
        linear: The caller also takes `flowam_fast.ops.LinearActs` (what `ops.flow_align`
            reads without the activations written out); the built-in fast paths then record
            those at their max-pooled layers, where nothing else needs the dense activations.

    Attributes:
        activations: The recorded outputs of the last forward pass, by layer name, with the
            trailing dimensions flattened: (B, C, M).

    Raises:
        ValueError: A duplicate or unknown layer name; during the forward pass, a layer
            whose output is not (B, C, *).
    """

    def __init__(self, model: torch.nn.Module, layers, linear: bool = False):
        self.model = model
        self.linear = bool(linear)
        self.layers = list(layers)
        if len(set(self.layers)) != len(self.layers):
            raise ValueError(f"duplicate layer names in {self.layers}")
        root = layer_root(model)
        modules = dict(root.named_modules())
        unknown = [name for name in self.layers if name not in modules]
        if unknown:
            hint = [n for n in modules if n][:12]
            raise ValueError(f"unknown layer names {unknown} in {type(root).__name__}; "
                             f"module names look like: {', '.join(hint)}")
        self._modules = [modules[name] for name in self.layers]
        self.activations = {}
        self._handles = []

    def _hook(self, name):
        def record(_module, _inputs, output):
            if self.linear and isinstance(output, LinearActs):
                self.activations[name] = output
                return
            if not isinstance(output, torch.Tensor) or output.dim() < 3:
                shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
                raise ValueError(f"layer {name!r} must output per-point activations (B, C, *) with at least one "
                                 f"point dimension, got {shape}")
            # The one place activations are read: every trailing position is a point.
            self.activations[name] = output.flatten(2) if output.dim() > 3 else output

        record.accepts_linear = self.linear
        return record

    def __enter__(self):
        self.activations = {}
        self._handles = [m.register_forward_hook(self._hook(n)) for n, m in zip(self.layers, self._modules)]
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles = []
        return False


def get_activations(model, x: torch.Tensor, layers, linear: bool = False):
    """Run one forward pass and record the activations of the named layers.

    Args:
        model: The classifier.
        x: Points (B, 3, N).
        layers: Names of modules whose outputs are per-point activations.
        linear: Activations may come as `LinearActs` (see `ActivationRecorder`).

    Returns:
        A tuple of the logits (B, K) and a dict of each layer's activations (B, C, M).

    Raises:
        ValueError: An unknown layer, a layer the forward pass did not call (on the fused
            fast path only the activation taps are called), or an output that is not
            logits (`ClassifierOutputError`, which says how to wrap the model).
    """
    with ActivationRecorder(model, layers, linear=linear) as rec:
        logits = classify(model, x)
    missing = [n for n in rec.layers if n not in rec.activations]
    if missing:
        hint = ""
        if getattr(layer_root(model), "fast_path", False):
            hint = (f"; on the fused fast path only the activation taps {list(getattr(model, 'flow_layers', []))} "
                    "are called: use those, or run inside flowam_fast.models.plain_path(model)")
        raise ValueError(f"layers {missing} were not called in the forward pass of {type(model).__name__}{hint}")
    return logits, rec.activations
