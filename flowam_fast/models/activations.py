"""Per-point activations of any model, by module name: the one way layers are read.

FlowAM aligns the outputs of named modules that produce per-point activations (B, C, *):
every trailing position is a point of the layer, so (B, C, N) and PointNet++'s grouped
(B, C, K, S) are read alike, as (B, C, M) with M the product of the trailing sizes (a view,
no copy, where the output is contiguous).

`ActivationRecorder` (and `get_activations`, one forward pass under it) reads two kinds of
module:

- a `Tap`, the built-in models' activation taps: the recorder registers itself on the tap as
  a request, and a fused layer asks its tap which form is requested (`Tap.wanted`): dense
  activations, or `flowam_fast.ops.LinearActs` (a linear layer's input and folded map, from
  which `ops.flow_align` reads moments without the activations written out). A fused layer
  whose tap nobody requested skips writing the tap's activations at all;
- any other module (your own model's, or a built-in model's on its plain path): a forward
  hook on it for the recorder's lifetime.

For your own model, name the modules (as in `model.named_modules()`; for a model adapted with
`as_classifier`, the wrapped module's names) whose outputs are those activations, e.g.
``["encoder.relu1", "encoder.relu2"]``; a functional activation has no module to hook, so add
an ``nn.Identity()`` (or `Tap`) where you want to read (it has no parameters, so checkpoints
are unaffected). The built-in models list theirs in ``model.flow_layers``.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn as nn

from ..ops import LinearActs
from .adapter import classify, layer_root


class Tap(nn.Identity):
    """An activation tap: the identity, which hands what passes through it to the recorders
    that requested it.

    A fused layer (`flowam_fast.models.fast`) that may skip writing its activations asks
    `wanted()` first; it then passes the dense activations through the tap, or hands it
    `LinearActs` with `offer`. Forward hooks on a tap still fire whenever it is called, but
    on the fast path a max-pooled layer's tap is called only when a recorder requests it.
    """

    def __init__(self):
        super().__init__()
        self._requests = []  # (record, takes_linear) per recorder, in the order they came

    def request(self, record, linear: bool) -> None:
        """Ask for this tap's activations in every forward pass until `withdraw`.

        Args:
            record: Called with the activations: the tensor passing through, or `LinearActs`.
            linear: `record` also takes `LinearActs`.
        """
        self._requests.append((record, bool(linear)))

    def withdraw(self, record) -> None:
        """End a request.

        Args:
            record: The callable given to `request`.
        """
        self._requests = [r for r in self._requests if r[0] is not record]

    def wanted(self) -> str | None:
        """The form the requests take.

        Returns:
            None (nobody listens), "linear" (every request takes `LinearActs`) or "dense".
        """
        if not self._requests:
            return None
        return "linear" if all(linear for _, linear in self._requests) else "dense"

    def offer(self, acts: LinearActs) -> None:
        """Hand the requests a layer's activations as `LinearActs`, where `wanted()` is "linear"
        (the fused layer then does not call the tap).

        Args:
            acts: The layer's input and folded map.
        """
        for record, _ in self._requests:
            record(acts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for record, _ in self._requests:
            record(x)
        return x


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


class ActivationRecorder:
    """Context manager recording the outputs of the named modules during forward passes: a
    request on each `Tap`, a forward hook on any other module (see the module's docstring).

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
            those at their max-pooled layers' taps, unless another recorder there wants them
            dense.

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

    def _recorder(self, name):
        def record(output):
            if self.linear and isinstance(output, LinearActs):
                self.activations[name] = output
                return
            if not isinstance(output, torch.Tensor) or output.dim() < 3:
                shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
                raise ValueError(f"layer {name!r} must output per-point activations (B, C, *) with at least one "
                                 f"point dimension, got {shape}")
            # The one place activations are read: every trailing position is a point.
            self.activations[name] = output.flatten(2) if output.dim() > 3 else output

        return record

    def __enter__(self):
        self.activations = {}
        self._handles = []
        for name, module in zip(self.layers, self._modules):
            record = self._recorder(name)
            if isinstance(module, Tap):
                module.request(record, self.linear)
                self._handles.append((module, record))
            else:  # an own model's module: it knows nothing of recorders
                self._handles.append((None, module.register_forward_hook(lambda _m, _i, out, _r=record: _r(out))))
        return self

    def __exit__(self, *exc):
        for tap, handle in self._handles:
            if tap is None:
                handle.remove()
            else:
                tap.withdraw(handle)
        self._handles = []
        return False


def get_activations(model, x: torch.Tensor, layers, linear=False):
    """Run one forward pass and record the activations of the named layers.

    Args:
        model: The classifier.
        x: Points (B, 3, N).
        layers: Names of modules whose outputs are per-point activations.
        linear: Activations may come as `LinearActs` (see `ActivationRecorder`): True for
            every layer, or the names of the layers that take them.

    Returns:
        A tuple of the logits (B, K) and a dict of each layer's activations (B, C, M).

    Raises:
        ValueError: An unknown layer, a layer the forward pass did not call (on the fused
            fast path only the activation taps are called), or an output that is not
            logits (`ClassifierOutputError`, which says how to wrap the model).
    """
    layers = list(layers)
    takes = set(layers) if linear is True else set(linear or ())
    groups = [(flag, [n for n in layers if (n in takes) == flag]) for flag in (True, False)]
    with contextlib.ExitStack() as stack:
        recorders = [stack.enter_context(ActivationRecorder(model, names, linear=flag)) for flag, names in groups
                     if names]
        logits = classify(model, x)
    acts = {name: act for rec in recorders for name, act in rec.activations.items()}
    missing = [n for n in layers if n not in acts]
    if missing:
        hint = ""
        if getattr(layer_root(model), "fast_path", False):
            hint = (f"; on the fused fast path only the activation taps {list(getattr(model, 'flow_layers', []))} "
                    "are called: use those, or run inside flowam_fast.models.plain_path(model)")
        raise ValueError(f"layers {missing} were not called in the forward pass of {type(model).__name__}{hint}")
    return logits, acts
