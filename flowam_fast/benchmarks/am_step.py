"""One activation-maximization step end to end (forward + backward to the input points), fast
path against the plain PyTorch path, on the full-width reference models in eval mode: DGCNN,
PointNet, and PointNet++ SSG and MSG at the public sizes (whose plain path is the public
algorithm: the B x S x N distances, the sort per centroid, the grouped tensor written out).

Two objectives, as `FlowAM.objective` computes them:
- logit: minus the target logit (plain AM);
- flowam: the full FlowAM objective (target logit, flow alignment on `model.flow_layers`,
  continuity with k = 3, the engine's default weights and alignment: the moments, so the fast
  path may hand the flow term a max-pooled layer's input and map, `ops.LinearActs`).
The plain path runs the model with `model.fast_path = False` and the objective's ops with
backend="torch", so the baseline is pure PyTorch.

Models have random weights with realistic BatchNorm statistics: the running mean and
variance come from a train-mode pass over random clouds, then are jittered, and a quarter of
the BN scales are negative (the fast path must turn those maxima into minima). The flows are
random too, on the scale of the real activations.

Quick mode (a smoke run) takes one small batch of small clouds per model (QUICK_CASES), with
the same checks and one timed run per path; PointNet++ runs there at the demo models' sizes
(`training.recipes.DEMO_CONFIGS`), as full-width MSG takes a minute per case on two cores.

On a GPU (--device cuda) the fast path runs the fused ops' "auto" backend (the CUDA kernels
where the extension has them, else Triton) against the plain path on the same GPU, at the
batch sizes a GPU takes (GPU_CASES); the memory column is then peak allocated GPU memory.

    flowam-fast bench --only am_step [--quick] [--threads N] [--device cuda]

The PointNet++ cases run in the pointnet2 suite (`flowam-fast bench --only pointnet2`), beside
its fused ops.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from .. import models, ops
from ..am.config import AMConfig
from ..am.engine import continuity_loss
from ..am.flows import Flows, neighbour_d2
from ..models import DGCNN, PointNet, PointNet2MSG, PointNet2SSG, get_activations, plain_path
from .common import compare, fused_backends, is_cuda, label

NUM_CLASSES = 40  # ModelNet40
NEGATIVE_BN = 0.25  # share of BatchNorm channels with a negative scale
# The reference models by name: the full-width constructor and the name rows carry.
MODELS = {
    "dgcnn": (lambda: DGCNN(NUM_CLASSES), "DGCNN (k=20, emb 1024)"),
    "pointnet": (lambda: PointNet(NUM_CLASSES, feature_transform=True), "PointNet (feature transform)"),
    "pointnet2_ssg": (lambda: PointNet2SSG(NUM_CLASSES), "PointNet++ SSG"),
    "pointnet2_msg": (lambda: PointNet2MSG(NUM_CLASSES), "PointNet++ MSG"),
    "pointnet2_ssg_demo": (lambda: _demo_model("pointnet2_ssg"), "PointNet++ SSG (demo sizes)"),
    "pointnet2_msg_demo": (lambda: _demo_model("pointnet2_msg"), "PointNet++ MSG (demo sizes)"),
}
# (arch, B, N): the reference batch sizes at N = 1024, smaller batches for the larger clouds.
CASES = [("dgcnn", 16, 1024), ("pointnet", 64, 1024), ("pointnet2_ssg", 16, 1024), ("pointnet2_msg", 16, 1024)]
QUICK_CASES = [("dgcnn", 2, 512), ("pointnet", 4, 512), ("pointnet2_ssg_demo", 2, 256), ("pointnet2_msg_demo", 2, 256)]
LARGE_CASES = [("dgcnn", 4, 2048), ("dgcnn", 4, 4096), ("pointnet", 16, 2048), ("pointnet", 16, 4096)]
GPU_CASES = [("dgcnn", 32, 1024), ("dgcnn", 8, 4096), ("pointnet", 128, 1024), ("pointnet2_ssg", 32, 1024),
             ("pointnet2_msg", 32, 1024)]
GPU_QUICK_CASES = [("dgcnn", 8, 1024), ("pointnet", 16, 1024), ("pointnet2_ssg", 4, 1024), ("pointnet2_msg", 4, 1024)]
OBJECTIVES = ("logit", "flowam")
LOGIT_RTOL = 1e-4
GRAD_MIN_COSINE = 0.999
# PointNet++'s layers build on no kNN graph of features, so in float64 its gradients are held
# closer. In float32 the plain path's distances (|a|^2 - 2ab + |b|^2, the public formula) may
# move a point across a ball's radius: a few clouds may then fall short of it.
POINTNET2_COSINE = 0.9999


def required_cosine(arch: str) -> float:
    """The input-gradient cosine both paths must reach on `arch` (a key of MODELS), per cloud."""
    return POINTNET2_COSINE if arch.startswith("pointnet2") else GRAD_MIN_COSINE


def _demo_model(arch: str) -> torch.nn.Module:
    """PointNet++ at the sizes of its demo recipe (width, centroids, radii, neighbours)."""
    from ..training.recipes import DEMO_CONFIGS

    config = DEMO_CONFIGS[arch]
    return models.build_model(arch, NUM_CLASSES, **{k: config[k] for k in ("width", "npoints", "radii", "nsamples")})


def build_model(arch: str, seed: int = 0) -> torch.nn.Module:
    """A full-width reference model (a key of MODELS: DGCNN k=20, emb 1024; PointNet with
    feature transform; PointNet++ SSG or MSG at the public sizes), random weights, realistic
    BatchNorm statistics, eval mode, frozen parameters."""
    torch.manual_seed(seed)
    model = MODELS[arch][0]()
    g = torch.Generator().manual_seed(seed + 1)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for bn in bns:
            c = bn.num_features
            sign = torch.where(torch.rand(c, generator=g) < NEGATIVE_BN, -1.0, 1.0)
            bn.weight.copy_(sign * (0.5 + torch.rand(c, generator=g)))
            bn.bias.copy_(0.1 * torch.randn(c, generator=g))
            bn.reset_running_stats()
            bn.momentum = None  # a cumulative average: one pass sets the batch statistics
        # Train-mode BN normalizes with the batch statistics, so every layer's statistics are
        # those of its real inputs (signs included) after this one pass.
        model.train()
        with plain_path(model):
            model(_clouds(8, 1024, seed + 2).transpose(1, 2))
        model.eval()
        for bn in bns:
            bn.momentum = 0.1
            bn.running_mean.add_(0.1 * bn.running_var.sqrt() * torch.randn(bn.num_features, generator=g))
            bn.running_var.mul_(torch.exp(0.2 * torch.randn(bn.num_features, generator=g)))
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _clouds(B: int, N: int, seed: int) -> torch.Tensor:
    """AM's initial clouds: uniform in [-0.5, 0.5]^3 (B, N, 3)."""
    return torch.rand(B, N, 3, generator=torch.Generator().manual_seed(seed)) - 0.5


@torch.no_grad()
def random_flows(model, seed: int = 0) -> Flows:
    """Random per-class flows on the scale of the model's activations: per layer, the channel
    means and stds over a probe batch, moved by noise per class."""
    x = _clouds(4, 1024, seed + 3)
    _, acts = get_activations(model, x.transpose(1, 2), list(model.flow_layers))
    g = torch.Generator().manual_seed(seed + 4)
    mean, std = {}, {}
    for layer, a in acts.items():
        m, s = a.mean(dim=(0, 2)), a.std(dim=(0, 2)) + 1e-2
        c = m.shape[0]
        mean[layer] = (m + 0.5 * s * torch.randn(NUM_CLASSES, c, generator=g)).contiguous()
        std[layer] = (s * (0.5 + torch.rand(NUM_CLASSES, c, generator=g))).contiguous()
    d2 = float(neighbour_d2(x, AMConfig.continuity_k).mean())
    return Flows(layers=list(model.flow_layers), mean=mean, std=std, count=torch.full((NUM_CLASSES,), 100),
                 lo=torch.full((3,), -1.0), hi=torch.full((3,), 1.0), d2_target=d2)


@dataclass
class Problem:
    model: torch.nn.Module
    flows: Flows
    x: torch.Tensor  # (B, N, 3)
    classes: torch.Tensor  # (B,)


def make_problem(arch: str, B: int, N: int, seed: int = 0, model=None, flows=None, device="cpu") -> Problem:
    """The problem's model, flows and clouds are built on the CPU (the same ones whatever the
    device), then moved to `device`."""
    model = build_model(arch, seed) if model is None else model
    flows = random_flows(model, seed) if flows is None else flows
    classes = torch.randint(0, NUM_CLASSES, (B,), generator=torch.Generator().manual_seed(seed + 5))
    return Problem(model.to(device), flows_to(flows, device), _clouds(B, N, seed + 6).to(device), classes.to(device))


def flows_to(flows: Flows, device) -> Flows:
    def move(d):
        return {k: v.to(device) for k, v in d.items()}

    return dataclasses.replace(flows, mean=move(flows.mean), std=move(flows.std), count=flows.count.to(device),
                               lo=flows.lo.to(device), hi=flows.hi.to(device))


def objective(problem: Problem, x: torch.Tensor, objective: str, backend: str):
    """Per-cloud loss (B,) and logits of the engine's objective (`FlowAM.objective`, with its
    default weights) for points x (B, N, 3). Written out rather than called through `FlowAM`,
    whose constructor probes the model with 16 points, fewer than DGCNN's k = 20."""
    model, flows, classes, cfg = problem.model, problem.flows, problem.classes, AMConfig()
    inp = x.transpose(1, 2)
    if objective == "logit":
        logits = model(inp)
        return -logits.gather(1, classes[:, None]).squeeze(1), logits
    logits, acts = get_activations(model, inp, flows.layers, linear=cfg.alignment == "moments")
    flow = torch.stack([ops.flow_align(acts[layer], classes, *flows.class_flow(layer), backend=backend)
                        for layer in flows.layers]).mean(0)
    cont = continuity_loss(x, cfg.continuity_k, flows.d2_target, backend=backend)
    target = logits.gather(1, classes[:, None]).squeeze(1)
    return -target + cfg.flow_weight * flow + cfg.continuity_weight * cont, logits


def am_step(problem: Problem, objective_name: str, fast: bool):
    """A callable running one AM step, returning (logits, per-cloud loss, gradient w.r.t. x).
    fast=False: the plain model path and the objective's ops on backend="torch"."""
    backend = "auto" if fast else "torch"

    def step():
        x = problem.x.clone().requires_grad_(True)
        old = problem.model.fast_path
        problem.model.fast_path = fast
        try:
            total, logits = objective(problem, x, objective_name, backend)
            (grad,) = torch.autograd.grad(total.sum(), x)
        finally:
            problem.model.fast_path = old
        return logits.detach(), total.detach(), grad

    return step


def agreement(fast, ref, rtol: float = LOGIT_RTOL, min_cosine: float = GRAD_MIN_COSINE) -> torch.Tensor:
    """Per cloud (B,) bool: logits and loss agree to `rtol` (relative to each one's largest
    magnitude in the batch) and the input gradients have cosine >= `min_cosine`."""
    ok = grad_cosine(fast[2], ref[2]) >= min_cosine
    for f, r in zip(fast[:2], ref[:2]):
        close = (f - r).abs() <= rtol * (r.abs() + r.abs().max())
        ok &= close.reshape(close.shape[0], -1).all(1)
    return ok


def grad_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.flatten(1).double(), b.flatten(1).double(), dim=1)


def check_float64(problem: Problem, objective_name: str, clouds: int, min_cosine: float = GRAD_MIN_COSINE) -> None:
    """Both paths on the first `clouds` clouds in float64 must agree to LOGIT_RTOL and
    `min_cosine` on every cloud. In float32 the two paths round differently, and DGCNN's
    kNN graphs then differ at near-ties (one swapped neighbour changes a max and moves the
    next layer's graph): a real, rare disagreement that float64 rounding cannot cause."""
    sub = Problem(problem.model, problem.flows, problem.x[:clouds].double(), problem.classes[:clouds])
    problem.model.double()  # float32 -> float64 -> float32 is exact, so .float() restores it
    try:
        ok = agreement(am_step(sub, objective_name, True)(), am_step(sub, objective_name, False)(),
                       min_cosine=min_cosine)
    finally:
        problem.model.float()
    assert bool(ok.all()), f"float64: {int((~ok).sum())} of {clouds} clouds disagree"


def float32_check(result: dict, min_cosine: float = GRAD_MIN_COSINE):
    """A check for `compare` on the timed float32 inputs, after `check_float64`: no gross
    disagreement on any cloud (logits and loss within 2e-2, gradient cosine >= 0.98: what a
    few near-tie neighbour swaps can cause, far from what a wrong batch, layer or sign
    gives). Stores "k/B", the clouds within LOGIT_RTOL and `min_cosine`, in result["strict"],
    and the smallest gradient cosine in result["min_cosine"]."""

    def check(fast, ref):
        loose = agreement(fast, ref, 2e-2, 0.98)
        assert bool(loose.all()), f"float32: {int((~loose).sum())} clouds disagree beyond 2e-2"
        strict = agreement(fast, ref, min_cosine=min_cosine)
        result["strict"] = f"{int(strict.sum())}/{strict.numel()}"
        result["min_cosine"] = float(grad_cosine(fast[2], ref[2]).min())

    return check


def dgcnn_step_flops(model: DGCNN, B: int, N: int) -> int:
    """FLOPs of one logit-only AM step of DGCNN on the decomposed (fast) algorithm, counting
    multiply-adds as 2 and only the matrix products (the gathers, maxima, BN and activations
    are memory-bound and not counted):

      forward  = sum_l 2 B N^2 D_l                    kNN distance GEMM of each EdgeConv input
                                                      (D_l = 3, 64, 64, 128)
               + sum_l 2 * 2 B N C_in,l C_out,l       the P and Q GEMMs of each EdgeConv
               + 2 B N C_cat E                        conv5 (C_cat = 512 -> E = 1024)
               + 2 B (2E H1 + H1 H2 + H2 K)           the head
      backward = the GEMM terms again (grad w.r.t. the GEMM input, same size as the forward;
                 the weights are frozen, so no weight gradients), but not the kNN term:
                 the graph's indices carry no gradient.

    So the step counts kNN + 2 x (P/Q + conv5 + head): 49 GFLOP at B=16, N=1024, 1.7 x the
    forward's 29 GFLOP (of which the kNN GEMMs are 30%, conv5 60%)."""
    # Each EdgeConv's Conv2d takes [x_j - x_i, x_i]: in_channels = 2 D_l.
    convs = [blk[0] for blk in (model.conv1, model.conv2, model.conv3, model.conv4)]
    knn = sum(2 * B * N * N * (conv.in_channels // 2) for conv in convs)
    pq = sum(2 * 2 * B * N * (conv.in_channels // 2) * conv.out_channels for conv in convs)
    conv5 = 2 * B * N * model.conv5[0].in_channels * model.conv5[0].out_channels
    head = 2 * B * sum(lin.in_features * lin.out_features for lin in (model.linear1, model.linear2, model.linear3))
    return knn + 2 * (pq + conv5 + head)


def rows(quick: bool = False, device="cpu", family=("dgcnn", "pointnet")):
    """Yields each case's row as it is measured (`common.compare`), after `check_float64`.
    family: the architectures whose cases run, by the first part of their MODELS key
    ("dgcnn", "pointnet", "pointnet2"); PointNet++'s are the pointnet2 suite's."""
    models = {}
    if is_cuda(device):
        # The models' ops take backend "auto": the first of these there is.
        cases, backend = (GPU_QUICK_CASES if quick else GPU_CASES), (fused_backends(device) + ["torch"])[0]
    else:
        cases, backend = (QUICK_CASES if quick else CASES + LARGE_CASES), "cpu"
    for arch, B, N in cases:
        if arch.split("_")[0] not in family:
            continue
        if arch not in models:
            model = build_model(arch)
            models[arch] = (model, random_flows(model))
        problem = make_problem(arch, B, N, model=models[arch][0], flows=models[arch][1], device=device)
        name, cosine = MODELS[arch][1], required_cosine(arch)
        for objective in OBJECTIVES:
            check_float64(problem, objective, clouds=min(B, max(1, 4096 // N)), min_cosine=cosine)
            f32 = {}
            row = compare(label(f"AM step {objective}, {name} (B={B} N={N})", backend, device),
                          am_step(problem, objective, True), am_step(problem, objective, False),
                          float32_check(f32, cosine), repeat=1 if quick else 3, device=device)
            row["ms per cloud fast / ref"] = f"{row['fast_ms'] / B:.1f} / {row['ref_ms'] / B:.1f}"
            row["float32 clouds within 1e-4"] = f32["strict"]
            row["float32 min grad cosine"] = f"{f32['min_cosine']:.6f}"
            if arch == "dgcnn" and objective == "logit":
                gflop = dgcnn_step_flops(problem.model, B, N) / 1e9
                row["GFLOP/s"] = f"{gflop / (row['fast_ms'] * 1e-3):.0f} ({gflop:.0f} GFLOP)"
            yield row
