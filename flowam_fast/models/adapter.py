"""Own models: the one contract every part of the package relies on, and the adapter that
makes any point-cloud classifier meet it.

The contract: a classifier maps points (B, 3, N) to logits (B, K). Public implementations
often return more (PointNet's ``(log_softmax, trans, trans_feat)``), a dict, or
log-probabilities; ``as_classifier(module, logits=...)`` picks the logits out of such an
output. Layer names (``layers=[...]`` of flows and FlowAM, the sanity check's randomized
blocks) are always the user's module's own names, also when it is adapted: every lookup by
name goes through `layer_root`.

`classify` runs a model on a batch and checks its output; the package calls it wherever it
runs a model, so that a model which does not meet the contract is refused with a message that
says how to wrap it, not with an error from deep inside.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch


class ClassifierOutputError(ValueError):
    """A model's output is not logits (B, K).

    Attributes:
        problem: What the model returned, in words.
        fix: A `logits` value that would pick the logits out of that output (see
            `as_classifier`), or None where none is apparent.
    """

    def __init__(self, problem: str, fix=None):
        self.problem, self.fix = problem, fix
        if fix is not None:
            how = f"wrap it: as_classifier(model, logits={fix!r})"
        else:
            how = ("wrap it: as_classifier(model, logits=...) with an index, a dict key, the name of the submodule "
                   "that computes the logits, or a function of the output that returns them")
        super().__init__(f"{problem}; a classifier must return logits (B, K): {how}")


class AdaptedClassifier(torch.nn.Module):
    """A module whose output holds the logits, seen as a classifier (B, 3, N) -> (B, K).

    Made by `as_classifier`. The wrapped module is a child (``wrapped``), so parameters,
    ``.to()``, ``.eval()``/``.train()`` and deep copies act on it; its layers keep their own
    names through `layer_root`.

    Attributes:
        wrapped: The user's module.
        logits: How the logits are read off its output (see `as_classifier`).
    """

    def __init__(self, module: torch.nn.Module, logits):
        super().__init__()
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"as_classifier takes an nn.Module, got {type(module).__name__}")
        if isinstance(logits, bool) or not isinstance(logits, (int, str)) and not callable(logits):
            raise TypeError("logits must be an int (an index into a tuple output), a str (a dict key, or the name "
                            f"of the submodule that computes the logits) or a callable, got {logits!r}")
        self.wrapped = module
        self.logits = logits
        self.train(module.training)

    @property
    def flow_layers(self) -> list:
        """The wrapped module's `flow_layers` (AttributeError where it has none)."""
        layers = getattr(self.wrapped, "flow_layers", None)
        if layers is None:
            raise AttributeError(f"{type(self.wrapped).__name__} has no flow_layers")
        return list(layers)

    def extra_repr(self) -> str:
        return f"logits={self.logits!r}"

    def forward(self, x):
        spec = self.logits
        tap = _submodule(self.wrapped, spec) if isinstance(spec, str) else None
        captured = []
        # Hooked per call rather than once: a deep copy (the sanity check's) or a pickled
        # model (a sweep worker's) then never carries a hook bound to another instance.
        handle = tap.register_forward_hook(lambda _m, _i, out: captured.append(out)) if tap is not None else None
        try:
            out = self.wrapped(x)
        finally:
            if handle is not None:
                handle.remove()
        if callable(spec):
            return spec(out)
        if isinstance(spec, int):
            if not isinstance(out, (tuple, list)):
                raise ClassifierOutputError(f"logits={spec} indexes a tuple output, but {_what(self.wrapped)} returned "
                                            f"{_describe(out)}", _suggest(out))
            if not -len(out) <= spec < len(out):
                raise ClassifierOutputError(f"logits={spec} is out of range: {_what(self.wrapped)} returned "
                                            f"{_describe(out)}", _suggest(out))
            return out[spec]
        if isinstance(out, Mapping) and spec in out:
            return out[spec]
        if captured:
            return captured[-1]
        if tap is not None:
            raise ValueError(f"logits={spec!r}: submodule {spec!r} of {type(self.wrapped).__name__} was not called "
                             "in its forward pass")
        names = [n for n in _names(self.wrapped) if n][:12]
        raise ValueError(f"logits={spec!r} is neither a key of the output ({_what(self.wrapped)} returned "
                         f"{_describe(out)}) nor a submodule of {type(self.wrapped).__name__} (names look like: "
                         f"{', '.join(names)})")


def as_classifier(module: torch.nn.Module, logits) -> AdaptedClassifier:
    """Adapt a module whose output holds the logits into a classifier (B, 3, N) -> (B, K).

    ```python
    net = PointNetCls(k=40)                          # returns (log_softmax, trans, trans_feat)
    model = as_classifier(net, logits="fc3")         # the logits fc3 computes, before log_softmax
    flows = compute_flows(model, data, layers=["feat.bn1", "feat.bn2", "feat.bn3"])
    ```

    Layer names stay the module's own (``feat.bn1``, not ``wrapped.feat.bn1``). The result
    shares the module's parameters, device and train/eval mode, and its `flow_layers` where
    it has them.

    Args:
        module: The model; it takes points (B, 3, N).
        logits: Where the logits are: an int indexes a tuple or list output; a str is a key
            of a dict output or else the name of the submodule (as in
            ``module.named_modules()``) whose output is the logits (prefer the last linear
            layer to a log-softmax: the logits' gradients do not vanish as the class
            probability saturates); a callable is applied to the output.

    Returns:
        The adapted classifier.

    Raises:
        TypeError: `module` is not an nn.Module, or `logits` is of another kind.
    """
    return AdaptedClassifier(module, logits)


def layer_root(model: torch.nn.Module) -> torch.nn.Module:
    """The module whose ``named_modules()`` names a model's layers: the wrapped module of an
    adapted classifier, else the model itself. Every lookup of a layer by name uses it."""
    return model.wrapped if isinstance(model, AdaptedClassifier) else model


def classify(model, x: torch.Tensor) -> torch.Tensor:
    """Run `model` on points `x` (B, 3, N) and return its logits, checked.

    Raises:
        ClassifierOutputError: The output is not a (B, K) tensor (the message says how to
            wrap the model with `as_classifier`).
    """
    return check_logits(model(x), x.shape[0])


def check_logits(out, batch: int) -> torch.Tensor:
    """`out` if it is logits (batch, K); else a ClassifierOutputError that says what to pass.

    Args:
        out: A model's output.
        batch: The number of clouds it was given.

    Raises:
        ClassifierOutputError: `out` is not a tensor (batch, K).
    """
    if isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[0] == batch:
        return out
    if isinstance(out, torch.Tensor) and out.dim() == 3 and out.shape[0] == batch:
        raise ClassifierOutputError(f"the model returned a tensor of shape {tuple(out.shape)} for {batch} clouds, "
                                    "per-point scores rather than one row of logits per cloud")
    raise ClassifierOutputError(f"the model returned {_describe(out)} for {batch} clouds", _suggest(out, batch))


def _names(module) -> dict:
    return dict(module.named_modules())


def _submodule(module, name: str):
    try:
        return module.get_submodule(name) if name else None
    except AttributeError:
        return None


def _what(module) -> str:
    return type(module).__name__


def _describe(out) -> str:
    if isinstance(out, torch.Tensor):
        return f"a tensor of shape {tuple(out.shape)}"
    if isinstance(out, (tuple, list)):
        parts = ", ".join(str(tuple(o.shape)) if isinstance(o, torch.Tensor) else type(o).__name__ for o in out[:6])
        return f"a {type(out).__name__} of {len(out)} ({parts}{', ...' if len(out) > 6 else ''})"
    if isinstance(out, Mapping):
        return f"a dict with keys {list(out)[:12]}"
    return f"a {type(out).__name__}"


def _suggest(out, batch: int | None = None):
    """The index or key of the first (batch, K) tensor in a tuple or dict output, if any."""
    items = list(enumerate(out)) if isinstance(out, (tuple, list)) else \
        list(out.items()) if isinstance(out, Mapping) else []
    for key, value in items:
        if isinstance(value, torch.Tensor) and value.dim() == 2 and (batch is None or value.shape[0] == batch):
            return key
    return None
