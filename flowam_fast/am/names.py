"""The names users choose among (AM methods, flow alignments, architectures) and the methods'
presets, free of torch so that the command line lists them in its help without importing the
engine."""
from __future__ import annotations

# The flow term's statistics, re-exported: the objectives define them.
from ..objectives.names import ALIGNMENTS, CHANNEL_PRIOR  # noqa: F401

#: "random" is the control of the randomization check: uniform clouds in the data bounds, seeded
#: by (class, seed), no optimization, so its explanations cannot depend on the model.
METHODS = ("flowam", "vanilla", "regularized", "ae-latent", "random")
#: The initial cloud of each job: uniform in a cube, normal, or on a sphere (`am.spaces.initial_points`).
INITS = ("uniform", "normal", "sphere")
#: method -> (flow_weight, continuity_weight, clamp) used where the caller leaves them None.
#: For ae-latent the clamp is to the autoencoder's latent range, not the data bounds.
PRESETS = {
    "flowam": (100.0, 1.0, True),
    "regularized": (0.0, 1.0, True),
    "vanilla": (0.0, 0.0, False),
    "ae-latent": (0.0, 0.0, True),
    "random": (0.0, 0.0, True),
}

#: The classifier architectures, by the names checkpoints and the command line use: the keys of
#: `flowam_fast.models.checkpoint.ARCHS`, listed here because that table holds the torch classes
#: (the tests check the two agree). The demo has a recipe for each (`training.DEMO_CONFIGS`).
ARCHITECTURES = ("pointnet", "dgcnn", "pointnet2_ssg", "pointnet2_msg")
#: Other names the demo takes for an architecture (`flowam-fast demo --model pointnet2`).
ARCHITECTURE_ALIASES = {"pointnet2": "pointnet2_ssg"}
#: The demo's classifiers: every architecture, and the aliases.
DEMO_MODELS = ARCHITECTURES + tuple(ARCHITECTURE_ALIASES)
#: The general engine's method (`flowam_fast.am.AM`): an objective of the user's, recorded in the
#: run's config by its text; not a preset, so not among METHODS.
GENERAL = "am"
