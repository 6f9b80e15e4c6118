"""The test's calibration (`evaluation.calibration`) on synthetic pools where the answer is
known: a method whose randomized explanations are shifted is detected with power rising with
the planted share, and null comparisons keep their false-positive rate."""
import numpy as np
import pytest
from scipy.stats import binom

from flowam_fast.evaluation.calibration import calibrate, detectable
from flowam_fast.evaluation.sanity_report import SanityResult, calibration_text

C, S = 6, 4


def _pool(rng, shift):
    x = rng.normal(size=(C, 3 * S, 5))
    x[:, 2 * S:, 0] += shift
    d = np.linalg.norm(x[:, :, None] - x[:, None], axis=-1)
    return np.stack([d, d ** 2])


def _method(label, config, stages):
    return {"label": label, "method": label, "config": config, "classes": list(range(C)), "alpha": 0.05,
            "stages": [{"variant": "cascading", "stage": f"s{i}", "randomized": [f"m{i}"], **s}
                       for i, s in enumerate(stages)], "verdict": {"cascading": False, "passes": False}}


def test_calibration_on_known_pools():
    rng = np.random.default_rng(0)
    shifted = _method("shifted", {"w": 1}, [{"effect": 0.9, "changed": True}, {"effect": 0.95, "changed": True}])
    null = _method("null", {"w": 2}, [{"effect": 0.5, "changed": False}])
    twin = _method("twin", {"w": 1}, shifted["stages"])  # the same objective as "shifted": counted once
    pools = [{"per_side": S, "dists": {("m0",): _pool(rng, 3.0), ("m1",): _pool(rng, 3.0)}},
             {"per_side": S, "dists": {("m0",): _pool(rng, 0.0)}}, None]
    pools[2] = pools[0]
    res = SanityResult([shifted, null, twin], pools=pools)
    cal = calibrate(res, draws=150, power_draws=40, n_perm=199)
    fp = cal["false_positive"]
    assert set(fp["by_method"]) == {"shifted", "null"} and fp["tests"] == 300
    assert fp["positives"] <= binom.ppf(0.9995, 300, 0.05) and fp["ci"][0] <= fp["rate"] <= fp["ci"][1]
    # Only the method that changed gets power rows: k = 1..S of its weakest stage (s0).
    assert [(r["label"], r["stage"], r["mixed"]) for r in cal["power"]] == [("shifted", "cascading s0", k)
                                                                            for k in range(1, S + 1)]
    effects = [r["effect"] for r in cal["power"]]
    assert effects == sorted(effects) and cal["power"][-1]["power_holm"] == 1.0
    assert all(r["power_holm"] <= r["power"] for r in cal["power"])
    assert "were detected in at least 80%" in cal["detectable"]
    text = calibration_text(cal)
    assert f"{fp['positives']} of 300 null comparisons" in text and "| shifted | cascading s0 | 4 |" in text
    with pytest.raises(ValueError, match="no distance pools"):
        calibrate(SanityResult([shifted]))


def test_detectable_sentence():
    rows = [{"effect": 0.6, "power_holm": 0.3}, {"effect": 0.8, "power_holm": 0.9}, {"effect": 0.95, "power_holm": 1.0}]
    assert detectable(rows, 4, 6) == ("With 6 classes x 4 seeds a side, planted effects of 0.80 and above were detected "
                                      "in at least 80% of draws at Holm's strictest threshold; an effect of 0.60 in 30%.")
    assert "no planted effect reached" in detectable(rows[:1], 4, 6)
    assert "no method changed" in detectable([], 4, 6)
