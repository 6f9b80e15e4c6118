"""The faithfulness study's defaults, free of torch so that `flowam-fast study --help` shows
them without importing the study (pipelines/study.py)."""
from __future__ import annotations

#: FlowAM's flow weights in the study by default: 0 (regularized AM), 10 and 100 (the paper's).
STUDY_WEIGHTS = (0.0, 10.0, 100.0)
#: The reference methods beside FlowAM: the generative baseline and the model-independent control.
STUDY_REFERENCES = ("ae-latent", "random")
#: Classes (the first ones by index), seeds a side and AM steps by default: every class of the
#: demo data with 8 seeds a side is what fits 30 minutes on a 2-core CPU with the demo PointNet
#: (benchmarks/results/study_pointnet/sanity.md records the time of its run).
STUDY_CLASSES, STUDY_SEEDS, STUDY_STEPS = 12, 8, 300
#: What a study reads from a demo's output directory.
DEMO_FILES = {"model": "model.pt", "flows": "flows.h5", "data": "data", "evaluator": "evaluator.pt",
              "autoencoder": "autoencoder.pt"}
