"""`flowam-fast evaluate`, `sanity` and `demo` end to end on tiny configurations."""
import json

import pytest

from flowam_fast.cli import main
from flowam_fast.data import generate_shapes
from flowam_fast.am.explanations import Explanations


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    data = generate_shapes(tmp / "data", train_per_class=4, test_per_class=3, num_points=96)
    ckpt, flows = tmp / "m.pt", tmp / "f.h5"
    assert main(["train", "--data", str(data), "--epochs", "1", "--num-points", "64", "--width", "0.125",
                 "--out", str(ckpt), "--quiet"]) == 0
    assert main(["flows", "--model", str(ckpt), "--data", str(data), "--num-points", "64", "--out", str(flows),
                 "--quiet"]) == 0
    # A small evaluator, so the commands do not train the full-width default one.
    evaluator = tmp / "ev.pt"
    assert main(["train", "--data", str(data), "--epochs", "1", "--num-points", "64", "--width", "0.125",
                 "--seed", "1", "--out", str(evaluator), "--quiet"]) == 0
    stores = []
    for method in ("flowam", "vanilla"):
        out = tmp / f"{method}.h5"
        assert main(["explain", "--model", str(ckpt), "--flows", str(flows), "--classes", "0,1,2", "--seeds", "0-1",
                     "--steps", "3", "--method", method, "--out", str(out), "--quiet"]) == 0
        stores.append(out)
    return tmp, data, ckpt, flows, evaluator, stores


def test_evaluate_writes_tables_and_charts(setup, capsys):
    tmp, data, _, _, evaluator, stores = setup
    out = tmp / "report"
    assert main(["evaluate", "--explanations", *map(str, stores), "--data", str(data), "--out", str(out),
                 "--evaluator", str(evaluator), "--refs", "3", "--emd-refs", "2", "--emd-points", "32",
                 "--quiet"]) == 0
    res = json.loads((out / "metrics.json").read_text())["methods"]
    assert [r["method"] for r in res] == ["flowam", "vanilla"]
    for r in res:
        assert set(r) >= {"success", "chamfer", "emd", "fid", "mis", "per_class"}
        assert len(r["per_class"]) == 3 and r["fid"] >= 0 and r["mis"] >= 1.0 - 1e-12
        stored = Explanations.load(stores[0] if r["method"] == "flowam" else stores[1])
        assert r["success"] == pytest.approx(float(stored.success.mean()))
    md = (out / "report.md").read_text()
    assert "### Per method" in md and "### Per class" in md and "| flowam |" in md
    for key in ("success", "chamfer", "emd", "fid", "mis"):
        assert (out / f"{key}.png").read_bytes()[:4] == b"\x89PNG"
        assert f"({key}.png)" in md
    # Errors are messages: the same method twice, a store of another dataset.
    capsys.readouterr()
    assert main(["evaluate", "--explanations", str(stores[0]), str(stores[0]), "--data", str(data), "--out",
                 str(out), "--evaluator", str(evaluator)]) == 1
    assert "same method" in capsys.readouterr().err
    e = Explanations.load(stores[0])
    e.class_names = ["x"] * len(e.class_names)
    e.save(tmp / "other.h5")
    assert main(["evaluate", "--explanations", str(tmp / "other.h5"), "--data", str(data), "--out", str(out),
                 "--evaluator", str(evaluator)]) == 1
    assert "another dataset" in capsys.readouterr().err


def test_sanity_cli(setup, capsys):
    tmp, data, ckpt, flows, evaluator, _ = setup
    out = tmp / "sanity"
    assert main(["sanity", "--model", str(ckpt), "--flows", str(flows), "--data", str(data), "--out", str(out),
                 "--methods", "flowam,random", "--classes", "0,1,2", "--seeds", "3", "--steps", "2",
                 "--permutations", "199", "--variants", "cascading", "--evaluator", str(evaluator), "--quiet"]) == 0
    res = json.loads((out / "sanity.json").read_text())
    assert [m["method"] for m in res["methods"]] == ["flowam", "random"]
    assert all(s["variant"] == "cascading" and {"p_value", "p_adjusted", "effect", "effect_ci", "changed"} <= set(s)
               for m in res["methods"] for s in m["stages"])
    assert res["methods"][0]["n_perm"] == 199 and res["methods"][0]["randomized_seeds"] == [3, 4, 5]
    assert (out / "sanity.png").read_bytes()[:4] == b"\x89PNG" and (out / "sanity.md").exists()
    assert main(["sanity", "--model", str(ckpt), "--flows", str(flows), "--data", str(data), "--out", str(out),
                 "--methods", "dreaming", "--evaluator", str(evaluator)]) == 1
    # Too few seeds for the test: refused with the number needed, before any AM run.
    assert main(["sanity", "--model", str(ckpt), "--flows", str(flows), "--data", str(data), "--out", str(out),
                 "--classes", "0,1", "--seeds", "2", "--evaluator", str(evaluator)]) == 1
    assert "seeds per side" in capsys.readouterr().err


DEMO_TINY = ["--shapes", "sphere,cube,cone", "--epochs", "1", "--ae-epochs", "1", "--evaluator-epochs", "1", "--steps", "2", "--train-per-class", "3",
             "--test-per-class", "2", "--quiet"]


def test_demo_tiny(tmp_path):
    """The demo's stages in order, on a tiny data set: the main job only (the randomization
    check and the trade-off are `flowam-fast study`'s)."""
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *DEMO_TINY]) == 0
    for name in ("model.pt", "flows.h5", "autoencoder.pt", "evaluator.pt", "flowam.h5", "vanilla.h5",
                 "regularized.h5", "ae-latent.h5", "explanations.png", "baselines.png", "metrics.json", "report.md"):
        assert (out / name).exists(), name
    assert not (out / "sanity.json").exists()
    summary = json.loads((out / "metrics.json").read_text())
    assert [m["method"] for m in summary["methods"]] == ["flowam", "vanilla", "regularized", "ae-latent"]
    md = (out / "report.md").read_text()
    assert "FlowAM / plain AM Chamfer ratio" in md and "Randomization" not in md
    # Outputs of another version in the same directory are redone, not mixed in or fatal:
    # flows of older activation taps and a store made with another config.
    import json as _json

    import h5py

    with h5py.File(out / "flows.h5", "r+") as f:
        desc = _json.loads(f.attrs["model"])
        desc.pop("tap_version")
        f.attrs["model"] = _json.dumps(desc)
    with h5py.File(out / "flowam.h5", "r+") as f:
        f.attrs["config"] = f.attrs["config"].replace('"steps": 2', '"steps": 3')
    assert main(["demo", "--out", str(out), *DEMO_TINY]) == 0
    from flowam_fast import Explanations, Flows

    assert "tap_version" in Flows.load(out / "flows.h5").model
    assert '"steps": 2' in Explanations.load(out / "flowam.h5").config


def test_demo_redoes_the_cache_of_another_version(tmp_path, capsys):
    from flowam_fast.pipelines.demo import CACHED, DEMO_RECIPE, _clear_stale_cache

    out = tmp_path / "demo"
    (out / "data").mkdir(parents=True)
    for name in ("model.pt", "flows.h5", "notes.txt"):
        (out / name).write_text("x")
    _clear_stale_cache(out)  # no stamp: written before stamps existed
    assert sorted(p.name for p in out.iterdir()) == ["demo.json", "notes.txt"]
    assert "recipe 1" in capsys.readouterr().out
    assert json.loads((out / "demo.json").read_text()) == {"recipe": DEMO_RECIPE}
    (out / "model.pt").write_text("x")
    _clear_stale_cache(out)  # this version: kept
    assert (out / "model.pt").exists() and capsys.readouterr().out == ""
    for stamp in ('{"version": 0}', '{"recipe": 1}', "not json", "[]"):
        (out / "demo.json").write_text(stamp)
        (out / "model.pt").write_text("x")
        _clear_stale_cache(out)
        assert not (out / "model.pt").exists(), stamp
    capsys.readouterr()
    empty = tmp_path / "empty"
    empty.mkdir()
    _clear_stale_cache(empty)
    assert [p.name for p in empty.iterdir()] == ["demo.json"] and capsys.readouterr().out == ""
    assert "data" in CACHED and "flowam.h5" in CACHED


def test_sanity_cli_tradeoff(setup):
    tmp, data, ckpt, flows, evaluator, _ = setup
    out = tmp / "tradeoff"
    assert main(["sanity", "--model", str(ckpt), "--flows", str(flows), "--data", str(data), "--out", str(out),
                 "--flow-weights", "0,10", "--tradeoff-references", "none", "--classes", "0,1,2", "--seeds", "3",
                 "--permutations", "199", "--steps", "2", "--variants", "cascading", "--evaluator", str(evaluator),
                 "--quiet"]) == 0
    res = json.loads((out / "sanity.json").read_text())["tradeoff"]
    assert [p["flow_weight"] for p in res["points"]] == [0.0, 10.0]
    assert res["references"] == []
    assert all({"success", "chamfer_to_class", "weakest_effect", "weakest_effect_ci", "passes"} <= set(p)
               for p in res["points"])
    assert (out / "tradeoff.png").read_bytes()[:4] == b"\x89PNG" and "trade-off" in (out / "sanity.md").read_text()
    assert main(["sanity", "--model", str(ckpt), "--flows", str(flows), "--data", str(data), "--out", str(out),
                 "--flow-weights", "1,x", "--evaluator", str(evaluator)]) == 1
