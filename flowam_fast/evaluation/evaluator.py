"""The evaluator PointNet of the metrics (FID, m-IS, sanity-check features) and the real test
data every explanation set is compared with. The evaluator is trained separately from the
explained model (EVALUATOR_CONFIG) and kept in a cache directory for the next run."""
from __future__ import annotations


def load_evaluator(data_dir, path=None, cache_dir=None, epochs: int | None = None, quiet: bool = False):
    """Load the evaluator PointNet of the metrics, training it first if there is none yet.

    Args:
        data_dir: The dataset it is trained on, where it must be trained.
        path: A checkpoint to load; None takes cache_dir/evaluator.pt.
        cache_dir: Where a trained evaluator is kept for the next run.
        epochs: Training epochs; None takes the evaluator recipe's.
        quiet: No progress output while training.

    Returns:
        The evaluator, in eval mode.

    Raises:
        ValueError: Neither path nor cache_dir is given, or the checkpoint is not a PointNet
            (the FID features are the inputs of its fc1 and fc3).
    """
    from ..atomic import cached_file
    from ..models import load_checkpoint
    from ..training.recipes import train_evaluator

    path = cached_file(path, cache_dir, "evaluator.pt", lambda t: train_evaluator(data_dir, t, epochs=epochs, quiet=quiet),
                       f"evaluator PointNet on {data_dir}")
    model = load_checkpoint(path)
    if not (hasattr(model, "fc1") and hasattr(model, "fc3")):
        raise ValueError(f"{path}: the evaluator must be a PointNet (its fc1/fc3 inputs are the FID features)")
    return model


def real_data(data_dir, num_points: int, evaluator, **kw):
    """The test split of data_dir, prepared once for every explanation set.

    Args:
        data_dir: A dataset in the ModelNet40 HDF5 layout.
        num_points: Points per sample.
        evaluator: The evaluator PointNet, or None to leave out the metrics that need it.
        **kw: Further arguments of `RealData`.

    Returns:
        The real data, as a `RealData`.
    """
    from ..data import ModelNet40
    from .report import RealData

    test = ModelNet40(data_dir, "test", num_points=num_points)
    return RealData(test.points, test.labels, evaluator=evaluator, **kw)
