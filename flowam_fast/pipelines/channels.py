"""Channel visualizations: what a layer's channels respond to, by activation maximization of
each channel with the model's flows as the prior (`objectives.channel_prior`), beside the real
cloud that excites the channel most. The demo report's "Channels" section.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..am.config import stored_config
from ..am.engine import AM, frozen
from ..am.explanations import Explanations
from ..am.sheets import contact_sheet
from ..models.activations import get_activations
from ..objectives import channel_prior
from ..objectives.terms import flow_mixture

#: Channels in the demo's sheet.
DEMO_CHANNELS = 8
#: Test clouds per forward pass when the real clouds' activations are measured.
CLOUDS_PER_PASS = 64


def selective_channels(flows, layer: str, count: int) -> list:
    """The `count` channels of `layer` whose class means differ most, relative to their spread
    over all classes: the std over classes of the class means divided by the pooled std
    (`objectives.terms.flow_mixture`). Classes without samples are left out.

    Returns:
        Channel indices, most selective first.
    """
    mix = flow_mixture(flows, layer)
    between = (mix["weight"] * (mix["class_mean"] - mix["mean"]) ** 2).sum(0).sqrt()
    pooled = mix["std"].clamp_min(1e-6)
    order = torch.argsort(between / pooled, descending=True, stable=True)
    return order[:count].tolist()


def channel_activations(model, points, layer: str, channels) -> np.ndarray:
    """The mean over the points of each channel of `layer`, for every cloud (B, len(channels))."""
    device = next(model.parameters()).device
    rows = []
    with frozen(model), torch.no_grad():
        for start in range(0, len(points), CLOUDS_PER_PASS):
            x = torch.as_tensor(np.asarray(points[start:start + CLOUDS_PER_PASS]), dtype=torch.float32, device=device)
            _, acts = get_activations(model, x.transpose(1, 2), [layer])
            rows.append(acts[layer][:, list(channels)].mean(2).cpu().numpy())
    return np.concatenate(rows)


def visualize_channels(model, flows, channels, seeds, store, layer: str | None = None, steps: int = 600,
                       num_points: int | None = None, quiet: bool = True) -> Explanations:
    """Explanations of `channels` of `layer` (the flows' last layer where None) with the flows as
    prior, in `store` (reused where its config matches, redone where it does not)."""
    layer = layer or flows.layers[-1]
    am = AM(model, channel_prior(layer, flows), flows=flows, steps=steps, num_points=num_points, quiet=quiet)
    store = Path(store)
    if store.exists() and not am.config.matches(Explanations.load(store).config):
        store.unlink()  # a store of another objective or model: redone
    return am.run(channels, seeds, store=store)


def demo_section(model, flows, test_set, out_dir, seeds, steps: int, num_points: int, count: int = DEMO_CHANNELS,
                 quiet: bool = True) -> str:
    """The demo report's section on channels: the `count` most class-selective channels of the
    model's last flow layer (`selective_channels`), each by activation maximization with the
    flows as prior, beside the test cloud that excites it most; written to out_dir
    (channels.h5, channels.png).

    Returns:
        The section's Markdown, from its "## Channels" heading; the image link is relative to
        out_dir.
    """
    out = Path(out_dir)
    layer = flows.layers[-1]
    channels = selective_channels(flows, layer, count)
    expl = visualize_channels(model, flows, channels, seeds, out / "channels.h5", layer=layer, steps=steps,
                              num_points=num_points, quiet=quiet).sorted()
    real = channel_activations(model, test_set.points, layer, channels)
    top = real.argmax(0)
    contact_sheet([expl], out / "channels.png", labels=["AM with flows as prior"],
                  references={c: test_set.points[top[i]] for i, c in enumerate(channels)},
                  reference_title="most exciting test cloud")
    made = channel_activations(model, expl.points, layer, channels)
    names = list(test_set.classes)
    mean, _ = flows.class_flow(layer)
    rows = ["| channel | class with the highest flow mean | most exciting test cloud: class, activation | "
            "visualizations: activation (mean over seeds), predicted class |", "|---|---|---|---|"]
    for i, c in enumerate(channels):
        mine = expl.classes == c
        predicted = [names[k] for k in expl.logits[mine].argmax(1)]
        rows.append(f"| {c} | {names[int(torch.nan_to_num(mean[:, c], nan=-np.inf).argmax())]} | "
                    f"{names[int(test_set.labels[top[i]])]}, {real[top[i], i]:.2f} | "
                    f"{made[mine, i].mean():.2f}, {', '.join(predicted)} |")
    return "\n".join([
        "## Channels", "",
        f"The {count} most class-selective channels of `{layer}` (between-class std of the flow means over the "
        f"pooled std), each maximized with the flows as prior (`{stored_config(expl.config).objective}`, {steps} "
        f"steps, seeds "
        f"{', '.join(map(str, seeds))}), beside the test cloud whose mean activation of the channel is highest. "
        "Activations are means over the points.", "",
        *rows, "", "![channels](channels.png)"])

