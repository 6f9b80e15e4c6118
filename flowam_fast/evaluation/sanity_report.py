"""The randomization check's result object and its report: Markdown tables, JSON and PNG figures
(docs/design.md, "Faithfulness")."""
from __future__ import annotations

from pathlib import Path

#: How the report explains the effect's scale.
EFFECT_SCALE = ("effect: the probability that a randomized model's explanation is farther from a trained model's "
                "explanation of the same class than two trained-model explanations are from each other (0.5 = no "
                "change, 1 = every randomized explanation farther), averaged over the Chamfer distance and the "
                "evaluator-feature distance, with a 95% bootstrap interval")


def _interval(x: dict) -> str:
    lo, hi = x["effect_ci"]
    return f"{x['effect']:.2f} [{lo:.2f}, {hi:.2f}]"


def _p(p: float) -> str:
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


class SanityResult:
    """What the randomization check of one or more methods found, with its report.

    Returned by `SanityCheck.run`, `run_methods`, `tradeoff` and the study.

    Args:
        methods: Each method's result (JSON-ready; see `SanityCheck.summarize`).
        pools: Each method's distance matrices (`SanityCheck.summarize`), for the calibration;
            not written to the report.
        tradeoff: The flow weight's trade-off (`tradeoff`), or None.
        calibration: The false-positive rate and power (`calibration.calibrate`), or None.
        header: Markdown put at the top of the report (e.g. its provenance).

    Attributes:
        methods: As given.
        tradeoff: As given.
        calibration: As given.
        header: As given.
    """

    def __init__(self, methods: list, pools: list | None = None, tradeoff: dict | None = None,
                 calibration: dict | None = None, header: str = ""):
        self.methods = list(methods)
        self.pools = list(pools) if pools is not None else []
        self.tradeoff = tradeoff
        self.calibration = calibration
        self.header = header

    def __repr__(self) -> str:
        parts = []
        for r in self.methods:
            changed = sum(s["changed"] for s in r["stages"])
            weakest = min(r["stages"], key=lambda s: s["effect"])
            parts.append(f"{r['label']} {'passes' if r['verdict']['passes'] else 'fails'} ({changed}/{len(r['stages'])} "
                         f"stages changed, weakest effect {_interval(weakest)})")
        extra = " with trade-off" if self.tradeoff else ""
        extra += " and calibration" if self.calibration else ""
        return f"SanityResult({len(self.methods)} method(s){extra}: " + "; ".join(parts) + ")"

    def method(self, label: str) -> dict:
        """The result of the method labelled `label` (e.g. "ae-latent", "flowam w=100").

        Raises:
            KeyError: No such method.
        """
        for r in self.methods:
            if r["label"] == label:
                return r
        raise KeyError(f"no method {label!r}; this result has {[r['label'] for r in self.methods]}")

    def to_json(self) -> dict:
        """The report's JSON: {"methods", "tradeoff", "calibration"}."""
        return {"methods": self.methods, "tradeoff": self.tradeoff, "calibration": self.calibration}

    def markdown(self) -> str:
        """The verdict table, each method's stages, the trade-off and the calibration."""
        parts = [verdict_table(self.methods), "", EFFECT_SCALE + ".", "", stage_tables(self.methods)]
        if self.tradeoff:
            parts += ["", "## Flow weight trade-off", "", tradeoff_table(self.tradeoff), "",
                      "![trade-off](tradeoff.png)"]
        if self.calibration:
            parts += ["", "## Calibration", "", calibration_text(self.calibration)]
        return "\n".join(parts)

    def write_report(self, out_dir, title: str = "Randomization sanity check") -> Path:
        """Write out_dir/sanity.json, sanity.md and sanity.png (tradeoff.png with a trade-off).

        Args:
            out_dir: The output directory (made if missing).
            title: The Markdown report's title.

        Returns:
            The path of sanity.md.
        """
        from .plots import sanity_curves, tradeoff_plot
        from .report import write_json
        from ..atomic import atomic_path

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json(self.to_json(), out / "sanity.json")
        sanity_curves(self.methods, out / "sanity.png")
        if self.tradeoff:
            tradeoff_plot(self.tradeoff, out / "tradeoff.png")
        head = [f"# {title}", ""] + ([self.header, ""] if self.header else [])
        with atomic_path(out / "sanity.md") as tmp:
            tmp.write_text("\n".join(head + [self.markdown(), "", "![sanity](sanity.png)", ""]))
        return out / "sanity.md"


def verdict_table(results: list) -> str:
    """One row per method: each variant's outcome, the verdict, the null row, the weakest stage."""
    word = {True: "changed at every stage", False: "survives some stage", None: "not run"}
    lines = ["| method | cascading | independent | verdict | stages changed | weakest stage: effect [95% CI] | "
             "null (trained vs trained): p, effect |", "|---|---|---|---|---|---|---|"]
    for r in results:
        v = r["verdict"]
        weakest = min(r["stages"], key=lambda s: s["effect"])
        lines.append(f"| {r['label']} | {word[v.get('cascading')]} | {word[v.get('independent')]} | "
                     f"**{'passes' if v['passes'] else 'fails'}** | {sum(s['changed'] for s in r['stages'])} / "
                     f"{len(r['stages'])} | {weakest['stage']}: {_interval(weakest)} | "
                     f"{_p(r['null']['p_value'])}, {_interval(r['null'])} |")
    return "\n".join(lines)


def stage_tables(results: list) -> str:
    """Each method's stages: p-value, Holm-adjusted p-value, effect with interval, success, realism."""
    out = []
    for r in results:
        tr = r["trained"]
        realism = "nearest_real" in tr
        head = (f"**{r['label']}**: {len(r['classes'])} classes x {r['seeds_per_side']} seeds a side (trained "
                f"seeds {r['trained_seeds'][0]}-{r['trained_seeds'][-1]}, randomized "
                f"{r['randomized_seeds'][0]}-{r['randomized_seeds'][-1]}), {r['n_perm']} permutations, "
                f"alpha {r['alpha']:g}; trained-model success {tr['success']:.0%}")
        if realism:
            head += (f", nearest real class at Chamfer {tr['nearest_real']:.4f}, target class nearest for "
                     f"{tr['nearest_is_target']:.0%}")
        cols = ["variant", "randomized", "p", "p (Holm)", "effect [95% CI]", "AUC Chamfer", "AUC features",
                "success"] + (["nearest real", "nearest is target"] if realism else []) + ["changed"]
        out += ["", head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for s in r["stages"]:
            row = [s["variant"], s["stage"], _p(s["p_value"]), _p(s["p_adjusted"]), _interval(s),
                   f"{s['effect_by_distance']['chamfer']:.2f}", f"{s['effect_by_distance']['features']:.2f}",
                   f"{s['success']:.0%}"]
            if realism:
                row += [f"{s['nearest_real']:.4f}", f"{s['nearest_is_target']:.0%}"]
            out.append("| " + " | ".join(row + ["yes" if s["changed"] else "no"]) + " |")
    return "\n".join(out).lstrip("\n")


def tradeoff_table(result: dict) -> str:
    """One row per point: flow weight, success, Chamfer to the class, stages changed, weakest effect, verdict."""
    lines = ["| method | flow weight | success | Chamfer to class | stages changed | weakest effect [95% CI] | verdict |",
             "|---|---|---|---|---|---|---|"]
    for p in result["points"] + result["references"]:
        w = "n/a" if p["flow_weight"] is None else f"{p['flow_weight']:g}"
        lo, hi = p["weakest_effect_ci"]
        lines.append(f"| {p['method']} | {w} | {p['success']:.0%} | {p['chamfer_to_class']:.4f} | "
                     f"{p['stages_changed']} / {p['stages']} | {p['weakest_effect']:.2f} [{lo:.2f}, {hi:.2f}] | "
                     f"{'passes' if p['passes'] else 'fails'} |")
    return "\n".join(lines)


def calibration_text(cal: dict) -> str:
    """The false-positive rate, the power table and what the design can detect."""
    fp = cal["false_positive"]
    lo, hi = fp["ci"]
    lines = [f"False-positive rate at alpha = {cal['alpha']:g}: **{fp['rate']:.3f}** ({fp['positives']} of "
             f"{fp['tests']} null comparisons, 95% interval [{lo:.3f}, {hi:.3f}]): the trained model against itself, "
             f"two disjoint seed sets of {cal['per_side']} a side drawn from its {2 * cal['per_side']} explanations of "
             f"each class, {cal['n_perm']} permutations each.", "",
             "| method | false positives |", "|---|---|"]
    lines += [f"| {m} | {r['positives']} / {r['tests']} |" for m, r in fp["by_method"].items()]
    if cal["power"]:
        lines += ["", f"Power against planted effects: the second sample mixes k of the weakest stage's randomized "
                      f"explanations with {cal['per_side']} - k trained ones per class ({cal['power_draws']} draws "
                      f"each); power is the share of draws with p < alpha and with p < alpha / stages (Holm's "
                      f"strictest threshold).", "",
                  "| method | stage | k | mean effect | power at alpha | power at alpha / stages |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['label']} | {r['stage']} | {r['mixed']} | {r['effect']:.2f} | {r['power']:.2f} | "
                  f"{r['power_holm']:.2f} |" for r in cal["power"]]
    lines += ["", cal["detectable"]]
    return "\n".join(lines)
