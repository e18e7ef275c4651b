"""Trainable modules that sit beside a frozen SAM."""

from .plm import ImageContext, PromptLearningModule
from .pmm import PointMatchingModule

__all__ = ["ImageContext", "PointMatchingModule", "PromptLearningModule"]
