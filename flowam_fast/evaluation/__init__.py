"""Evaluation of explanations: metrics (success, Chamfer, EMD, FID, m-IS), the evaluator
PointNet, the randomization sanity check as a calibrated permutation test, reports and
plots. Uses am and everything below it."""
from . import metrics
from .evaluator import load_evaluator, real_data
from .report import RealData, evaluate_sets, method_table, write_report
from .calibration import calibrate
from .sanity import SanityCheck, run_methods, tradeoff
from .sanity_report import SanityResult

__all__ = ["metrics", "load_evaluator", "real_data", "RealData", "evaluate_sets", "method_table", "write_report",
           "SanityCheck", "SanityResult", "run_methods", "tradeoff", "calibrate"]
