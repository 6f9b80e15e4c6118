"""Activation maximization: per-class activation flows, the batched engine and its search
spaces, the (class x seed) grid, the explanations store and its contact sheets, and the
autoencoder of the generative baseline. Uses ops, models and data; knows no evaluation."""
from .engine import METHODS, FlowAM, continuity_loss
from .explanations import Explanations
from .flows import Flows, compute_flows
from .grid import parse_classes, parse_seeds

__all__ = ["FlowAM", "METHODS", "continuity_loss", "Explanations", "Flows", "compute_flows", "parse_classes",
           "parse_seeds"]
