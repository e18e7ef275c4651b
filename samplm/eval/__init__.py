"""Evaluation: the paper's single-click protocol, metrics, the SAM-F baseline, sensitivity maps, reports."""

from .methods import Method
from .metrics import boundary_iou, coco_mask_ap, iou, mean_by_class
from .protocol import EvalResult, InstancePredictor, evaluate
from .run import run_evaluation, summary_line
from .samf import SamF, train_samf
from .sensitivity import SensitivityMap, sensitivity_map

__all__ = [
    "EvalResult",
    "InstancePredictor",
    "Method",
    "SamF",
    "SensitivityMap",
    "boundary_iou",
    "coco_mask_ap",
    "evaluate",
    "iou",
    "mean_by_class",
    "run_evaluation",
    "sensitivity_map",
    "summary_line",
    "train_samf",
]
