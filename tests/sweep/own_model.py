"""An own model for the sweep tests, built by the factory "tests.sweep.own_model:build": a tiny
PointNet inside a module whose output is a tuple (logits, log-probabilities), so a spec must
say where the logits are (logits = 0, or the submodule "net" that computes them)."""
import torch

from flowam_fast.models import build_model


class TupleNet(torch.nn.Module):
    # The wrapped PointNet's taps, under this module's names.
    flow_layers = tuple(f"net.{layer}" for layer in ("feat.act1", "feat.act2", "feat.act3"))

    def __init__(self):
        super().__init__()
        self.net = build_model("pointnet", num_classes=3, width=0.125)

    def forward(self, x):
        logits = self.net(x)
        return logits, logits.log_softmax(1)


def build() -> TupleNet:
    return TupleNet()
