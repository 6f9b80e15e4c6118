"""Model-parameter randomization sanity checks (Adebayo et al., 2018), adapted to AM, as a test.

An explanation method is faithful to the model only if its explanations change when the
model's parameters are destroyed. Here:

- **Cascading**: the classifier's parameter blocks (``model.randomization_groups()``: a layer
  with its BatchNorm, or a whole T-Net) are re-initialized from the output down, one more
  block per stage, cumulatively. **Independent**: one block at a time, the rest trained.
  A block is re-initialized as at construction (``reset_parameters``: PyTorch's default
  random weights; BatchNorm back to the identity with fresh running statistics), seeded by
  the block's module names, so a block gets the same random weights in both variants.
- At each stage the explanations are regenerated with the same classes and config.
  Everything the method derives from the model is derived again: FlowAM's activation flows
  are recomputed on the randomized model (its data bounds and continuity target come from
  the data and do not change). The autoencoder of "ae-latent" is not the classifier and
  stays as it is.
- **Disjoint seeds.** With S seeds per side, the trained model is explained with seeds
  0..S-1 and every randomized model with seeds S..2S-1 (`side_seeds`), so a method whose
  output is mostly its initial cloud cannot look unchanged because both sides started from
  the same cloud.

**The test** (`evaluation.permutation`): per stage, a two-sample permutation test,
stratified by class, of "the randomized model's explanations of each class are distributed
like the trained model's". Its statistic combines the energy distances of two distances
between explanations: the Chamfer distance between clouds, and the Euclidean distance between
the evaluator PointNet's global features after ranking them within each cloud and scaling the
centred ranks to unit length (``sqrt(2 (1 - Spearman))``: a metric, insensitive to the
features' overall scale, and the rank correlation the previous check measured). Per stage:
``p_value``; ``p_adjusted``, Holm's adjustment over the stages of the variant; ``effect``,
the probability that a randomized explanation is farther from a trained one than two trained
ones are from each other (same class; 0.5 = no change, 1 = every cross pair farther apart),
averaged over the two distances, with ``effect_ci``, a 95% bootstrap interval; and
``changed`` = ``p_adjusted`` < ``alpha``. A variant passes when every stage changed; the
method passes when both variants pass. A design whose tests cannot reach ``alpha`` after
Holm's adjustment (too few seeds or permutations) is refused before anything runs
(`permutation.check_size`). A *null* row compares the trained model with itself (seeds
0..S-1 against S..2S-1): it should come out unchanged, and it is not part of the verdict.
The control method "random" (uniform clouds in the data bounds, independent of the model)
must come out unchanged at every stage.

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
from tqdm import tqdm

from . import metrics
from .permutation import ALPHA, N_BOOT, N_PERM, check_size, effect, holm, permutation_test
from .sanity_report import SanityResult
from ..am.config import AMConfig
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
#: Seeds per class on each side of the test by default.
SEEDS_PER_SIDE = 4
#: The distances the test combines, in the order of its (K, C, m, m) matrices.
DISTANCES = ("chamfer", "features")


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


def side_seeds(per_side: int) -> tuple[list, list]:
    """The seeds of each side of the test: (trained model's 0..S-1, randomized models' S..2S-1).

    Raises:
        TypeError: per_side is not an int (a list of seeds was given).
    """
    if isinstance(per_side, bool) or not isinstance(per_side, (int, np.integer)):
        raise TypeError(f"seeds is the number of seeds per class on each side (an int; the trained model gets "
                        f"0..S-1, the randomized ones S..2S-1), got {per_side!r}")
    return list(range(int(per_side))), list(range(int(per_side), 2 * int(per_side)))


def rank_vectors(features) -> np.ndarray:
    """Each row's ranks (ties get mean ranks), centred and scaled to unit length: the Euclidean
    distance between two such rows is sqrt(2 (1 - Spearman)). A constant row stays zero."""
    r = rankdata(np.asarray(features, np.float64), axis=1)
    r -= r.mean(1, keepdims=True)
    norm = np.linalg.norm(r, axis=1, keepdims=True)
    return np.where(norm > 0, r / np.where(norm > 0, norm, 1.0), 0.0)


def _chamfer_pairs(a: np.ndarray, b: np.ndarray, chunk: int = 256) -> np.ndarray:
    out = np.empty(len(a), np.float64)
    for s in range(0, len(a), chunk):
        out[s:s + chunk] = metrics.chamfer(torch.as_tensor(a[s:s + chunk], dtype=torch.float32),
                                           torch.as_tensor(b[s:s + chunk], dtype=torch.float32)).double().numpy()
    return out


def cross_distances(a_points, a_ranks, b_points, b_ranks) -> np.ndarray:
    """The test's distances (`DISTANCES`) between explanations of a and of b, class by class.

    Args:
        a_points: Clouds (C, A, N, 3), A per class.
        a_ranks: Their evaluator features as `rank_vectors` (C, A, D).
        b_points: Clouds (C, B, N, 3).
        b_ranks: Their rank vectors (C, B, D).

    Returns:
        (K, C, A, B): the Chamfer distance and the feature distance of every pair of a class.
    """
    c, na, nb = a_points.shape[0], a_points.shape[1], b_points.shape[1]
    ci, ai, bi = (g.ravel() for g in np.meshgrid(np.arange(c), np.arange(na), np.arange(nb), indexing="ij"))
    cd = _chamfer_pairs(a_points[ci, ai], b_points[ci, bi]).reshape(c, na, nb)
    fd = np.linalg.norm(a_ranks[:, :, None] - b_ranks[:, None, :], axis=-1)
    return np.stack([cd, fd])


def _within(points, ranks) -> np.ndarray:
    """cross_distances of a set with itself, exactly symmetric with a zero diagonal."""
    d = cross_distances(points, ranks, points, ranks)
    d = (d + d.transpose(0, 1, 3, 2)) / 2
    d[..., np.arange(d.shape[-1]), np.arange(d.shape[-1])] = 0.0
    return d


def _by_class(expl, classes, per_side: int):
    """(points (C, S, N, 3), the sorted explanations) of a store holding every (class, seed)."""
    expl = expl.sorted()
    got = sorted(set(expl.classes.tolist()))
    if got != list(classes) or len(expl) != len(classes) * per_side:
        raise ValueError(f"expected {per_side} explanations of each class {list(classes)}, got {len(expl)} of classes "
                         f"{got}")
    return expl.points.reshape(len(classes), per_side, *expl.points.shape[1:]), expl


class SanityCheck:
    """Runs the randomization stages for one method and tests each stage against the trained model.

    The stages, the seeds, the test and the verdict are those of the
    `flowam_fast.evaluation.sanity` module.

    Args:
        model: The trained classifier, (B, 3, N) -> logits (B, K), adapted with
            `as_classifier` where its output holds more (left untouched; stages work on
            copies). Its blocks are named as in `layer_root(model)`.
        evaluator: A PointNet for the features (see `metrics.evaluator_features`).
        flows: The trained model's flows (bounds, continuity target, layers).
        train_set: The training data, to recompute the flows of randomized models (needed
            when the method has a flow term); any dataset `compute_flows` reads.
        method: The AM method, as in `FlowAM` ("random" is the model-independent control).
        autoencoder: The autoencoder of method "ae-latent".
        variants: "cascading", "independent" or both.
        seed: Seed of the re-initialized weights, the permutations and the bootstrap.
        references: Real clouds per class, {class: (R, M, 3)} (`metrics.references_by_class`),
            for the realism columns; None leaves them out.
        quiet: No progress bar.
        flow_cache: A dict shared by checks of the same model, flows and seed that differ
            only in the objective (see `tradeoff`), so that each randomized model's flows are
            computed once (within this process).
        workers: Processes that run the stages (one thread each).
        alpha: Level of the tests (after Holm's adjustment).
        n_perm: Permutations of each test.
        n_boot: Bootstrap draws of each effect's interval.
        steps: AM steps (`FlowAM`).
        lr: Adam's learning rate.
        flow_weight: Weight of the flow term; None takes the method's preset.
        continuity_weight: Weight of the continuity term; None takes the method's preset.
        num_points: Points per explanation; None takes `FlowAM`'s rule (`am.config.cloud_size`).
        alignment: The flow term's statistics, "moments" or "quantiles".
        batch_size: Jobs optimized together; None runs each stage's jobs in one batch.
        **am: Other keyword arguments of `FlowAM` (init, init_scale, clamp, layers, ...).

    Attributes:
        plan: The stages, as (variant, stage name, module names randomized), in run order.
        config: The `AMConfig` of the method's explanations: what known explanations must match.
        am_config: Its stored form, as the explanations' stores record it.
        label: The method's name in tables: "flowam w=<flow weight>" for FlowAM, else the method.

    Raises:
        ValueError: workers < 1, an unknown variant, invalid FlowAM arguments, or a method
            with a flow term and no train_set.
    """

    def __init__(self, model, evaluator, flows=None, train_set=None, method: str = "flowam", autoencoder=None,
                 variants=VARIANTS, seed: int = 0, references: dict | None = None, quiet: bool = False,
                 flow_cache: dict | None = None, workers: int = 1, alpha: float = ALPHA, n_perm: int = N_PERM,
                 n_boot: int = N_BOOT, steps: int = AMConfig.steps, lr: float = AMConfig.lr,
                 flow_weight: float | None = None, continuity_weight: float | None = None,
                 num_points: int | None = None, alignment: str = AMConfig.alignment,
                 batch_size: int | None = None, **am):
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
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        self.workers = int(workers)
        self.alpha, self.n_perm, self.n_boot = float(alpha), int(n_perm), int(n_boot)
        self.batch_size = batch_size
        self.am = dict(steps=steps, lr=lr, flow_weight=flow_weight, continuity_weight=continuity_weight,
                       num_points=num_points, alignment=alignment, **am)
        self.plan = stage_plan(randomization_groups(model), variants)
        # flow_cache: shared by checks of one model that differ in the objective only (the
        # trade-off's flow weights): a randomized model's flows do not depend on the weights.
        self._flow_cache = {} if flow_cache is None else flow_cache
        self.variants = tuple(variants)
        # Built once here to validate the method and its arguments before any stage runs.
        engine = self._engine(model, flows)
        #: The AM config of the method's explanations (`AMConfig`): what a store of them must match.
        self.config = engine.config
        #: Its stored form, as their stores record it.
        self.am_config = engine.config.to_json()
        self.label = f"flowam w={engine.config.flow_weight:g}" if method == "flowam" else method
        self._uses_flows = engine.config.flow_weight > 0
        if self._uses_flows and train_set is None:
            raise ValueError(f"method {method!r} aligns activation flows, which must be recomputed for each "
                             "randomized model: pass train_set=")

    def __repr__(self) -> str:
        return (f"SanityCheck({self.label!r}, {len(self.plan)} stages ({', '.join(self.variants)}), "
                f"alpha={self.alpha:g}, n_perm={self.n_perm})")

    def _engine(self, model, flows):
        # Quiet: the check shows one bar over its stages, not one per AM run.
        return FlowAM(model, flows, method=self.method, autoencoder=self.autoencoder, quiet=True, **self.am)

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

    def known(self, candidates):
        """The first of `candidates` (explanations of the trained model, of any method and
        config) made with this check's method and a config that `matches` its own, or None."""
        return next((e for e in candidates if e.method == self.method and self.config.matches(e.config)), None)

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
            return engine.run(classes, seeds, batch_size=self.batch_size)
        if self.known([known]) is None:
            raise ValueError(f"the known explanations were made with method {known.method!r} and config "
                             f"{known.config}, not {self.method!r} and {self.am_config}")
        have = known.select(classes, seeds)
        have.config = self.am_config  # a store of an earlier version: today's stored form
        done = set(zip(have.classes.tolist(), have.seeds.tolist()))
        missing = [(int(c), int(s)) for c in classes for s in seeds if (int(c), int(s)) not in done]
        return Explanations.concat([have, engine.run_jobs(missing, batch_size=self.batch_size)]) if missing else have

    def explain(self, model, classes, seeds, flows=None):
        """Explanations of `model` (trained or randomized) by this check's method and settings.

        Args:
            model: The classifier to explain.
            classes: Target classes.
            seeds: Seeds of each class.
            flows: The flows of `model`; None takes the trained model's.
        """
        flows = self.flows if flows is None else flows
        return self._engine(model, flows).run(classes, seeds, batch_size=self.batch_size)

    def _ranks(self, points) -> np.ndarray:
        return rank_vectors(metrics.evaluator_features(self.evaluator, points)["global"])

    def _realism(self, expl) -> dict:
        if not self.references:
            return {}
        dist, cls = metrics.nearest_class(expl.points, self.references)
        return {"nearest_real": float(dist.mean()), "nearest_is_target": float((cls == expl.classes).mean())}

    def stage(self, mods, classes, seeds):
        """The explanations of the trained model with `mods` re-initialized.

        Args:
            mods: Names of the modules re-initialized.
            classes: Target classes.
            seeds: Seeds of each class (the randomized side's, `side_seeds`).

        Returns:
            The randomized model's explanations, in (class, seed) order.
        """
        m = copy.deepcopy(self.model)
        randomize(m, mods, self.seed)
        return self.explain(m, classes, seeds, self._flows_for(m, classes, mods)).sorted()

    def check_design(self, num_classes: int, seeds: int) -> None:
        """Refuse a design whose tests cannot reach alpha after Holm's adjustment over the
        stages of a variant (`permutation.check_size`).

        Raises:
            TypeError: seeds is not an int.
            ValueError: Too few classes, seeds or permutations; the message says how many.
        """
        first, _ = side_seeds(seeds)
        stages = max(sum(1 for v, _, _ in self.plan if v == variant) for variant in self.variants)
        check_size(num_classes, len(first), stages, self.n_perm, self.alpha)

    def prepare(self, classes, seeds: int = SEEDS_PER_SIDE, trained=None) -> dict:
        """What the stages of `run` need: the trained model's explanations of both seed sets.

        Args:
            classes: Target classes.
            seeds: Seeds per class on each side (`side_seeds`).
            trained: Known explanations of the trained model (see `trained_explanations`).

        Returns:
            A dict of the classes, the seeds per side, the trained model's explanations (seeds
            0..2S-1), the randomized seeds and the distinct randomizations to run ("todo").

        Raises:
            TypeError: seeds is not an int.
            ValueError: Too few classes, seeds or permutations for the tests to reach alpha
                after Holm's adjustment (the message says how many are needed).
        """
        classes = sorted(dict.fromkeys(int(c) for c in classes))
        first, second = side_seeds(seeds)
        self.check_design(len(classes), seeds)
        base = self.trained_explanations(classes, first + second, trained).sorted()
        # Each distinct randomization runs once (the first cascading and independent stages
        # randomize the same block).
        todo = list(dict.fromkeys(tuple(sorted(mods)) for _, _, mods in self.plan))
        if self._uses_flows and self.workers > 1 and \
                any(all(self._after_flow_layers(n) for n in key) for key in todo):
            self._trained_flows(classes)  # made once here, not once per worker process
        return {"classes": classes, "per_side": len(first), "seeds": second, "base": base, "todo": todo}

    def run(self, classes, seeds: int = SEEDS_PER_SIDE, trained=None) -> SanityResult:
        """Run every stage of the plan and test it.

        Args:
            classes: Target classes.
            seeds: Seeds per class on each side: the trained model is explained with seeds
                0..S-1 (and S..2S-1 for the null row), every randomized model with S..2S-1.
            trained: Explanations of the trained model already made with this method and
                config (see `trained_explanations`), or None.

        Returns:
            A `SanityResult` of this method (see `summarize` for what each stage holds).

        Raises:
            TypeError: seeds is not an int.
            ValueError: Too few classes, seeds or permutations for the test (see `prepare`).
        """
        prep = self.prepare(classes, seeds, trained)
        result, pool = self.summarize(prep, run_stages([self], [prep], quiet=self.quiet)[0])
        return SanityResult([result], pools=[pool])

    def _test(self, dists, key) -> dict:
        """p-value and effect of one comparison: dists (K, C, 2S, 2S), the trained side first."""
        per_side = dists.shape[-1] // 2
        side = np.zeros(dists.shape[1:3], bool)
        side[:, per_side:] = True
        seed = (self.seed * 1_000_003 + zlib.crc32(repr(key).encode())) % (2 ** 32)
        test = permutation_test(dists, side, self.n_perm, seed)
        eff = effect(dists, side, self.n_boot, seed)
        return {"p_value": test["p_value"], "effect": eff["effect"], "effect_ci": eff["effect_ci"],
                "effect_by_distance": dict(zip(DISTANCES, eff["effect_by_distance"]))}

    def summarize(self, prep: dict, measured: list) -> tuple[dict, dict]:
        """Test each stage, from `prepare`'s output and each randomization's `stage`.

        Args:
            prep: What `prepare` returned.
            measured: The output of `stage` for each of prep's randomizations, in order.

        Returns:
            A tuple of the result (JSON-ready: the config, the seeds, the null row, every
            stage's p_value, p_adjusted, effect, effect_ci, effect_by_distance, changed,
            success and realism columns, and the verdict per variant and overall, "passes")
            and the pool: the distance matrices of each randomization, (K, C, 3S, 3S) over
            the trained explanations of both seed sets and the randomized ones, for the
            calibration (`calibration.calibrate`).
        """
        classes, per_side = prep["classes"], prep["per_side"]
        base_points, base = _by_class(prep["base"], classes, 2 * per_side)
        base_ranks = self._ranks(base.points).reshape(len(classes), 2 * per_side, -1)
        trained = _within(base_points, base_ranks)  # (K, C, 2S, 2S)
        ours = np.r_[0:per_side, 2 * per_side:3 * per_side]  # trained side, then the randomized one
        seen, pool = {}, {}
        for key, expl in zip(prep["todo"], measured):
            points, expl = _by_class(expl, classes, per_side)
            ranks = self._ranks(expl.points).reshape(len(classes), per_side, -1)
            cross = cross_distances(base_points, base_ranks, points, ranks)
            full = np.concatenate([np.concatenate([trained, cross], -1),
                                   np.concatenate([cross.transpose(0, 1, 3, 2), _within(points, ranks)], -1)], -2)
            pool[key] = full
            seen[key] = {**self._test(full[:, :, ours][:, :, :, ours], key),
                         "success": float(expl.success.mean()), **self._realism(expl)}
        stages = [{"variant": variant, "stage": name, "randomized": list(mods), **seen[tuple(sorted(mods))]}
                  for variant, name, mods in self.plan]
        for v in self.variants:
            family = [s for s in stages if s["variant"] == v]
            for s, adjusted in zip(family, holm([s["p_value"] for s in family])):
                s["p_adjusted"] = adjusted
                s["changed"] = bool(adjusted < self.alpha)
        verdict = {v: all(s["changed"] for s in stages if s["variant"] == v) for v in self.variants}
        verdict["passes"] = all(verdict[v] for v in self.variants)
        trained_side = base.select(classes, list(range(per_side)))
        result = {"method": self.method, "label": self.label, "config": json.loads(base.config), "classes": classes,
                  "seeds_per_side": per_side, "trained_seeds": list(range(per_side)), "randomized_seeds": prep["seeds"],
                  "alpha": self.alpha, "n_perm": self.n_perm, "distances": list(DISTANCES),
                  "trained": {"success": float(trained_side.success.mean()), **self._realism(trained_side)},
                  "null": self._test(trained, "null"), "stages": stages, "verdict": verdict}
        return result, {"label": self.label, "per_side": per_side, "dists": pool}


def stage_name(plan, key) -> str:
    """The name of the first stage of `plan` that randomizes the modules `key`: "cascading fc2"."""
    return next(f"{variant} {name}" for variant, name, mods in plan if tuple(sorted(mods)) == tuple(key))


def run_stages(checks: list, preps: list, quiet: bool = False) -> list:
    """`stage` for every randomization of every check (with its `prepare` output), as one
    queue: in the processes of the first check's `workers` (one thread each; small AM
    batches use two threads poorly and two processes well), else in this process. One
    queue for several checks keeps both processes busy to the end, where a pool per check
    leaves one idle whenever a check has an odd number of stages. One progress bar for the
    queue, labelled with the method and the stage last finished. Returns, per check, the
    randomized explanations in its `todo` order."""
    tasks = [(c, key) for c, prep in enumerate(preps) for key in prep["todo"]]
    workers = min(checks[0].workers, len(tasks)) if tasks else 1
    args = [(c, list(key), preps[c]["classes"], preps[c]["seeds"]) for c, key in tasks]
    bar = tqdm(total=len(tasks), disable=quiet, unit="stage", desc="randomization")
    done = [None] * len(tasks)

    def finished(i, result):
        done[i] = result
        c, key = tasks[i]
        bar.set_description(f"{checks[c].label}: {stage_name(checks[c].plan, key)}")
        bar.update()

    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # `spawn`: a fork would inherit the parent's OpenMP pool. Each process gets the checks once.
        with ProcessPoolExecutor(max_workers=workers, initializer=_worker_init, initargs=(checks,),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_worker_stage, *a): i for i, a in enumerate(args)}
            for f in as_completed(futures):
                finished(futures[f], f.result())
    else:
        for i, (c, *rest) in enumerate(args):
            finished(i, checks[c].stage(*rest))
    bar.close()
    out = [[] for _ in checks]
    for (c, _), result in zip(tasks, done):
        out[c].append(result)
    return out


_WORKER_CHECKS = None


def _worker_init(checks) -> None:
    global _WORKER_CHECKS
    torch.set_num_threads(1)
    _WORKER_CHECKS = checks


def _worker_stage(c, mods, classes, seeds):
    return _WORKER_CHECKS[c].stage(mods, classes, seeds)


def run_methods(model, methods, classes, seeds, evaluator, flows, train_set, autoencoder=None, variants=VARIANTS,
                references=None, quiet: bool = False, trained: dict | None = None, **kw) -> SanityResult:
    """`SanityCheck.run` for each method, with the stages of all methods in one queue.

    Args:
        model: The trained classifier.
        methods: The AM methods to check.
        classes: Target classes.
        seeds: Seeds per class on each side (`side_seeds`).
        evaluator: A PointNet for the features.
        flows: The trained model's flows.
        train_set: The training data, to recompute the flows of randomized models.
        autoencoder: The autoencoder of "ae-latent" (given to that method only).
        variants: "cascading", "independent" or both.
        references: Real clouds per class for the realism columns, or None.
        quiet: No progress bar.
        trained: {method: explanations of the trained model already made}, reused where
            they match.
        **kw: Other keyword arguments of `SanityCheck` (steps, lr, workers, alpha, ...).

    Returns:
        A `SanityResult` with each method's result, in the order of `methods`.
    """
    checks = [SanityCheck(model, evaluator, flows=flows, train_set=train_set, method=method,
                          autoencoder=autoencoder if method == "ae-latent" else None, variants=variants,
                          references=references, quiet=quiet, **kw) for method in methods]
    preps = [check.prepare(classes, seeds, trained=(trained or {}).get(check.method)) for check in checks]
    done = [check.summarize(prep, measured) for check, prep, measured in zip(checks, preps,
                                                                              run_stages(checks, preps, quiet))]
    return SanityResult([r for r, _ in done], pools=[p for _, p in done])


def weakest_stage(result: dict) -> dict:
    """The stage of a method's result with the smallest effect: the nearest to unchanged."""
    return min(result["stages"], key=lambda s: s["effect"])


#: The trade-off's reference methods (no flow weight): their points sit beside FlowAM's curve.
TRADEOFF_REFERENCES = ("regularized", "ae-latent")


def tradeoff(model, evaluator, flows, train_set, classes, seeds, flow_weights, references: dict,
             class_refs: dict | None = None, autoencoder=None, baselines=TRADEOFF_REFERENCES, variants=VARIANTS,
             quiet: bool = False, trained=(), runner=None, **kw) -> SanityResult:
    """Perceptibility against faithfulness as the flow weight varies (docs/design.md, "Faithfulness").

    For each weight of `flow_weights`, the randomization check of FlowAM at that weight, and of
    each method of `baselines` once (flow_weight None). Each point is that check's result (as
    `SanityCheck.run` gives it: each stage's test and the verdict, i.e. faithfulness) with the
    trained model's success and mean Chamfer distance to real samples of the target class
    (`class_refs`, default `references`; perceptibility, lower is better) and its weakest
    stage's effect (`weakest_stage`). Points that optimize one objective under two names
    (FlowAM at weight 0 is regularized AM, bit for bit) run once.

    Args:
        model: The trained classifier.
        evaluator: A PointNet for the features.
        flows: The trained model's flows.
        train_set: The training data, to recompute the flows of randomized models.
        classes: Target classes.
        seeds: Seeds per class on each side (`side_seeds`).
        flow_weights: FlowAM's flow weights, each >= 0.
        references: Real clouds per class for the realism columns.
        class_refs: Real clouds per class for the perceptibility; None takes `references`.
        autoencoder: The autoencoder of "ae-latent".
        baselines: Reference methods, each checked once: "vanilla", "regularized", "ae-latent"
            or "random".
        variants: "cascading", "independent" or both.
        quiet: No progress bar.
        trained: Explanations of the trained model already made (any methods and configs;
            those that match a point's are reused).
        runner: Runs the stages of the checks, as `run_stages(checks, preps, quiet)` does
            (which it defaults to); the study passes one that runs them as resumable tasks.
        **kw: Keyword arguments of `SanityCheck` shared by every point (steps, lr, alpha, ...;
            not flow_weight).

    Returns:
        A `SanityResult` of every point, FlowAM's first, with `tradeoff` set: {"classes",
        "seeds_per_side", "points" (FlowAM's), "references" (the baselines')}.

    Raises:
        ValueError: No or negative flow weights, flow_weight in kw, or an unknown reference
            method.
    """
    if "flow_weight" in kw:
        raise ValueError("tradeoff sets the flow weight itself: pass the weights as flow_weights=")
    weights = [float(w) for w in flow_weights]
    if not weights or any(not w >= 0 for w in weights):
        raise ValueError(f"flow_weights must be a non-empty list of weights >= 0, got {list(flow_weights)}")
    unknown = set(baselines) - {"vanilla", "regularized", "ae-latent", "random"}
    if unknown:
        raise ValueError(f"unknown reference methods {sorted(unknown)}; choose from vanilla, regularized, ae-latent, "
                         "random")
    class_refs = references if class_refs is None else class_refs
    trained = list(trained.values()) if isinstance(trained, dict) else list(trained)
    shared = {}  # randomized models' flows, the same at every weight
    runs = [("flowam", w) for w in dict.fromkeys(weights)] + [(m, None) for m in baselines]
    checks = [SanityCheck(model, evaluator, flows=flows, train_set=train_set, method=method,
                          autoencoder=autoencoder if method == "ae-latent" else None, variants=variants,
                          references=references, quiet=quiet, flow_cache=shared,
                          **({} if weight is None else {"flow_weight": weight}), **kw) for method, weight in runs]
    # One check per objective; the checks to run share one queue of stages.
    source = {}
    for i, check in enumerate(checks):
        source.setdefault(check.config.objective_key(), i)
    todo = list(source.values())
    preps = {i: checks[i].prepare(classes, seeds, trained=checks[i].known(trained)) for i in todo}
    measured = (runner or run_stages)([checks[i] for i in todo], [preps[i] for i in todo], quiet)
    done = {i: checks[i].summarize(preps[i], m) for i, m in zip(todo, measured)}
    results, pools, points = [], [], []
    for i, ((method, weight), check) in enumerate(zip(runs, checks)):
        src = source[check.config.objective_key()]
        result, pool = done[src]
        if src != i:
            result = dict(result, method=method, label=check.label, config=json.loads(check.am_config))
            pool = dict(pool, label=check.label)
        base = preps[src]["base"].select(preps[src]["classes"], list(range(preps[src]["per_side"])))
        weakest = weakest_stage(result)
        results.append(result)
        pools.append(pool)
        points.append({"method": method, "label": check.label, "flow_weight": weight,
                       "success": result["trained"]["success"],
                       "chamfer_to_class": float(metrics.chamfer_to_class(base.points, base.classes, class_refs).mean()),
                       "weakest_stage": weakest["stage"], "weakest_effect": weakest["effect"],
                       "weakest_effect_ci": weakest["effect_ci"],
                       "stages_changed": sum(s["changed"] for s in result["stages"]), "stages": len(result["stages"]),
                       "passes": result["verdict"]["passes"]})
    traded = {"classes": results[0]["classes"], "seeds_per_side": results[0]["seeds_per_side"],
              "points": [p for p in points if p["method"] == "flowam"],
              "references": [p for p in points if p["method"] != "flowam"]}
    return SanityResult(results, pools=pools, tradeoff=traded)
