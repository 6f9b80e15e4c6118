"""What a user sees when printing the package's objects at a prompt: one short line naming the
key facts, never the arrays they hold."""
import re

import numpy as np
import pytest

from flowam_fast.am.config import AMConfig
from flowam_fast.am.engine import FlowAM
from flowam_fast.am.explanations import Explanations
from flowam_fast.am.flows import compute_flows
from flowam_fast.am.reprs import int_ranges, short_list
from flowam_fast.models import PointNet
from flowam_fast.sweep.spec import parse_spec
from tests.helpers import ArrayData


def _short(text: str) -> str:
    assert len(text) < 300 and text.count("\n") == 0, text
    assert not re.search(r"array\(|tensor\(|\d\.\d+e[-+]", text), text  # no array dumps
    return text


@pytest.fixture(scope="module")
def flows_and_model():
    rng = np.random.default_rng(0)
    names = ["sphere", "cube", "cone", "torus", "chair"]
    data = ArrayData(rng.uniform(-1, 1, (10, 64, 3)).astype(np.float32), np.arange(10) % 5, names)
    model = PointNet(num_classes=5, width=0.125).eval()
    return compute_flows(model, data, quiet=True, quantile_levels=8), model


def test_flows_repr(flows_and_model):
    flows, _ = flows_and_model
    text = _short(repr(flows))
    assert text.startswith("Flows(model='PointNet', 5 classes ['sphere', 'cube', 'cone', ...]")
    first, last = flows.layers[0], flows.layers[-1]
    assert f"{len(flows.layers)} layers: {first} ({flows.channels()[first]})" in text
    assert f"{last} ({flows.channels()[last]})" in text
    assert "64 points" in text and "moments+quantiles(8)" in text


def test_engine_config_and_explanations_reprs(flows_and_model):
    flows, model = flows_and_model
    engine = FlowAM(model, flows, steps=1, num_points=64, quiet=True)
    assert _short(repr(engine)) == ("FlowAM(method='flowam', model='PointNet', steps=1, lr=0.01, flow_weight=100 "
                                    f"(moments, {len(flows.layers)} layers), continuity_weight=1, 64 points, "
                                    "device='cpu')")
    text = _short(repr(engine.config))
    assert text.startswith("AMConfig(method='flowam', steps=1, lr=0.01, flow_weight=100.0, continuity_weight=1.0, "
                           "num_points=64, ")
    assert f"layers=['{flows.layers[0]}', '{flows.layers[1]}', ...] ({len(flows.layers)})" in text
    assert "init=" not in text  # defaults other than the run's key settings are left out
    assert repr(AMConfig(init="normal")).endswith("num_points=1024, init='normal')")

    e = engine.run([4, 0, 1], [0, 1, 2, 5])
    text = _short(repr(e))
    assert text == ("Explanations(method='flowam', model='PointNet', 12 jobs, 3 classes ['sphere', 'cube', 'chair'], "
                    f"seeds 0-2,5, 64 points, success {e.success.mean():.1%})")
    empty = e.select(classes=[])
    assert "0 jobs, 0 classes []" in repr(empty) and "no jobs" in repr(empty)


def test_sweep_spec_repr(tmp_path):
    raw = {"classes": "all", "seeds": "0-999", "methods": ["flowam", "vanilla"], "shard_size": 64,
           "engine": {"steps": 20},
           "models": [{"name": f"m{i}", "checkpoint": f"m{i}.pt", "flows": f"f{i}.h5"} for i in range(4)]}
    text = _short(repr(parse_spec(raw, base_dir=tmp_path)))
    assert text == ("SweepSpec(4 models ['m0', 'm1', 'm2', ...], methods ['flowam', 'vanilla'], classes 'all', "
                    "1000 seeds 0-999, shard_size=64, engine {'steps': 20})")


def test_repr_pieces():
    assert int_ranges([5, 0, 2, 1, 9, 8, 2]) == "0-2,5,8-9" and int_ranges([]) == ""
    assert short_list(["a", "b", "c"]) == "['a', 'b', 'c']" and short_list("abcd", 2) == "['a', 'b', ...]"
