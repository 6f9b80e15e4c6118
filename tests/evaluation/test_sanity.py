import json

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from flowam_fast.evaluation import metrics
from flowam_fast.am.flows import compute_flows
from flowam_fast.models import build_model
from flowam_fast.evaluation.sanity import (SIGMAS, SanityCheck, markdown, randomization_groups, randomize, run_methods,
                                seed_pairs, spearman_rows, stage_plan, write_outputs)

from tests.helpers import random_data as _data


def _pointnet(seed=0, feature_transform=False):
    torch.manual_seed(seed)
    return build_model("pointnet", num_classes=3, width=0.125, feature_transform=feature_transform).eval()


def test_pointnet_groups_go_from_the_output_down():
    names = [n for n, _ in randomization_groups(_pointnet(feature_transform=True))]
    assert names == ["fc3", "fc2", "fc1", "conv3", "conv2", "feature T-Net", "conv1", "input T-Net"]
    assert [n for n, _ in randomization_groups(_pointnet())] == ["fc3", "fc2", "fc1", "conv3", "conv2", "conv1",
                                                                 "input T-Net"]
    dg = build_model("dgcnn", num_classes=3, k=4, emb_dims=32)
    mods = dict(dg.named_modules())
    groups = randomization_groups(dg)
    assert groups[0][0] == "linear3" and groups[-1][0] == "conv1"
    assert all(m in mods for _, ms in groups for m in ms)
    # Every parameter of the model is in some block (by identity: BatchNorms are shared modules).
    covered = {id(p) for _, ms in groups for m in ms for p in mods[m].parameters()}
    assert covered == {id(p) for p in dg.parameters()}


def test_generic_groups_are_leaf_layers_last_first(tiny_net):
    assert randomization_groups(tiny_net) == [("fc", ["fc"]), ("conv2", ["conv2"]), ("conv1", ["conv1"])]


def test_randomize_touches_only_the_named_blocks_and_is_seeded_by_name():
    model = _pointnet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = _pointnet()
    randomize(a, ["fc2", "bn2"], seed=3)
    for k, v in a.state_dict().items():
        changed = not torch.equal(v, before[k])
        if k.startswith(("fc2.", "bn2.")) and not k.endswith("num_batches_tracked"):
            assert changed or k.startswith("bn2.")  # BatchNorm may already be at its init
        else:
            assert not changed, k
    assert not torch.equal(a.fc2.weight, before["fc2.weight"])
    # The same block gets the same weights alone or together with others (cascading == independent).
    b = _pointnet()
    randomize(b, ["fc3", "fc2", "bn2"], seed=3)
    assert torch.equal(a.fc2.weight, b.fc2.weight)
    c = _pointnet()
    randomize(c, ["fc2", "bn2"], seed=4)
    assert not torch.equal(a.fc2.weight, c.fc2.weight)
    with pytest.raises(ValueError, match="unknown module"):
        randomize(c, ["nope"])


def test_stage_plan_is_cumulative_then_independent():
    groups = [("a", ["a"]), ("b", ["b1", "b2"]), ("c", ["c"])]
    plan = stage_plan(groups)
    assert plan == [("cascading", "a", ["a"]), ("cascading", "b", ["a", "b1", "b2"]),
                    ("cascading", "c", ["a", "b1", "b2", "c"]), ("independent", "a", ["a"]),
                    ("independent", "b", ["b1", "b2"]), ("independent", "c", ["c"])]
    assert [p[0] for p in stage_plan(groups, ("independent",))] == ["independent"] * 3
    with pytest.raises(ValueError, match="unknown variants"):
        stage_plan(groups, ("sideways",))


def test_spearman_rows_match_scipy_with_ties():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 40))
    b = a + rng.normal(size=(5, 40))
    a[:, :10] = 0.0  # ties, as post-ReLU features have
    got = spearman_rows(a, b)
    want = [spearmanr(a[i], b[i]).statistic for i in range(5)]
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(spearman_rows(a, a), 1.0)
    assert spearman_rows(np.ones((1, 4)), a[:1, :4])[0] == 0.0


def test_seed_pairs():
    classes = np.array([0, 0, 0, 1, 1, 2])
    seeds = np.array([0, 1, 2, 0, 1, 0])
    i, j = seed_pairs(classes, seeds)
    assert sorted(zip(i.tolist(), j.tolist())) == [(0, 1), (0, 2), (1, 2), (3, 4)]


@pytest.fixture(scope="module")
def setup():
    model = _pointnet()
    data = _data(num=24, n=64)
    flows = compute_flows(model, data, quiet=True)
    evaluator = _pointnet(seed=1)
    return model, data, flows, evaluator


def _check(setup, **kw):
    model, data, flows, evaluator = setup
    kw.setdefault("method", "flowam")
    return SanityCheck(model, evaluator, flows=flows, train_set=data, steps=4, num_points=48, **kw)


def test_sanity_check_mechanics(setup):
    model, _, flows, evaluator = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    check = _check(setup)
    res = check.run([0, 1, 2], [0, 1])
    # The trained model is never modified; stages work on copies.
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    n = len(randomization_groups(model))
    assert [s["variant"] for s in res["stages"]] == ["cascading"] * n + ["independent"] * n
    # The first cascading and the first independent stage randomize the same block: same numbers.
    first_i = res["stages"][n]
    assert {k: v for k, v in res["stages"][0].items() if k != "variant"} == \
        {k: v for k, v in first_i.items() if k != "variant"}
    # The threshold is the seed-to-seed mean -/+ SIGMAS standard deviations, recomputed here directly.
    base = check.explain(model, [0, 1, 2], [0, 1]).sorted()
    cd = metrics.chamfer(torch.from_numpy(base.points[0::2]), torch.from_numpy(base.points[1::2])).double().numpy()
    feats = metrics.evaluator_features(evaluator, base.points)["global"]
    sp = spearman_rows(feats[0::2], feats[1::2])
    assert res["seed_to_seed"]["pairs"] == 3
    assert res["threshold"]["chamfer"] == pytest.approx(cd.mean() + SIGMAS * cd.std(ddof=1), rel=1e-6)
    assert res["threshold"]["spearman"] == pytest.approx(sp.mean() - SIGMAS * sp.std(ddof=1), rel=1e-6)
    for s in res["stages"]:
        assert s["changed"] == (s["chamfer_mean"] > res["threshold"]["chamfer"]
                                and s["spearman_mean"] < res["threshold"]["spearman"])
        assert 0.0 <= s["success"] <= 1.0 and s["chamfer_mean"] >= 0.0
        # The margins are the same rule in seed-to-seed standard deviations.
        assert s["chamfer_margin"] == pytest.approx((s["chamfer_mean"] - cd.mean()) / cd.std(ddof=1))
        assert s["spearman_margin"] == pytest.approx((sp.mean() - s["spearman_mean"]) / sp.std(ddof=1))
        assert s["changed"] == (s["chamfer_margin"] > SIGMAS and s["spearman_margin"] > SIGMAS)
    for v in ("cascading", "independent"):
        assert res["verdict"][v] == all(s["changed"] for s in res["stages"] if s["variant"] == v)
    assert res["verdict"]["passes"] == (res["verdict"]["cascading"] and res["verdict"]["independent"])
    json.dumps(res)  # the result is plain JSON


def test_sanity_check_is_deterministic(setup):
    a = _check(setup, variants=("cascading",)).run([0, 2], [0, 1])
    b = _check(setup, variants=("cascading",)).run([0, 2], [0, 1])
    assert a == b


def test_randomizing_the_model_moves_flowam_explanations(setup):
    """A stage with every block randomized must give other explanations than the trained model."""
    res = _check(setup, variants=("cascading",)).run([0, 1], [0, 1])
    assert res["stages"][-1]["chamfer_mean"] > 0.0
    assert res["stages"][-1]["spearman_mean"] < 1.0


def test_sanity_check_needs_two_seeds_and_training_data(setup):
    model, _, flows, evaluator = setup
    with pytest.raises(ValueError, match="at least 2 seeds"):
        _check(setup).run([0], [0])
    with pytest.raises(ValueError, match="train_set"):
        SanityCheck(model, evaluator, flows=flows, method="flowam", steps=2, num_points=48)
    # A method without a flow term needs no training data.
    SanityCheck(model, evaluator, flows=flows, method="regularized", steps=2, num_points=48)


def test_outputs(setup, tmp_path):
    res = [_check(setup, variants=("cascading",), method=m).run([0, 1], [0, 1]) for m in ("flowam", "vanilla")]
    write_outputs(res, tmp_path)
    data = json.loads((tmp_path / "sanity.json").read_text())
    assert [m["method"] for m in data["methods"]] == ["flowam", "vanilla"]
    assert (tmp_path / "sanity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = markdown(res)
    assert "| flowam |" in md and "| vanilla |" in md and md.count("\n| cascading | ") == 2 * len(res[0]["stages"])


def test_realism_columns_are_nearest_real_class_per_stage(setup):
    model, data, _, _ = setup
    refs = metrics.references_by_class(data.points, data.labels, num_refs=2)
    check = _check(setup, variants=("cascading",), references=refs)
    res = check.run([0, 1], [0, 1])
    base = check.explain(model, [0, 1], [0, 1]).sorted()
    dist, cls = metrics.nearest_class(base.points, refs)
    assert res["trained"]["nearest_real"] == pytest.approx(dist.mean(), rel=1e-6)
    assert res["trained"]["nearest_is_target"] == pytest.approx((cls == base.classes).mean())
    for s in res["stages"]:
        assert s["nearest_real"] > 0.0 and 0.0 <= s["nearest_is_target"] <= 1.0
    # Without references the columns are left out, in the result and in the table.
    plain = _check(setup, variants=("cascading",)).run([0, 1], [0, 1])
    assert "nearest_real" not in plain["trained"] and "nearest_real" not in plain["stages"][0]
    assert "nearest real" in markdown([res]) and "nearest real" not in markdown([plain])


def test_head_stages_reuse_the_trained_flows_bit_for_bit(setup):
    """Randomizing modules that run after every flow layer leaves the flow layers as they were:
    the cached flows of the trained model must equal a recomputation on the randomized model."""
    model, data, flows, _ = setup
    check = _check(setup)
    head = [m for _, mods in randomization_groups(model)[:3] for m in mods]  # fc3, fc2, fc1 and their BNs
    assert all(check._after_flow_layers(m) for m in head)
    assert not any(check._after_flow_layers(m) for m in ("feat.conv3", "feat.bn3", "feat.stn", "feat.conv1"))
    m = _pointnet()
    randomize(m, head, 0)
    reused = check._flows_for(m, [0, 2], head)
    fresh = compute_flows(m, data, layers=flows.layers, num_classes=flows.num_classes, quiet=True, classes=[0, 2],
                          geometry_of=flows)
    for layer in flows.layers:
        for c in (0, 2):
            assert torch.equal(reused.mean[layer][c], fresh.mean[layer][c])
            assert torch.equal(reused.std[layer][c], fresh.std[layer][c])
    assert check._flows_for(m, [0, 2], head) is reused  # computed once
    # A stage below the head recomputes.
    randomize(m, ["feat.conv3", "feat.bn3"], 0)
    below = check._flows_for(m, [0, 2], ["feat.conv3", "feat.bn3"])
    assert not torch.equal(below.mean["feat.act3"][0], reused.mean["feat.act3"][0])


def test_flows_with_the_geometry_of_other_flows(setup):
    model, data, flows, _ = setup
    m = _pointnet(seed=5)
    full = compute_flows(m, data, quiet=True)
    borrowed = compute_flows(m, data, quiet=True, geometry_of=flows)
    for layer in full.layers:
        assert torch.equal(full.mean[layer], borrowed.mean[layer]) and torch.equal(full.std[layer], borrowed.std[layer])
    # The bounds and continuity target are the data's, measured once: equal to the model-free measurement.
    assert torch.equal(borrowed.lo, flows.lo) and torch.equal(borrowed.hi, flows.hi)
    assert borrowed.d2_target == flows.d2_target == full.d2_target and torch.equal(full.lo, flows.lo)


def test_known_trained_explanations_are_reused_exactly(setup):
    """A run given some of the trained model's explanations (a store of the same config) gives
    the same result as one that computes them all: the engine is batch-composition invariant."""
    check = _check(setup, variants=("cascading",))
    fresh = check.run([0, 2], [0, 1, 2])
    known = check.trained_explanations([0, 1, 2], [0, 1])  # another grid; seed 2 is missing
    assert check.run([0, 2], [0, 1, 2], trained=known) == fresh
    other = _check(setup, variants=("cascading",), flow_weight=3.0)
    with pytest.raises(ValueError, match="another config|made with method"):
        other.run([0, 2], [0, 1], trained=known)


def test_stages_in_worker_processes_match_the_serial_run(setup):
    serial = _check(setup, variants=("cascading",)).run([0, 2], [0, 1])
    parallel = _check(setup, variants=("cascading",), workers=2).run([0, 2], [0, 1])
    assert [s["stage"] for s in parallel["stages"]] == [s["stage"] for s in serial["stages"]]
    for a, b in zip(serial["stages"], parallel["stages"]):
        # One thread per worker: the same arithmetic up to float32 rounding of the thread split.
        assert a["chamfer_mean"] == pytest.approx(b["chamfer_mean"], rel=1e-4, abs=1e-9)
        assert a["spearman_mean"] == pytest.approx(b["spearman_mean"], abs=1e-6)
        assert a["success"] == b["success"]
    with pytest.raises(ValueError, match="workers must be >= 1"):
        _check(setup, workers=0)


def _same_stages(a, b):
    assert [s["stage"] for s in a["stages"]] == [s["stage"] for s in b["stages"]]
    for x, y in zip(a["stages"], b["stages"]):
        # One thread per worker: the same arithmetic up to float32 rounding of the thread split.
        assert x["chamfer_mean"] == pytest.approx(y["chamfer_mean"], rel=1e-4, abs=1e-9)
        assert x["spearman_mean"] == pytest.approx(y["spearman_mean"], abs=1e-6)
        assert x["success"] == y["success"]


def test_methods_share_one_queue_of_stages(setup):
    """run_methods puts every method's stages in one queue of worker processes; each method's
    result is the one its own serial run gives, in the order of `methods`."""
    model, data, flows, evaluator = setup
    methods = ["flowam", "regularized"]
    serial = [_check(setup, method=m, variants=("cascading",)).run([0, 2], [0, 1]) for m in methods]
    shared = run_methods(model, methods, [0, 2], [0, 1], evaluator, flows, data, variants=("cascading",),
                         quiet=True, workers=2, steps=4, num_points=48)
    assert [r["method"] for r in shared] == methods
    for a, b in zip(serial, shared):
        assert a["seed_to_seed"] == b["seed_to_seed"] and a["config"] == b["config"]
        _same_stages(a, b)
