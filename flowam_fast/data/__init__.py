"""Datasets: the ModelNet40 HDF5 layout and the procedural shapes written in it."""
from .modelnet40 import DatasetError, DatasetNotFoundError, ModelNet40, normalize_unit_sphere
from .shapes import CLASSES as SHAPE_CLASSES
from .shapes import generate_shapes

__all__ = ["ModelNet40", "DatasetError", "DatasetNotFoundError", "normalize_unit_sphere",
           "generate_shapes", "SHAPE_CLASSES"]
