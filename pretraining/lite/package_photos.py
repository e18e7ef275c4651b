"""General photos that installable packages ship, with their source and licence.

``samplm_lite`` learns from the Kaggle car photos plus these. The Python ones come with the ``pretrain``
extra (scikit-image, matplotlib); the Debian ones are read where their packages are installed
(``apt-get install mate-backgrounds plasma-workspace-wallpapers``) and skipped otherwise, so the corpus
log records which photos a run used. Only photographs are listed (no drawings or renders); none of
them ships with samplm.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MATE_NATURE = Path("/usr/share/backgrounds/mate/nature")
KDE_WALLPAPERS = Path("/usr/share/wallpapers")
MATE_PHOTOS = (
    "Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow",
    "LadyBird", "RainDrops", "Storm", "TwoWings", "Wood", "YellowFlower",
)  # fmt: skip
KDE_PHOTOS = (
    "BytheWater",
    "ColdRipple",
    "DarkestHour",
    "EveningGlow",
    "FallenLeaf",
    "Grey",
    "Kite",
    "OneStandsOut",
    "Path",
    "summer_1am",
)  # fmt: skip  (each read at 1920 x 1080)
SKIMAGE_PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png")


@dataclass(frozen=True)
class PackagePhoto:
    """One photo file and where it comes from."""

    path: Path
    package: str
    licence: str

    def as_log(self) -> dict:
        return {"path": str(self.path), "package": self.package, "licence": self.licence}


def _python_photos() -> list[PackagePhoto]:
    import matplotlib
    import skimage

    data = Path(skimage.__file__).parent / "data"
    out = [
        PackagePhoto(data / n, "scikit-image (PyPI)", "see skimage/data/README.txt") for n in SKIMAGE_PHOTOS
    ]
    sample = Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"
    out.append(PackagePhoto(sample, "matplotlib (PyPI)", "public domain (US Navy photo)"))
    return out


def _debian_photos() -> list[PackagePhoto]:
    mate = [
        PackagePhoto(MATE_NATURE / f"{n}.jpg", "mate-backgrounds (Debian)", "GPL-2+") for n in MATE_PHOTOS
    ]
    kde = [
        PackagePhoto(
            KDE_WALLPAPERS / n / "contents" / "images" / "1920x1080.jpg",
            "plasma-workspace-wallpapers (Debian)",
            "LGPL-3 (the wallpaper's metadata.json); GPL-2+ in Debian's copyright file",
        )
        for n in KDE_PHOTOS
    ]
    return mate + kde


def package_photos(debian: bool = True) -> list[PackagePhoto]:
    """The listed photos that are installed here (Python packages first, then Debian's with ``debian``)."""
    listed = _python_photos() + (_debian_photos() if debian else [])
    return [p for p in listed if p.path.is_file()]
