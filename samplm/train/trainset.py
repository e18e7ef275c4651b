"""Old import path of :mod:`samplm.trainset` (kept for one release)."""

from ..trainset import TrainingItem, TrainingSet

__all__ = ["TrainingItem", "TrainingSet"]
