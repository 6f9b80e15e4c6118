"""Training of the classifiers: the loop (`train`, `accuracy`, `augment`) and the recipes of
the demo model and the evaluator."""
from .loop import accuracy, augment, train
from .recipes import (DEMO_CONFIG, DEMO_CONFIGS, DGCNN_DEMO_CONFIG, EVALUATOR_CONFIG, demo_config, train_demo_model,
                       train_evaluator, train_from_config)

__all__ = ["train", "accuracy", "augment", "DEMO_CONFIG", "DEMO_CONFIGS", "DGCNN_DEMO_CONFIG", "EVALUATOR_CONFIG", "demo_config", "train_from_config",
           "train_demo_model", "train_evaluator"]
