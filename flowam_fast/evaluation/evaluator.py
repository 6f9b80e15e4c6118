"""The evaluator PointNet of the metrics (FID, m-IS, sanity-check features) and the real test
data every explanation set is compared with. The evaluator is trained separately from the
explained model (EVALUATOR_CONFIG) and kept in a cache directory for the next run."""
from __future__ import annotations


def load_evaluator(data_dir, path=None, cache_dir=None, epochs: int | None = None, quiet: bool = False):
    """The evaluator PointNet: from `path`, else cache_dir/evaluator.pt, trained there first if missing."""
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
    """The test split of data_dir, prepared once for every explanation set (see report.RealData)."""
    from ..data import ModelNet40
    from .report import RealData

    test = ModelNet40(data_dir, "test", num_points=num_points)
    return RealData(test.points, test.labels, evaluator=evaluator, **kw)
