import json

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from flowam_fast.evaluation import metrics
from flowam_fast.am.flows import compute_flows
from flowam_fast.models import build_model
from flowam_fast.evaluation.permutation import effect, holm, permutation_test
from flowam_fast.evaluation.sanity import (SanityCheck, cross_distances, randomization_groups, randomize, rank_vectors,
                                           run_methods, side_seeds, stage_plan)

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


def test_rank_vectors_give_the_spearman_distance_with_ties():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 40))
    a[:, :10] = 0.0  # ties, as post-ReLU features have
    r = rank_vectors(a)
    d = np.linalg.norm(r[:, None] - r[None], axis=-1)
    for i in range(5):
        for j in range(5):
            assert d[i, j] == pytest.approx(np.sqrt(max(0.0, 2 * (1 - spearmanr(a[i], a[j]).statistic))), abs=1e-7)
    assert not rank_vectors(np.ones((1, 4))).any()  # a constant row has no ranking


def test_side_seeds_are_disjoint():
    assert side_seeds(3) == ([0, 1, 2], [3, 4, 5])
    with pytest.raises(TypeError, match="seeds per class on each side"):
        side_seeds([0, 1])


@pytest.fixture(scope="module")
def setup():
    model = _pointnet()
    data = _data(num=24, n=64)
    flows = compute_flows(model, data, quiet=True)
    evaluator = _pointnet(seed=1)
    return model, data, flows, evaluator


#: 3 classes x 3 seeds a side and 199 permutations: the smallest p-value, 1/200, passes
#: alpha = 0.05 after Holm over a PointNet variant's 7 stages.
CLASSES, SEEDS = [0, 1, 2], 3
FAST = dict(n_perm=199, n_boot=100)


@pytest.fixture(scope="module")
def cascading(setup):
    """FlowAM's cascading check, run once for the tests that compare other runs with it."""
    return _check(setup, variants=("cascading",)).run(CLASSES, SEEDS).methods[0]


def _check(setup, **kw):
    model, data, flows, evaluator = setup
    kw = {"method": "flowam", "steps": 4, "num_points": 48, **kw}
    return SanityCheck(model, evaluator, flows=flows, train_set=data, quiet=True, **FAST, **kw)


def test_sanity_check_mechanics(setup):
    model, _, flows, evaluator = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    check = _check(setup)
    res = check.run(CLASSES, SEEDS).methods[0]
    # The trained model is never modified; stages work on copies.
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    n = len(randomization_groups(model))
    assert [s["variant"] for s in res["stages"]] == ["cascading"] * n + ["independent"] * n
    assert res["trained_seeds"] == [0, 1, 2] and res["randomized_seeds"] == [3, 4, 5]
    # The first cascading and the first independent stage randomize the same block: same test.
    first_i = res["stages"][n]
    assert {k: res["stages"][0][k] for k in ("p_value", "effect", "effect_ci")} == \
        {k: first_i[k] for k in ("p_value", "effect", "effect_ci")}
    # A stage's test, recomputed here from the explanations: the trained model with seeds 0-2
    # against the randomized one with seeds 3-5.
    stage = res["stages"][2]
    trained = check.explain(model, CLASSES, [0, 1, 2]).sorted()
    m = _pointnet()
    randomize(m, stage["randomized"], 0)
    rand = check.explain(m, CLASSES, [3, 4, 5], check._flows_for(m, CLASSES, stage["randomized"])).sorted()
    pts = np.concatenate([trained.points.reshape(3, 3, 48, 3), rand.points.reshape(3, 3, 48, 3)], 1)
    feats = metrics.evaluator_features(evaluator, pts.reshape(-1, 48, 3))["global"]
    ranks = rank_vectors(feats).reshape(3, 6, -1)
    d = cross_distances(pts, ranks, pts, ranks)
    d = (d + d.transpose(0, 1, 3, 2)) / 2
    d[..., np.arange(6), np.arange(6)] = 0.0
    side = np.zeros((3, 6), bool)
    side[:, 3:] = True
    direct = check._test(d, tuple(sorted(stage["randomized"])))  # the check's own seed for this stage
    assert stage["p_value"] == direct["p_value"] and stage["effect_ci"] == direct["effect_ci"]
    assert stage["effect"] == pytest.approx(effect(d, side, n_boot=2)["effect"])
    # Another seed of the permutations gives nearly the same p-value (199 permutations).
    assert abs(permutation_test(d, side, 199, seed=1)["p_value"] - stage["p_value"]) < 0.15
    for v in ("cascading", "independent"):
        family = [s for s in res["stages"] if s["variant"] == v]
        assert [s["p_adjusted"] for s in family] == holm([s["p_value"] for s in family])
        assert all(s["changed"] == (s["p_adjusted"] < 0.05) for s in family)
        assert res["verdict"][v] == all(s["changed"] for s in family)
    assert res["verdict"]["passes"] == (res["verdict"]["cascading"] and res["verdict"]["independent"])
    assert 0 <= res["null"]["p_value"] <= 1 and "changed" not in res["null"]
    json.dumps(res)  # the result is plain JSON


def test_sanity_check_is_deterministic(setup, cascading):
    assert _check(setup, variants=("cascading",)).run(CLASSES, SEEDS).methods == [cascading]


def test_the_random_control_comes_out_unchanged(setup):
    """Method "random" ignores the model: every randomized model's explanations are the trained
    model's of the same seeds, so no stage may come out changed."""
    model, _, _, _ = setup
    check = _check(setup, method="random", steps=50)
    res = check.run(CLASSES, SEEDS).methods[0]
    assert res["config"]["steps"] == 0
    assert not any(s["changed"] for s in res["stages"]) and not res["verdict"]["passes"]
    m = _pointnet(seed=7)
    randomize(m, [n for _, mods in randomization_groups(m) for n in mods], 0)
    assert np.array_equal(check.stage(["fc3"], CLASSES, [3, 4, 5]).points, check.explain(m, CLASSES, [3, 4, 5]).points)


def test_a_destroyed_model_changes_plain_am_explanations(setup):
    """Plain AM optimizes the logit alone: with every block re-initialized its explanations
    move, and the test says so (a planted effect on a real model)."""
    check = _check(setup, method="vanilla", variants=("cascading",), steps=60, lr=0.05)
    check.plan = check.plan[-1:]  # every block re-initialized
    (last,) = check.run(CLASSES, SEEDS).methods[0]["stages"]
    assert last["changed"] and last["effect_ci"][0] > 0.5


def test_too_few_seeds_are_refused_with_the_number_needed(setup):
    model, _, flows, evaluator = setup
    with pytest.raises(ValueError, match="at least 2 seeds"):
        _check(setup).run(CLASSES, 1)
    with pytest.raises(ValueError, match="use at least 3 seeds per side"):
        _check(setup).run(CLASSES, 2)
    with pytest.raises(TypeError, match="an int"):
        _check(setup).run(CLASSES, [0, 1])
    with pytest.raises(ValueError, match="train_set"):
        SanityCheck(model, evaluator, flows=flows, method="flowam", steps=2, num_points=48)
    # A method without a flow term needs no training data.
    SanityCheck(model, evaluator, flows=flows, method="regularized", steps=2, num_points=48)


def test_report(setup, tmp_path):
    res = run_methods(setup[0], ["flowam", "random"], CLASSES, SEEDS, setup[3], setup[2], setup[1],
                      variants=("cascading",), quiet=True, steps=4, num_points=48, **FAST)
    assert "flowam w=100 fails" in repr(res) or "flowam w=100 passes" in repr(res)
    assert "random fails (0/7 stages changed" in repr(res)
    path = res.write_report(tmp_path)
    data = json.loads((tmp_path / "sanity.json").read_text())
    assert [m["label"] for m in data["methods"]] == ["flowam w=100", "random"]
    for s in data["methods"][0]["stages"]:
        assert {"p_value", "p_adjusted", "effect", "effect_ci", "changed", "success"} <= set(s)
    assert (tmp_path / "sanity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = path.read_text()
    assert "| flowam w=100 |" in md and "| random |" in md and md.count("\n| cascading | ") == 2 * 7
    assert "0.5 = no change" in md
    assert res.method("random") is res.methods[1]
    with pytest.raises(KeyError, match="no method"):
        res.method("nope")


def test_realism_columns_are_nearest_real_class_per_stage(setup, cascading):
    model, data, _, _ = setup
    refs = metrics.references_by_class(data.points, data.labels, num_refs=2)
    check = _check(setup, variants=("cascading",), references=refs)
    res = check.run(CLASSES, SEEDS).methods[0]
    base = check.explain(model, CLASSES, [0, 1, 2]).sorted()
    dist, cls = metrics.nearest_class(base.points, refs)
    assert res["trained"]["nearest_real"] == pytest.approx(dist.mean(), rel=1e-6)
    assert res["trained"]["nearest_is_target"] == pytest.approx((cls == base.classes).mean())
    for s in res["stages"]:
        assert s["nearest_real"] > 0.0 and 0.0 <= s["nearest_is_target"] <= 1.0
    # Without references the columns are left out, in the result and in the table.
    assert "nearest_real" not in cascading["trained"] and "nearest_real" not in cascading["stages"][0]


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


def test_known_trained_explanations_are_reused_exactly(setup, cascading):
    """A run given some of the trained model's explanations (a store of the same config) gives
    the same result as one that computes them all: the engine is batch-composition invariant."""
    check = _check(setup, variants=("cascading",))
    known = check.trained_explanations(CLASSES, [0, 2, 4])  # seeds 1, 3 and 5 are missing
    assert check.run(CLASSES, SEEDS, trained=known).methods == [cascading]
    other = _check(setup, variants=("cascading",), flow_weight=3.0)
    with pytest.raises(ValueError, match="another config|made with method"):
        other.run(CLASSES, SEEDS, trained=known)


def _same_stages(a, b):
    assert [s["stage"] for s in a["stages"]] == [s["stage"] for s in b["stages"]]
    for x, y in zip(a["stages"], b["stages"]):
        # One thread per worker: the same arithmetic up to float32 rounding of the thread split,
        # which can move a distance by an ulp and so a bootstrap quantile slightly.
        assert x["effect"] == pytest.approx(y["effect"], abs=0.02)
        assert x["success"] == y["success"]


def test_methods_share_one_queue_of_stages(setup, cascading):
    """run_methods puts every method's stages in one queue of worker processes; each method's
    result is the one its own serial run gives, in the order of `methods`."""
    model, data, flows, evaluator = setup
    methods = ["flowam", "regularized"]
    serial = [cascading, _check(setup, method="regularized", variants=("cascading",)).run(CLASSES, SEEDS).methods[0]]
    shared = run_methods(model, methods, CLASSES, SEEDS, evaluator, flows, data, variants=("cascading",),
                         quiet=True, workers=2, steps=4, num_points=48, **FAST).methods
    assert [r["method"] for r in shared] == methods
    for a, b in zip(serial, shared):
        assert a["config"] == b["config"]
        _same_stages(a, b)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        _check(setup, workers=0)
