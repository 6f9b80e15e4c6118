"""The randomization test's calibration from explanations already made (no new AM runs): how
often it calls a stage changed when nothing changed, and how often it detects effects of the
sizes a study saw (docs/design.md, "Faithfulness").

- **False positives**: the trained model against itself. Each check holds the trained model's
  explanations of 2S seeds per class; a null comparison draws two disjoint sets of S of them
  per class and tests them. The rate at alpha must stay near alpha.
- **Power**: planted mixtures. For the stage with the smallest effect of each method that
  changed at some stage, the second sample mixes k of that stage's randomized explanations
  with S - k trained ones (k = 1..S; k = S is the stage itself), the first sample S other
  trained ones. Power is the share of draws with p < alpha, and with p < alpha / (stages of a
  variant), the threshold Holm's adjustment applies to the smallest p-value.
"""
from __future__ import annotations

import json

import numpy as np
from scipy.stats import binomtest

from .permutation import resampled_tests

#: Null comparisons per method (the report pools them over methods).
NULL_DRAWS = 200
#: Draws per planted mixture.
POWER_DRAWS = 100
#: Permutations of each calibration test (its p-value floor stays below alpha / stages).
CALIBRATION_PERM = 999
#: Power the detectable-effect sentence asks for.
TARGET_POWER = 0.8


def calibrate(result, draws: int = NULL_DRAWS, power_draws: int = POWER_DRAWS, n_perm: int = CALIBRATION_PERM,
              seed: int = 0) -> dict:
    """False-positive rate and power of the test, from a `SanityResult`'s explanations.

    Args:
        result: A `SanityResult` with its pools (as `SanityCheck.run`, `tradeoff` and the study
            return it). Methods listed twice under one objective (FlowAM at weight 0 and
            regularized AM) count once.
        draws: Null comparisons per method.
        power_draws: Draws per planted mixture.
        n_perm: Permutations of each test.
        seed: Seed of the draws.

    Returns:
        A dict: "alpha", "per_side", "n_perm", "false_positive" ({"rate", "positives", "tests",
        "ci" (95% Clopper-Pearson), "by_method"}), "power" (rows of label, stage, mixed,
        effect, power, power_holm), "power_draws" and "detectable" (a sentence).

    Raises:
        ValueError: A result without pools.
    """
    if not result.pools:
        raise ValueError("the result holds no distance pools: calibrate the result of SanityCheck.run, tradeoff or "
                         "the study, not one read back from JSON")
    rng = np.random.default_rng(seed)
    alpha = result.methods[0]["alpha"]
    by_method, power, seen = {}, [], set()
    for r, pool in zip(result.methods, result.pools):
        key = json_key(r["config"])
        if key in seen or not pool["dists"]:
            continue
        seen.add(key)
        s = pool["per_side"]
        classes = len(r["classes"])
        trained = np.tile(np.arange(2 * s), (classes, 1))
        any_stage = next(iter(pool["dists"].values()))
        null = resampled_tests(any_stage, trained, trained[:, :0], s, mixed=0, draws=draws, n_perm=n_perm,
                               seed=int(rng.integers(2 ** 31)))
        by_method[r["label"]] = {"positives": int((null["p_value"] < alpha).sum()), "tests": draws}
        if not any(st["changed"] for st in r["stages"]):
            continue  # nothing to plant
        weakest = min(r["stages"], key=lambda st: st["effect"])
        dists = pool["dists"][tuple(sorted(weakest["randomized"]))]
        family = max(sum(1 for st in r["stages"] if st["variant"] == v) for v in r["verdict"] if v != "passes")
        stage_idx = np.tile(np.arange(2 * s, 3 * s), (classes, 1))
        for k in range(1, s + 1):
            got = resampled_tests(dists, trained, stage_idx, s, mixed=k, draws=power_draws, n_perm=n_perm,
                                  seed=int(rng.integers(2 ** 31)))
            power.append({"label": r["label"], "stage": f"{weakest['variant']} {weakest['stage']}", "mixed": k,
                          "effect": float(got["effect"].mean()), "power": float((got["p_value"] < alpha).mean()),
                          "power_holm": float((got["p_value"] < alpha / family).mean())})
    positives = sum(m["positives"] for m in by_method.values())
    tests = sum(m["tests"] for m in by_method.values())
    ci = binomtest(positives, tests).proportion_ci(0.95)
    per_side = result.pools[0]["per_side"]
    return {"alpha": alpha, "per_side": per_side, "classes": len(result.methods[0]["classes"]), "n_perm": n_perm,
            "false_positive": {"rate": positives / tests, "positives": positives, "tests": tests,
                               "ci": [float(ci.low), float(ci.high)], "by_method": by_method},
            "power": power, "power_draws": power_draws, "detectable": detectable(power, per_side,
                                                                                  len(result.methods[0]["classes"]))}


def json_key(config: dict) -> str:
    """A method's objective: its config without the method's name (FlowAM at weight 0 is
    regularized AM)."""
    return json.dumps({k: v for k, v in config.items() if k != "method"}, sort_keys=True)


def detectable(power: list, per_side: int, classes: int) -> str:
    """The sentence on what effect the design detects, from the power rows."""
    size = f"With {classes} classes x {per_side} seeds a side"
    if not power:
        return f"{size}, no method changed at any stage, so no effect of the sizes seen could be planted."
    hit = [r for r in power if r["power_holm"] >= TARGET_POWER]
    missed = [r for r in power if r["power_holm"] < TARGET_POWER]
    if not hit:
        best = max(power, key=lambda r: r["power_holm"])
        return (f"{size}, no planted effect reached {TARGET_POWER:.0%} power at Holm's strictest threshold (best: "
                f"effect {best['effect']:.2f}, power {best['power_holm']:.2f}).")
    smallest = min(hit, key=lambda r: r["effect"])
    text = (f"{size}, planted effects of {smallest['effect']:.2f} and above were detected in at least "
            f"{TARGET_POWER:.0%} of draws at Holm's strictest threshold")
    below = [r for r in missed if r["effect"] < smallest["effect"]]
    if below:
        largest = max(below, key=lambda r: r["effect"])
        text += f"; an effect of {largest['effect']:.2f} in {largest['power_holm']:.0%}"
    return text + "."
