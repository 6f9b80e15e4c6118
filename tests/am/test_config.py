"""A run's identity (`AMConfig`): validation with the field's name, `matches`, the stored form
and its migration from earlier versions, resuming a store written before it, the cloud-size
rule and targets by name."""
import dataclasses
import json
import math

import h5py
import numpy as np
import pytest
import torch

from flowam_fast.am.config import DEFAULT_NUM_POINTS, AMConfig, cloud_size
from flowam_fast.am.engine import FlowAM
from flowam_fast.am.explanations import Explanations
from flowam_fast.am.flows import Flows, compute_flows
from flowam_fast.models import build_model, save_checkpoint

from tests.helpers import random_data

#: Today's stored form of AMConfig() as stores and sweep shard names have it (a literal: the
#: stored form must not drift, or every earlier store and shard stops resuming).
STORED_DEFAULT = ('{"autoencoder": "", "clamp": true, "continuity_k": 3, "continuity_weight": 1.0, '
                  '"flow_weight": 100.0, "init": "uniform", "init_scale": 0.5, "layers": [], "lr": 0.01, '
                  '"method": "flowam", "num_points": 1024, "steps": 600}')


@pytest.fixture
def flows(tiny_net):
    return compute_flows(tiny_net, random_data(num=24, n=64), layers=["act1", "act2"], quiet=True)


@pytest.mark.parametrize("field, value, error", [
    ("flow_weight", -1.0, ValueError), ("flow_weight", math.nan, ValueError),
    ("continuity_weight", -0.5, ValueError), ("continuity_weight", math.inf, ValueError),
    ("steps", 0, ValueError), ("steps", -3, ValueError), ("steps", 2.5, TypeError), ("steps", "600", TypeError),
    ("lr", 0.0, ValueError), ("lr", -0.01, ValueError), ("init_scale", 0.0, ValueError),
    ("init", "gaussian", ValueError), ("method", "deepdream", ValueError), ("alignment", "wasserstein", ValueError),
    ("num_points", 3, ValueError), ("continuity_k", 0, ValueError), ("clamp", "yes", TypeError),
    ("layers", "feat.conv1", TypeError),
])
def test_invalid_fields_are_refused_with_their_name(field, value, error):
    with pytest.raises(error, match=field):
        AMConfig(**{field: value})


def test_the_engine_refuses_what_the_config_refuses(tiny_net, flows):
    # flow_weight=-1.0 pushed the clouds away from the flows, silently.
    with pytest.raises(ValueError, match="flow_weight must be a finite number >= 0, got -1.0"):
        FlowAM(tiny_net, flows, flow_weight=-1.0, quiet=True)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        FlowAM(tiny_net, flows, steps=0, quiet=True)
    with pytest.raises(ValueError, match="unknown init 'cube'; choose one of uniform, normal, sphere"):
        FlowAM(tiny_net, flows, init="cube", quiet=True)
    # "random" takes no step: the only method for which 0 is the value, recorded whatever is passed.
    assert FlowAM(tiny_net, flows, method="random", steps=50, quiet=True).config.steps == 0
    with pytest.raises(ValueError, match="steps must be 0 for method 'random'"):
        AMConfig(method="random", steps=5)


def test_stored_form_is_stable_and_round_trips():
    assert AMConfig().to_json() == STORED_DEFAULT
    cfg = AMConfig(method="flowam", steps=7, lr=0.02, flow_weight=300, num_points=256, init="sphere",
                   layers=("feat.conv1", "feat.conv2"), alignment="quantiles")
    back = AMConfig.from_json(cfg.to_json())
    assert back == cfg and back.matches(cfg) and back.to_json() == cfg.to_json()
    assert json.loads(cfg.to_json())["alignment"] == "quantiles" and back.flow_weight == 300.0


def test_matches_compares_identity_fields_only():
    cfg = AMConfig(steps=20)
    # Backend, device and quiet do not change results: not stored, not compared.
    other = AMConfig(steps=20, backend="torch", device="cuda:0", quiet=True)
    assert cfg.matches(other) and cfg.matches(other.to_json()) and cfg.to_json() == other.to_json()
    general = {"objective": "channel('a')", "target_layer": "a"}  # the general engine's, absent from presets'
    assert set(AMConfig.identity_fields()) == set(json.loads(AMConfig(alignment="quantiles").to_json())) | set(general)
    assert set(general) <= set(json.loads(AMConfig(method="am", flow_weight=0, continuity_weight=0, **general).to_json()))
    changes = {"method": "regularized", "steps": 21, "lr": 0.02, "flow_weight": 1.0, "continuity_weight": 2.0,
               "continuity_k": 4, "num_points": 512, "init": "normal", "init_scale": 0.4, "clamp": False,
               "layers": ("a",), "autoencoder": "{}", "alignment": "quantiles"}
    assert set(changes) | set(general) == set(AMConfig.identity_fields())
    for name, value in changes.items():
        changed = dataclasses.replace(cfg, **{name: value})
        assert not cfg.matches(changed) and not cfg.matches(changed.to_json()), name
    assert not cfg.matches("not json") and not cfg.matches('{"steps": 20}')


def test_objective_leaves_out_the_method_name(tiny_net, flows):
    # FlowAM at flow weight 0 optimizes what regularized AM does: one objective, two names.
    at_zero = FlowAM(tiny_net, flows, flow_weight=0.0, steps=3, quiet=True).config
    regularized = FlowAM(tiny_net, flows, method="regularized", steps=3, quiet=True).config
    assert not at_zero.matches(regularized) and at_zero.objective_key() == regularized.objective_key()
    assert "method" not in json.loads(at_zero.objective_key())
    assert FlowAM(tiny_net, flows, flow_weight=1.0, steps=3, quiet=True).config.objective_key() != at_zero.objective_key()


def test_migration_from_every_earlier_stored_form():
    fields = json.loads(STORED_DEFAULT)
    v1 = {k: v for k, v in fields.items() if k != "autoencoder"}  # before the autoencoder existed
    v2 = fields  # before the alignment existed
    for old in (v1, v2):
        cfg = AMConfig.from_json(json.dumps(old))
        assert cfg == AMConfig() and cfg.matches(json.dumps(old)) and AMConfig().matches(json.dumps(old))
    # A version-1 store of a quantile run cannot exist; one that names a non-default alignment stays apart.
    assert not AMConfig().matches(json.dumps({**v2, "alignment": "quantiles"}))


@pytest.mark.parametrize("stored, message", [
    ('{"steps": 5}', "lacks 'method', 'lr', .*'clamp', 'layers'"),
    (json.dumps({**json.loads(STORED_DEFAULT), "momentum": 0.9}), "unknown to this version .momentum."),
    (json.dumps({**json.loads(STORED_DEFAULT), "version": 99}), "version 99"),
    ("[1, 2]", "not a stored AM config"),
    (json.dumps({**json.loads(STORED_DEFAULT), "flow_weight": -1.0}), "flow_weight"),
])
def test_unreadable_stored_forms_say_why(stored, message):
    with pytest.raises(ValueError, match=message):
        AMConfig.from_json(stored)


def test_a_store_written_before_the_change_resumes(tmp_path, tiny_net, flows):
    eng = FlowAM(tiny_net, flows, steps=4, num_points=48, quiet=True)
    first = eng.run([0, 1], [0])
    # The store as the version before the autoencoder field wrote it: same run, another text.
    old = json.dumps({k: v for k, v in json.loads(eng.config.to_json()).items() if k != "autoencoder"},
                     sort_keys=True)
    store = tmp_path / "old.h5"
    marked = first.points.copy()
    marked[:, 0] = 0.125  # a stored job is read back, not recomputed
    dataclasses.replace(first, points=marked, config=old).save(store)
    full = eng.run([0, 1, 2], [0], store=store).sorted()
    assert len(full) == 3 and np.array_equal(full.points[:2], marked)
    fresh = eng.run([2], [0])
    assert np.array_equal(full.points[2], fresh.points[0])
    # Rewritten in today's stored form; another run's settings are still refused.
    assert Explanations.load(store).config == eng.config.to_json()
    with pytest.raises(ValueError, match="steps 4 -> 5"):
        FlowAM(tiny_net, flows, steps=5, num_points=48, quiet=True).run([0], [0], store=store)


def test_cloud_size_rule(tmp_path, tiny_net, flows):
    assert flows.num_points == 64
    # The flows' count where the caller gives none (FlowAM made 1024-point clouds from these).
    assert FlowAM(tiny_net, flows, steps=2, quiet=True).config.num_points == 64
    assert FlowAM(tiny_net, flows, steps=2, num_points=48, quiet=True).config.num_points == 48
    # A flows file that records no count (an earlier format) reads as 0, "unknown".
    path = tmp_path / "f.h5"
    flows.save(path)
    with h5py.File(path, "a") as f:
        del f.attrs["num_points"]
    unknown = Flows.load(path)
    assert unknown.num_points == 0 and torch.equal(unknown.mean["act1"], flows.mean["act1"])
    assert FlowAM(tiny_net, unknown, steps=2, quiet=True).config.num_points == DEFAULT_NUM_POINTS
    ckpt = tmp_path / "m.pt"
    save_checkpoint(build_model("pointnet", num_classes=3, width=0.125), ckpt, num_points=96)
    assert cloud_size(flows=unknown, checkpoint=ckpt) == 96
    assert cloud_size(flows=flows, checkpoint=ckpt) == 64
    assert cloud_size(flows=unknown) == cloud_size() == DEFAULT_NUM_POINTS
    assert cloud_size(32, flows=flows, checkpoint=ckpt) == 32
    bare = tmp_path / "bare.pt"
    torch.save({"weights": torch.zeros(1)}, bare)
    assert cloud_size(checkpoint=bare) == DEFAULT_NUM_POINTS


def test_targets_by_index_or_name(tiny_net, flows):
    eng = FlowAM(tiny_net, flows, steps=3, num_points=48, quiet=True)
    assert flows.class_names == ["c0", "c1", "c2"]
    by_name = eng.run(["c2", "c0"], [0])
    by_index = eng.run([2, 0], [0])
    assert by_name.classes.tolist() == [2, 0] and np.array_equal(by_name.points, by_index.points)
    assert eng.run_jobs([("c1", 4)]).classes.tolist() == [1]
    with pytest.raises(ValueError, match="unknown class 'cube'; known classes: c0, c1, c2"):
        eng.run(["cube"], [0])
    with pytest.raises(ValueError, match="unknown class 5"):
        eng.run([5], [0])
    with pytest.raises(TypeError, match="index or a class name"):
        eng.run([1.5], [0])
