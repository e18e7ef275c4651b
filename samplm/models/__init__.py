"""SAM models provided by samplm."""

from .tiny import build_sam_tiny

__all__ = ["build_sam_tiny"]
