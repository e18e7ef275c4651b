"""Trainable modules that sit beside a frozen SAM."""

from .plm import ImageContext, PromptLearningModule
from .pmm import PointMatchingModule, sample_point_features

__all__ = ["ImageContext", "PointMatchingModule", "PromptLearningModule", "sample_point_features"]
