"""Sweeps over (model x method x class x seed), sharded, resumable, on this machine or a Ray
cluster (docs/design.md, "Sweeps"). Uses am, models and below."""
from .driver import run_sweep
from .spec import SpecError, SweepSpec, load_spec, parse_spec

__all__ = ["run_sweep", "load_spec", "parse_spec", "SweepSpec", "SpecError"]
