"""Procedural datasets: the banner task (objects with wholes and parts on procedural or photo backgrounds)."""

from .banners import make_banner_image, write_banner_dataset
from .drawing import PhotoBackgrounds, procedural_background
from .objects import SceneObject, paste_object

__all__ = [
    "PhotoBackgrounds",
    "SceneObject",
    "make_banner_image",
    "paste_object",
    "procedural_background",
    "write_banner_dataset",
]
