"""Shared fixtures: a tiny SAM (real 256-wide prompt encoder and decoder), images, a loopback Hub."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

# Keep huggingface_hub away from the user's cache and token; set before it is imported.
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="samplm-tests-hf-home-")
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.pop("HF_TOKEN", None)

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from hub_server import LoopbackHub

from samplm import AdapterConfig, PromptAdapter
from samplm.base import build_small_vit_sam

TINY_IMAGE_SIZE = 128


@pytest.fixture(autouse=True)
def idle_machine(monkeypatch):
    """Every test sees an idle machine (1-minute load 0): the per-stage thread choice and the busy hint
    (``samplm.utils.threads``) then do not depend on what else runs on the test machine, and one-line
    error checks stay one line. ``tests/test_threads.py`` sets its own load figures."""
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))


@pytest.fixture(scope="session")
def tiny_sam():
    """Tiny SAM: 128 px input, 8 x 8 x 256 image embedding, 32 x 32 low-res masks."""
    torch.set_num_threads(2)
    return build_small_vit_sam(image_size=TINY_IMAGE_SIZE, encoder_dim=32, encoder_depth=1, seed=0)


@pytest.fixture(scope="session")
def other_sam():
    """A tiny SAM with different weights (another 'checkpoint')."""
    return build_small_vit_sam(image_size=TINY_IMAGE_SIZE, encoder_dim=32, encoder_depth=1, seed=1)


@pytest.fixture(scope="session")
def sam():
    """samplm's own tiny base with its shipped weights (``build_sam("samplm_tiny")``)."""
    from samplm.base import build_sam

    return build_sam("samplm_tiny")


@pytest.fixture()
def one_thread():
    """One torch thread for the test: small tensors only pay for more (badly so on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def image() -> np.ndarray:
    """A 90 x 120 RGB uint8 image (not square, so coordinate transforms matter)."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, size=(90, 120, 3), dtype=np.uint8)
    img[20:60, 30:90] = (200, 40, 40)
    return img


def make_adapter(task: str = "task", seed: int = 0, **config_kwargs) -> PromptAdapter:
    """An adapter with random (non-identity) weights, as if trained."""
    generator = torch.Generator().manual_seed(seed)
    adapter = PromptAdapter(AdapterConfig(task=task, **config_kwargs))
    with torch.no_grad():
        for param in adapter.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
        adapter.plm.norm_out.weight.fill_(1.0)
        adapter.plm.mask_mix.add_(torch.eye(3))  # a trained mix stays near the identity
        adapter.plm.score_readout.copy_(
            torch.randn(adapter.plm.score_readout.shape, generator=generator) * 0.05
        )
        adapter.plm.score_readout_bias.copy_(torch.randn(4, generator=generator) * 0.05)
        adapter.plm.mask_bias.copy_(torch.randn(4, generator=generator) * 0.3)
    return adapter


@pytest.fixture()
def adapter_factory():
    return make_adapter


@pytest.fixture(scope="session")
def rect_task(tmp_path_factory, tiny_sam):
    """``(train set, val set)``: six images with a bright rectangle each (the instance), a third of the
    images held out, embeddings cached, 12 contour points per target."""
    from samplm.cache.embeddings import EmbeddingCache
    from samplm.data import read_mask_folder
    from samplm.train.training_set import TrainingSet

    root = write_rect_dataset(tmp_path_factory.mktemp("rect_task"))
    dataset = read_mask_folder(root / "images", root / "masks")
    cache = EmbeddingCache.for_model(root / "cache", tiny_sam)
    cache.build(tiny_sam, dataset.image_paths(), progress=False)
    parts = dataset.split(0.34, seed=0)
    return tuple(TrainingSet(part, cache, tiny_sam, num_points=12, progress=False) for part in parts)


@pytest.fixture(scope="session")
def hub():
    server = LoopbackHub().start()
    yield server
    server.stop()


@pytest.fixture()
def hub_env(hub, monkeypatch, tmp_path):
    """Point samplm at the loopback Hub (``HF_ENDPOINT``, read at call time), no local adapters."""
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("SAMPLM_ADAPTERS_DIR", str(tmp_path / "no-local-adapters"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("SAMPLM_HUB_NAMESPACE", raising=False)
    return hub


def write_rect_dataset(root: Path, count: int = 6, size: tuple[int, int] = (72, 96), categories=("object",)):
    """Images with one bright rectangle each and its mask, in the ``masks`` layout
    (``images/<category>/<i>.png`` + ``masks/<category>/<i>.png`` when several categories)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    height, width = size
    for c, category in enumerate(categories):
        sub = Path(category) if len(categories) > 1 else Path()
        for folder in ("images", "masks"):
            (root / folder / sub).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
            mask = np.zeros((height, width), np.uint8)
            y, x = 8 + 3 * i + 2 * c, 10 + 5 * i
            mask[y : y + height * 2 // 5, x : x + width * 2 // 5] = 255
            image[mask > 0] = (220, 180, 40 + 60 * c)
            Image.fromarray(image).save(root / "images" / sub / f"{i}.png")
            Image.fromarray(mask).save(root / "masks" / sub / f"{i}.png")
    return root


def write_voc_plates(root: Path, count: int = 8) -> Path:
    """``count`` photo-like images with one light rectangle each, and VOC XML boxes for them."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for i in range(count):
        image = rng.integers(0, 120, (120, 160, 3), dtype=np.uint8)
        x0, y0 = int(rng.integers(10, 90)), int(rng.integers(10, 80))
        image[y0 : y0 + 20, x0 : x0 + 50] = 230
        Image.fromarray(image).save(root / "images" / f"car{i}.png")
        (root / "annotations" / f"car{i}.xml").write_text(
            f"<annotation><filename>car{i}.png</filename><size><width>160</width><height>120</height>"
            f"</size><object><name>licence</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
            f"<xmax>{x0 + 50}</xmax><ymax>{y0 + 20}</ymax></bndbox></object></annotation>"
        )
    return root
