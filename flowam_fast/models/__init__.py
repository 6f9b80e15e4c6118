"""Classifiers: PointNet, DGCNN and PointNet++ (SSG, MSG) with the reference implementations'
parameter names, checkpoint loading, and per-point activation access for FlowAM."""
from .activations import ActivationRecorder, Tap, default_layers, get_activations
from .adapter import AdaptedClassifier, ClassifierOutputError, as_classifier, classify, layer_root
from .checkpoint import CheckpointError, build_model, checkpoint_meta, load_checkpoint, save_checkpoint
from .dgcnn import DGCNN
from .fast import plain_path
from .pointnet import PointNet
from .pointnet2 import PointNet2MSG, PointNet2SSG

__all__ = ["PointNet", "DGCNN", "PointNet2SSG", "PointNet2MSG", "ActivationRecorder", "Tap", "default_layers",
           "get_activations", "plain_path",
           "CheckpointError", "build_model", "checkpoint_meta", "load_checkpoint", "save_checkpoint",
           "as_classifier", "AdaptedClassifier", "ClassifierOutputError", "classify", "layer_root"]
