"""Procedural datasets: the banner task and the pretraining corpus of ``samplm_tiny``."""

from .banners import make_banner_image, write_banner_dataset
from .drawing import PhotoBackgrounds, procedural_background
from .objects import SceneObject, paste_object
from .scenes import make_scene

__all__ = [
    "PhotoBackgrounds",
    "SceneObject",
    "make_banner_image",
    "make_scene",
    "paste_object",
    "procedural_background",
    "write_banner_dataset",
]
