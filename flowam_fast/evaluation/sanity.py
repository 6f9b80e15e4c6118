"""Model-parameter randomization sanity checks (Adebayo et al., 2018), adapted to AM.

An explanation method is faithful to the model only if its explanations change when the
model's parameters are destroyed. Here:

- **Cascading**: the classifier's parameter blocks (``model.randomization_groups()``: a layer
  with its BatchNorm, or a whole T-Net) are re-initialized from the output down, one more
  block per stage, cumulatively. **Independent**: one block at a time, the rest trained.
  A block is re-initialized as at construction (``reset_parameters``: PyTorch's default
  random weights; BatchNorm back to the identity with fresh running statistics), seeded by
  the block's module names, so a block gets the same random weights in both variants.
- At each stage the explanations are regenerated with the same classes, seeds and config.
  Everything the method derives from the model is derived again: FlowAM's activation flows
  are recomputed on the randomized model (its data bounds and continuity target come from
  the data and do not change). The autoencoder of "ae-latent" is not the classifier and
  stays as it is.
- Similarity of each job's explanation to the trained model's explanation of the same
  (class, seed): the Chamfer distance (lower = more similar) and the Spearman rank
  correlation of the evaluator PointNet's 1024-d global features (higher = more similar).

**Threshold.** The reference is the trained model's own seed-to-seed variation: the same
two measures between explanations of the same class from different seeds (every pair).
A stage has *changed* the explanations when its mean Chamfer distance exceeds the seed-to-seed
mean by more than ``SIGMAS`` (2) seed-to-seed standard deviations **and** its mean Spearman
correlation is below the seed-to-seed mean by more than ``SIGMAS`` standard deviations. A
variant passes when every one of its stages changed the explanations; the method passes the
sanity check when both variants pass. A method whose explanations survive the
randomization of the classifier (as generative-model AM can: the generator alone makes
realistic shapes) fails. At least two seeds are needed for the seed-to-seed reference.
Each stage also reports how far it moved in seed-to-seed standard deviations
(``chamfer_margin``, ``spearman_margin``; changed = both above ``SIGMAS``), which tells a
narrow miss from no change at all.

**Realism under randomization** (reported beside the verdict, not part of it; defined before
any result was looked at). The paper's argument against generative AM is that it shows
realistic shapes whatever the model. With real references (``references=``), every stage
also reports, per explanation, the real class whose samples are nearest (mean Chamfer over
its references, ``metrics.nearest_class``): ``nearest_real`` is the mean of that distance
(lower = looks more like some real shape) and ``nearest_is_target`` the share of
explanations whose nearest real class is their target class. An explanation of a randomized
model that still looks like a real object, or still like its target class, is plausible
without being supported by the model.
"""
from __future__ import annotations

import contextlib
import copy
import json
import zlib

import numpy as np
import torch
from scipy.stats import rankdata

from . import metrics
from ..am.engine import FlowAM
from ..am.explanations import Explanations
from ..am.flows import compute_flows
from ..models.adapter import layer_root
from ..models.fast import plain_path

VARIANTS = ("cascading", "independent")
#: Real test samples per class for the realism columns (every class is compared with every job).
REALISM_REFS = 5
#: Real test samples per class for the trade-off's perceptibility (as the metrics' Chamfer).
CLASS_REFS = 20
#: How many seed-to-seed standard deviations a stage must move past the seed-to-seed mean.
SIGMAS = 2.0


def randomization_groups(model) -> list:
    """[(name, [module names])] from the output down. Built-in models list their blocks; for
    any other module every leaf module with parameters is a block, last registered first.
    Names are those of `layer_root(model)` (an adapted classifier's wrapped module)."""
    root = layer_root(model)
    if hasattr(root, "randomization_groups"):
        return [(name, list(mods)) for name, mods in root.randomization_groups()]
    leaves = [name for name, m in root.named_modules()
              if name and not list(m.children()) and any(True for _ in m.parameters(recurse=False))]
    if not leaves:
        raise ValueError(f"{type(root).__name__} has no parameters to randomize")
    return [(name, [name]) for name in reversed(leaves)]


def randomize(model, module_names, seed: int = 0) -> None:
    """Re-initialize the named modules (and their submodules) in place, as at construction,
    from a generator seeded by (seed, module name): the same module always gets the same
    weights, whatever else is randomized with it."""
    root = layer_root(model)
    modules = dict(root.named_modules())
    unknown = [n for n in module_names if n not in modules]
    if unknown:
        raise ValueError(f"unknown module names {unknown} in {type(root).__name__}")
    for name in module_names:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) % (2 ** 63))
            for m in modules[name].modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()


def stage_plan(groups, variants=VARIANTS) -> list:
    """[(variant, stage name, [module names randomized])] in the order they are run."""
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown variants {sorted(unknown)}; choose from {VARIANTS}")
    plan = []
    if "cascading" in variants:
        done = []
        for name, mods in groups:
            done = done + list(mods)
            plan.append(("cascading", name, done))
    if "independent" in variants:
        plan += [("independent", name, list(mods)) for name, mods in groups]
    return plan


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of each row of a with the same row of b (ties get mean ranks)."""
    ra = rankdata(np.asarray(a, np.float64), axis=1)
    rb = rankdata(np.asarray(b, np.float64), axis=1)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    den = np.sqrt((ra * ra).sum(1) * (rb * rb).sum(1))
    # A constant row has no ranking; call it uncorrelated rather than divide by zero.
    return np.where(den > 0, (ra * rb).sum(1) / np.where(den > 0, den, 1.0), 0.0)


def _chamfer_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return metrics.chamfer(torch.as_tensor(a, dtype=torch.float32),
                           torch.as_tensor(b, dtype=torch.float32)).double().numpy()


def seed_pairs(classes: np.ndarray, seeds: np.ndarray):
    """Index pairs (i, j), i < j, of jobs with the same class and different seeds."""
    same = (classes[:, None] == classes[None, :]) & (seeds[:, None] != seeds[None, :])
    i, j = np.nonzero(np.triu(same, k=1))
    return i, j


class SanityCheck:
    """Runs the randomization stages for one method and measures how far explanations move.

    The stages, the threshold and the verdict are those of the `flowam_fast.evaluation.sanity`
    module.

    Args:
        model: The trained classifier, (B, 3, N) -> logits (B, K), adapted with
            `as_classifier` where its output holds more (left untouched; stages work on
            copies). Its blocks are named as in `layer_root(model)`.
        evaluator: A PointNet for the features (see `metrics.evaluator_features`).
        flows: The trained model's flows (bounds, continuity target, layers).
        train_set: The training data, to recompute the flows of randomized models (needed
            when the method has a flow term); any dataset `compute_flows` reads.
        method: The AM method, as in `FlowAM`.
        autoencoder: The autoencoder of method "ae-latent".
        variants: "cascading", "independent" or both.
        seed: Seed of the re-initialized weights.
        references: Real clouds per class, {class: (R, M, 3)} (`metrics.references_by_class`),
            for the realism columns; None leaves them out.
        quiet: No progress output.
        flow_cache: A dict shared by checks of the same model, flows and seed that differ
            only in the objective (see `tradeoff`), so that each randomized model's flows are
            computed once (within this process).
        workers: Processes that run the stages (one thread each).
        **am: Keyword arguments of `FlowAM`.

    Attributes:
        plan: The stages, as (variant, stage name, module names randomized), in run order.
        am_config: The AM config (JSON) of the method's explanations, as their stores record it.

    Raises:
        ValueError: workers < 1, an unknown variant, invalid FlowAM arguments, or a method
            with a flow term and no train_set.
    """

    def __init__(self, model, evaluator, flows=None, train_set=None, method: str = "flowam", autoencoder=None,
                 variants=VARIANTS, seed: int = 0, references: dict | None = None, quiet: bool = False,
                 flow_cache: dict | None = None, workers: int = 1, **am):
        self.model = model
        self.evaluator = evaluator
        self.flows = flows
        self.train_set = train_set
        self.method = method
        self.autoencoder = autoencoder
        self.seed = int(seed)
        self.references = references
        self.quiet = quiet
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = int(workers)
        self.am = am
        self.plan = stage_plan(randomization_groups(model), variants)
        # flow_cache: shared by checks of one model that differ in the objective only (the
        # trade-off's flow weights): a randomized model's flows do not depend on the weights.
        self._flow_cache = {} if flow_cache is None else flow_cache
        self.variants = tuple(variants)
        # Built once here to validate the method and its arguments before any stage runs.
        engine = self._engine(model, flows)
        #: The AM config (JSON) of the method's explanations, as their stores record it.
        self.am_config = engine.config.to_json()
        self._uses_flows = engine.config.flow_weight > 0
        if self._uses_flows and train_set is None:
            raise ValueError(f"method {method!r} aligns activation flows, which must be recomputed for each "
                             "randomized model: pass train_set=")

    def _engine(self, model, flows):
        return FlowAM(model, flows, method=self.method, autoencoder=self.autoencoder, quiet=self.quiet, **self.am)

    def _flows_for(self, model, classes, randomized=()):
        """The flows of `classes` on `model`; only their samples are read (the others' flows
        are not used). Bounds and continuity target are the data's, as the trained flows have
        them. Where every randomized module runs after every flow layer (a classifier head),
        the flow layers compute exactly what they compute in the trained model, so the trained
        model's flows of these classes (computed once) are the recomputed flows, bit for bit.
        `model` must be the trained model with exactly `randomized` re-initialized by
        `randomize(..., self.seed)`: the flows are cached under those names."""
        if not self._uses_flows:
            return self.flows
        if randomized and all(self._after_flow_layers(name) for name in randomized):
            return self._trained_flows(classes)
        f = self.flows
        key = ("randomized", self.seed, tuple(sorted(randomized)), tuple(classes))
        if key not in self._flow_cache:
            self._flow_cache[key] = compute_flows(model, self.train_set, layers=f.layers, num_classes=f.num_classes,
                                                  quiet=True, classes=classes, geometry_of=f,
                                                  quantile_levels=f.quantile_levels)
        return self._flow_cache[key]

    def _trained_flows(self, classes):
        """The trained model's flows of `classes`, computed once (see `_flows_for`)."""
        key = ("trained", tuple(classes))
        if key not in self._flow_cache:
            self._flow_cache[key] = self._flows_for(self.model, classes)
        return self._flow_cache[key]

    def _after_flow_layers(self, name: str) -> bool:
        """True when module `name` (and all its submodules) first runs after the last flow
        layer in a forward pass of the trained model (so it cannot change any flow layer)."""
        order = self._call_order()
        last_tap = max(order[layer] for layer in self.flows.layers)
        firsts = [i for mod, i in order.items() if mod == name or mod.startswith(name + ".")]
        return bool(firsts) and min(firsts) > last_tap

    def _call_order(self) -> dict:
        """{module name: index of its first call} in one plain-path forward of the trained model
        (the fast path folds layers into fused ops and never calls them)."""
        if "order" not in self._flow_cache:
            order = {}
            root = layer_root(self.model)
            names = {m: n for n, m in root.named_modules() if n}

            def first_call(mod, _args):
                order.setdefault(names[mod], len(order))  # returns None: the input is left as it is

            hooks = [m.register_forward_pre_hook(first_call) for m in names]
            probe = torch.zeros(1, 3, max(self.flows.num_points or 0, 16), device=next(self.model.parameters()).device)
            try:
                with torch.no_grad(), plain_path(root) if hasattr(root, "fast_path") else contextlib.nullcontext():
                    self.model.eval()(probe)
            finally:
                for h in hooks:
                    h.remove()
            self._flow_cache["order"] = order
        return self._flow_cache["order"]

    def trained_explanations(self, classes, seeds, known=None):
        """The trained model's explanations of the (class, seed) grid.

        Jobs already in `known` are taken from it: the engine's result for a job does not
        depend on the batch it ran in, so they equal what a new run would give.

        Args:
            classes: Target classes.
            seeds: Seeds of each class.
            known: Explanations of this model made with this method and config (e.g. a store
                of the same run), or None.

        Raises:
            ValueError: `known` was made with another method or config.
        """
        engine = self._engine(self.model, self.flows)
        if known is None:
            return engine.run(classes, seeds)
        if (known.method, known.config) != (self.method, engine.config.to_json()):
            raise ValueError(f"the known explanations were made with method {known.method!r} and config "
                             f"{known.config}, not {self.method!r} and {engine.config.to_json()}")
        have = known.select(classes, seeds)
        done = set(zip(have.classes.tolist(), have.seeds.tolist()))
        missing = [(int(c), int(s)) for c in classes for s in seeds if (int(c), int(s)) not in done]
        return Explanations.concat([have, engine.run_jobs(missing)]) if missing else have

    def explain(self, model, classes, seeds, flows=None):
        """Explanations of `model` (trained or randomized) by this check's method and settings.

        Args:
            model: The classifier to explain.
            classes: Target classes.
            seeds: Seeds of each class.
            flows: The flows of `model`; None takes the trained model's.
        """
        flows = self.flows if flows is None else flows
        return self._engine(model, flows).run(classes, seeds)

    def _features(self, expl) -> np.ndarray:
        return metrics.evaluator_features(self.evaluator, expl.points)["global"]

    def _realism(self, expl) -> dict:
        if not self.references:
            return {}
        dist, cls = metrics.nearest_class(expl.points, self.references)
        return {"nearest_real": float(dist.mean()), "nearest_is_target": float((cls == expl.classes).mean())}

    def stage(self, mods, classes, seeds, base_points, base_feat):
        """Explain one randomized model and compare with the trained model's explanations.

        Args:
            mods: Names of the modules re-initialized.
            classes: Target classes.
            seeds: Seeds of each class.
            base_points: The trained model's explanations (J, N, 3), in (class, seed) order.
            base_feat: Their evaluator features (J, D).

        Returns:
            A tuple of the Chamfer distance (J,) and the Spearman correlation (J,) of each
            job to the trained model's explanation, and a dict of the success rate and the
            realism columns.
        """
        m = copy.deepcopy(self.model)
        randomize(m, mods, self.seed)
        expl = self.explain(m, classes, seeds, self._flows_for(m, classes, mods)).sorted()
        cd = _chamfer_pairs(base_points, expl.points)
        sp = spearman_rows(base_feat, self._features(expl))
        return cd, sp, {"success": float(expl.success.mean()), **self._realism(expl)}

    def prepare(self, classes, seeds, trained=None) -> dict:
        """What the stages of `run` need.

        Args:
            classes: Target classes.
            seeds: Seeds of each class, at least two (the threshold is the seed-to-seed
                variation).
            trained: Known explanations of the trained model (see `trained_explanations`).

        Returns:
            A dict of the trained model's explanations, their features, and the distinct
            randomizations to run.

        Raises:
            ValueError: Fewer than two distinct seeds.
        """
        seeds = list(dict.fromkeys(int(s) for s in seeds))
        if len(seeds) < 2:
            raise ValueError("the sanity check needs at least 2 seeds: its threshold is the seed-to-seed variation")
        base = self.trained_explanations(classes, seeds, trained).sorted()
        # Each distinct randomization runs once (the first cascading and independent stages
        # randomize the same block).
        todo = list(dict.fromkeys(tuple(sorted(mods)) for _, _, mods in self.plan))
        if self._uses_flows and self.workers > 1 and \
                any(all(self._after_flow_layers(n) for n in key) for key in todo):
            self._trained_flows(classes)  # made once here, not once per worker process
        return {"classes": classes, "seeds": seeds, "base": base, "base_feat": self._features(base), "todo": todo}

    def run(self, classes, seeds, trained=None) -> dict:
        """Run every stage of the plan on the (class, seed) grid.

        Args:
            classes: Target classes.
            seeds: Seeds of each class, at least two.
            trained: Explanations of the trained model already made with this method and
                config (see `trained_explanations`), or None.

        Returns:
            The result (JSON-ready): the config, the seed-to-seed reference, the threshold,
            every stage's similarity, margins and realism, and the verdict per variant and
            overall ("passes").
        """
        prep = self.prepare(classes, seeds, trained)
        return self.summarize(prep, run_stages([self], [prep])[0])

    def summarize(self, prep: dict, measured: list) -> dict:
        """The result of `run` from `prepare`'s output and each randomization's `stage`.

        Args:
            prep: What `prepare` returned.
            measured: The output of `stage` for each of prep's randomizations, in order.
        """
        base, base_feat, seeds = prep["base"], prep["base_feat"], prep["seeds"]
        i, j = seed_pairs(base.classes, base.seeds)
        ss_cd = _chamfer_pairs(base.points[i], base.points[j])
        ss_sp = spearman_rows(base_feat[i], base_feat[j])
        sd = (lambda v: float(v.std(ddof=1)) if v.size > 1 else 0.0)
        thr_cd = float(ss_cd.mean()) + SIGMAS * sd(ss_cd)
        thr_sp = float(ss_sp.mean()) - SIGMAS * sd(ss_sp)
        # How far a stage moved, in seed-to-seed standard deviations (changed = both > SIGMAS):
        # a graded view of the binary verdict, e.g. to tell a narrow miss from no change at all.
        # None where the seed-to-seed values do not vary (JSON has no infinity).
        margin = (lambda delta, s: float(delta / s) if s > 0 else None)
        seen = {}
        for key, (cd, sp, extra) in zip(prep["todo"], measured):
            seen[key] = {"chamfer_mean": float(cd.mean()), "chamfer_std": float(cd.std()),
                         "spearman_mean": float(sp.mean()), "spearman_std": float(sp.std()),
                         "chamfer_margin": margin(cd.mean() - ss_cd.mean(), sd(ss_cd)),
                         "spearman_margin": margin(ss_sp.mean() - sp.mean(), sd(ss_sp)), **extra,
                         "changed": bool(cd.mean() > thr_cd and sp.mean() < thr_sp)}
        stages = [{"variant": variant, "stage": name, "randomized": list(mods), **seen[tuple(sorted(mods))]}
                  for variant, name, mods in self.plan]
        verdict = {v: all(s["changed"] for s in stages if s["variant"] == v) for v in self.variants}
        verdict["passes"] = all(verdict[v] for v in self.variants)
        return {"method": self.method, "config": json.loads(base.config), "classes": sorted(set(base.classes.tolist())),
                "seeds": seeds, "sigmas": SIGMAS,
                "trained": {"success": float(base.success.mean()), **self._realism(base)},
                "seed_to_seed": {"pairs": int(i.size), "chamfer_mean": float(ss_cd.mean()), "chamfer_std": sd(ss_cd),
                                 "spearman_mean": float(ss_sp.mean()), "spearman_std": sd(ss_sp)},
                "threshold": {"chamfer": thr_cd, "spearman": thr_sp},
                "stages": stages, "verdict": verdict}


def run_stages(checks: list, preps: list) -> list:
    """`stage` for every randomization of every check (with its `prepare` output), as one
    queue: in the processes of the first check's `workers` (one thread each; small AM
    batches use two threads poorly and two processes well), else in this process. One
    queue for several checks keeps both processes busy to the end, where a pool per check
    leaves one idle whenever a check has an odd number of stages. Returns, per check, the
    results in its `todo` order."""
    tasks = [(c, key) for c, prep in enumerate(preps) for key in prep["todo"]]
    workers = min(checks[0].workers, len(tasks))
    args = [(c, list(key), preps[c]["classes"], preps[c]["seeds"], preps[c]["base"].points, preps[c]["base_feat"])
            for c, key in tasks]
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # `spawn`: a fork would inherit the parent's OpenMP pool. Each process gets the checks once.
        with ProcessPoolExecutor(max_workers=workers, initializer=_worker_init, initargs=(checks,),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            done = [f.result() for f in [pool.submit(_worker_stage, *a) for a in args]]
    else:
        done = [checks[c].stage(*rest) for c, *rest in args]
    out = [[] for _ in checks]
    for (c, _), result in zip(tasks, done):
        out[c].append(result)
    return out


_WORKER_CHECKS = None


def _worker_init(checks) -> None:
    global _WORKER_CHECKS
    torch.set_num_threads(1)
    for check in checks:
        check.quiet = True  # one progress bar per stage from several processes would interleave
    _WORKER_CHECKS = checks


def _worker_stage(c, mods, classes, seeds, base_points, base_feat):
    return _WORKER_CHECKS[c].stage(mods, classes, seeds, base_points, base_feat)


def markdown(results: list) -> str:
    """A verdict table, then the stages of each method."""
    lines = ["| method | cascading | independent | verdict | seed-to-seed Chamfer | seed-to-seed Spearman |",
             "|---|---|---|---|---|---|"]
    word = {True: "changed at every stage", False: "survives some stage", None: "not run"}
    for r in results:
        v, ss = r["verdict"], r["seed_to_seed"]
        lines.append(f"| {r['method']} | {word[v.get('cascading')]} | {word[v.get('independent')]} | "
                     f"**{'passes' if v['passes'] else 'fails'}** | {ss['chamfer_mean']:.4f} ± {ss['chamfer_std']:.4f} | "
                     f"{ss['spearman_mean']:.3f} ± {ss['spearman_std']:.3f} |")
    for r in results:
        t, tr = r["threshold"], r["trained"]
        realism = "nearest_real" in tr
        head = f"trained-model success {tr['success']:.0%}"
        if realism:
            head += (f", nearest real class at Chamfer {tr['nearest_real']:.4f}, "
                     f"target class nearest for {tr['nearest_is_target']:.0%}")
        cols = ["variant", "randomized", "Chamfer", "Spearman", "moved (σ: Chamfer / Spearman)", "success"] + \
            (["nearest real", "nearest is target"] if realism else []) + ["changed"]
        lines += ["", f"**{r['method']}** (threshold: Chamfer > {t['chamfer']:.4f} and Spearman < {t['spearman']:.3f}; "
                  f"{head})", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for s in r["stages"]:
            row = [s["variant"], s["stage"], f"{s['chamfer_mean']:.4f}", f"{s['spearman_mean']:.3f}",
                   " / ".join("n/a" if m is None else f"{m:+.1f}" for m in (s["chamfer_margin"], s["spearman_margin"])),
                   f"{s['success']:.0%}"]
            if realism:
                row += [f"{s['nearest_real']:.4f}", f"{s['nearest_is_target']:.0%}"]
            lines.append("| " + " | ".join(row + ["yes" if s["changed"] else "no"]) + " |")
    return "\n".join(lines)


def run_methods(model, methods, classes, seeds, evaluator, flows, train_set, autoencoder=None, variants=VARIANTS,
                references=None, quiet: bool = False, trained: dict | None = None, **am) -> list:
    """`SanityCheck.run` for each method, with the stages of all methods in one queue.

    Args:
        model: The trained classifier.
        methods: The AM methods to check.
        classes: Target classes.
        seeds: Seeds of each class, at least two.
        evaluator: A PointNet for the features.
        flows: The trained model's flows.
        train_set: The training data, to recompute the flows of randomized models.
        autoencoder: The autoencoder of "ae-latent" (given to that method only).
        variants: "cascading", "independent" or both.
        references: Real clouds per class for the realism columns, or None.
        quiet: No progress output.
        trained: {method: explanations of the trained model already made}, reused where
            they match.
        **am: Keyword arguments of `FlowAM`.

    Returns:
        The result of each method's check, in the order of `methods`.
    """
    checks = [SanityCheck(model, evaluator, flows=flows, train_set=train_set, method=method,
                          autoencoder=autoencoder if method == "ae-latent" else None, variants=variants,
                          references=references, quiet=quiet, **am) for method in methods]
    preps = [check.prepare(classes, seeds, trained=(trained or {}).get(check.method)) for check in checks]
    return [check.summarize(prep, measured) for check, prep, measured in zip(checks, preps, run_stages(checks, preps))]


def _objective(check: SanityCheck) -> str:
    """The check's AM config without the method's name, which only labels the results."""
    config = json.loads(check.am_config)
    del config["method"]
    return json.dumps(config, sort_keys=True)


def _known(check: SanityCheck, candidates):
    """The first of `candidates` (explanations of the trained model) made with the check's
    method and config, or None."""
    return next((e for e in candidates if (e.method, e.config) == (check.method, check.am_config)), None)


def _reusable(check: SanityCheck, done, known, classes, seeds):
    """(result, trained explanations) of an earlier run of this check, or (None, None)."""
    if known is None:
        return None, None
    want = (check.method, json.loads(known.config), sorted({int(c) for c in classes}),
            list(dict.fromkeys(int(s) for s in seeds)), sorted(check.variants))
    for r in done:
        have = (r["method"], r["config"], r["classes"], r["seeds"],
                sorted(v for v in VARIANTS if v in r["verdict"]))
        base = known.select(classes, seeds).sorted()
        if have == want and len(base) == len(want[2]) * len(want[3]):
            return r, base
    return None, None


def worst_margin(stages) -> float | None:
    """The smallest of each stage's two margins (seed-to-seed standard deviations moved): the
    stage that came nearest to surviving the randomization; None if no margin is defined."""
    vals = [m for s in stages for m in (s["chamfer_margin"], s["spearman_margin"]) if m is not None]
    return min(vals) if vals else None


#: The trade-off's reference methods (no flow weight): their points sit beside FlowAM's curve.
TRADEOFF_REFERENCES = ("regularized", "ae-latent")


def tradeoff(model, evaluator, flows, train_set, classes, seeds, flow_weights, references: dict,
             class_refs: dict | None = None, autoencoder=None, baselines=TRADEOFF_REFERENCES, variants=VARIANTS,
             quiet: bool = False, trained=(), done=(), **am) -> dict:
    """Perceptibility against faithfulness as the flow weight varies (docs/design.md, "Faithfulness").

    For each weight of `flow_weights`, the randomization check of FlowAM at that weight, and of
    each method of `baselines` once (flow_weight None). Each point is that check's result (as
    `SanityCheck.run` gives it: each stage's margins and the verdict, i.e. faithfulness) with
    the trained model's success and mean Chamfer distance to real samples of the target class
    (`class_refs`, default `references`; perceptibility, lower is better) and `worst_margin`
    (see `worst_margin`). references: real clouds per
    class for the realism columns; trained: explanations of the trained model already made
    (any methods and configs; those that match a point's are reused). done: results of
    `SanityCheck.run` already made on this model and these classes and seeds (e.g. the demo's
    sanity check); a point with the same method and config takes its result instead of running
    again, when `trained` holds its explanations. am: FlowAM keyword arguments shared by every
    point (not flow_weight).
    """
    if "flow_weight" in am:
        raise ValueError("tradeoff sets the flow weight itself: pass the weights as flow_weights=")
    weights = [float(w) for w in flow_weights]
    if not weights or any(not w >= 0 for w in weights):
        raise ValueError(f"flow_weights must be a non-empty list of weights >= 0, got {list(flow_weights)}")
    unknown = set(baselines) - {"vanilla", "regularized", "ae-latent"}
    if unknown:
        raise ValueError(f"unknown reference methods {sorted(unknown)}; choose from vanilla, regularized, ae-latent")
    class_refs = references if class_refs is None else class_refs
    trained = list(trained.values()) if isinstance(trained, dict) else list(trained)
    shared = {}  # randomized models' flows, the same at every weight
    runs = [("flowam", w) for w in dict.fromkeys(weights)] + [(m, None) for m in baselines]
    checks, results, bases = [], [], []
    for method, weight in runs:
        extra = {} if weight is None else {"flow_weight": weight}
        check = SanityCheck(model, evaluator, flows=flows, train_set=train_set, method=method,
                            autoencoder=autoencoder if method == "ae-latent" else None, variants=variants,
                            references=references, quiet=quiet, flow_cache=shared, **extra, **am)
        known = _known(check, trained)
        result, base = _reusable(check, done, known, classes, seeds)
        checks.append((check, known))
        results.append(result)
        bases.append(base)
    # Points that optimize one objective under two names (FlowAM at weight 0 is regularized
    # AM, bit for bit) run once: per objective, the point with a result already, else one
    # with known explanations. The checks still to run share one queue of stages (`run_stages`).
    keys = [_objective(check) for check, _ in checks]
    runs_of = {}
    for i, key in enumerate(keys):
        runs_of.setdefault(key, []).append(i)
    source = {key: max(group, key=lambda i: (results[i] is not None, checks[i][1] is not None))
              for key, group in runs_of.items()}
    todo = [i for i in source.values() if results[i] is None]
    preps = [checks[i][0].prepare(classes, seeds, trained=checks[i][1]) for i in todo]
    if todo:
        measured = run_stages([checks[i][0] for i in todo], preps)
        for i, prep, m in zip(todo, preps, measured):
            results[i] = checks[i][0].summarize(prep, m)
            bases[i] = prep["base"]
    for i, key in enumerate(keys):
        if results[i] is None:
            src = source[key]
            results[i] = dict(results[src], method=checks[i][0].method, config=json.loads(checks[i][0].am_config))
            bases[i] = bases[src]
    points = []
    for (method, weight), result, base in zip(runs, results, bases):
        # The whole check's result (what `SanityCheck.run` gives: the demo's sanity table reads
        # FlowAM's and AE-latent's from here), and the point's two coordinates.
        points.append({**result, "method": method, "flow_weight": weight, "success": result["trained"]["success"],
                       "chamfer_to_class": float(metrics.chamfer_to_class(base.points, base.classes, class_refs).mean()),
                       "worst_margin": worst_margin(result["stages"])})
    return {"classes": result["classes"], "seeds": result["seeds"], "sigmas": SIGMAS,
            "points": [p for p in points if p["method"] == "flowam"],
            "references": [p for p in points if p["method"] != "flowam"]}


def write_tradeoff(result: dict, out_dir) -> None:
    """out_dir/tradeoff.json, out_dir/tradeoff.md (the table) and out_dir/tradeoff.png."""
    from pathlib import Path

    from .plots import tradeoff_plot
    from .report import write_json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(result, out_dir / "tradeoff.json")
    tradeoff_plot(result, out_dir / "tradeoff.png")
    (out_dir / "tradeoff.md").write_text("# Flow weight trade-off\n\n" + tradeoff_markdown(result)
                                         + "\n\n![trade-off](tradeoff.png)\n")


def tradeoff_markdown(result: dict) -> str:
    """One row per point: flow weight, success, Chamfer to the class, worst margin, verdict."""
    lines = ["| method | flow weight | success | Chamfer to class | worst margin (σ) | verdict |", "|---|---|---|---|---|---|"]
    for p in result["points"] + result["references"]:
        w = "n/a" if p["flow_weight"] is None else f"{p['flow_weight']:g}"
        m = "n/a" if p["worst_margin"] is None else f"{p['worst_margin']:+.1f}"
        lines.append(f"| {p['method']} | {w} | {p['success']:.0%} | {p['chamfer_to_class']:.4f} | {m} | "
                     f"{'passes' if p['verdict']['passes'] else 'fails'} |")
    return "\n".join(lines)


def write_outputs(results: list, out_dir) -> None:
    """out_dir/sanity.json, out_dir/sanity.png (the curves) and out_dir/sanity.md."""
    from pathlib import Path

    from .plots import sanity_curves
    from .report import write_json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json({"sigmas": SIGMAS, "methods": results}, out_dir / "sanity.json")
    sanity_curves(results, out_dir / "sanity.png")
    (out_dir / "sanity.md").write_text("# Randomization sanity check\n\n" + markdown(results) + "\n\n![sanity](sanity.png)\n")
