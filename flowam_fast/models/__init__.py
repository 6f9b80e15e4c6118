"""Classifiers: PointNet and DGCNN with the reference implementations' parameter names,
checkpoint loading, and per-point activation access for FlowAM."""
from .activations import ActivationRecorder, default_layers, get_activations
from .checkpoint import CheckpointError, build_model, load_checkpoint, save_checkpoint
from .dgcnn import DGCNN
from .fast import plain_path
from .pointnet import PointNet

__all__ = ["PointNet", "DGCNN", "ActivationRecorder", "default_layers", "get_activations", "plain_path",
           "CheckpointError", "build_model", "load_checkpoint", "save_checkpoint"]
