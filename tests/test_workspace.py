"""samplm.workspace: which SAM (with or without its image encoder) and which embedding cache a job uses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from samplm.base.loading import ImageEncoderPlaceholder
from samplm.data import read_mask_folder
from samplm.workspace import DEFAULT_CACHE_DIR, Workspace, build_full_sam, default_device


def _mask_folder(root: Path, count: int, size: tuple[int, int] = (48, 64), seed: int = 0):
    """``count`` images with one rectangle each, as a mask-folder dataset."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(count):
        mask = np.zeros(size, np.uint8)
        mask[8 + i : 30 + i, 10 : 40 + i] = 1
        image = rng.integers(0, 80, (*size, 3), dtype=np.uint8)
        image[mask > 0] = 220
        Image.fromarray(image).save(root / "images" / f"{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
    return read_mask_folder(root / "images", root / "masks")


def test_sam_checkpoints_are_required_and_small_bases_ship_weights(tmp_path):
    for model_type in ("vit_b", "vit_h"):
        with pytest.raises(ValueError, match=f"--checkpoint is required for --model-type {model_type}"):
            build_full_sam(model_type)
        with pytest.raises(ValueError, match="--checkpoint is required"):
            Workspace(model_type, cache_dir=tmp_path).model_and_cache([])
    assert not isinstance(build_full_sam("samplm_tiny").image_encoder, ImageEncoderPlaceholder)


def test_cache_root_and_device_defaults(tmp_path):
    assert Workspace("samplm_tiny").cache_root == Path(DEFAULT_CACHE_DIR).expanduser()
    assert Workspace("samplm_tiny", cache_dir=tmp_path / "c").cache_root == tmp_path / "c"
    assert default_device("cpu:0") == "cpu:0"
    assert default_device() == ("cuda" if torch.cuda.is_available() else "cpu")


def test_model_and_cache_embeds_missing_images_once(tmp_path, capsys):
    first, second = _mask_folder(tmp_path / "a", 3), _mask_folder(tmp_path / "b", 2, seed=1)
    workspace = Workspace("samplm_tiny", cache_dir=tmp_path / "cache", verbose=False)
    sam, cache = workspace.model_and_cache([first])
    assert capsys.readouterr().out == ""  # not verbose: silent
    assert cache.directory.parent == tmp_path / "cache"
    assert isinstance(sam.image_encoder, ImageEncoderPlaceholder)  # training reads only the cache
    with pytest.raises(RuntimeError, match="without its image encoder"):
        sam.image_encoder(torch.zeros(1, 3, 8, 8))
    verbose = Workspace("samplm_tiny", cache_dir=tmp_path / "cache")
    again, same_cache = verbose.model_and_cache([first, second])
    assert isinstance(again.image_encoder, ImageEncoderPlaceholder)
    printed = capsys.readouterr().out
    assert f"{first.source}: 0 embedded, 3 already cached ({cache.directory})" in printed
    assert f"{second.source}: 2 embedded, 0 already cached" in printed
    assert same_cache.directory == cache.directory
    assert not same_cache.missing(second.image_paths(), second.expected_sizes())
    path = second.image_paths()[0]
    assert same_cache.get(path, second.expected_sizes().get(str(path))).original_size == (48, 64)


@pytest.mark.slow
def test_vit_sam_is_built_without_its_image_encoder_once_everything_is_cached(tmp_path, capsys):
    """The encoder-free path of ``vit_*`` (a random ``vit_b`` checkpoint; about a minute on 2 CPU cores)."""
    from safetensors.torch import save_file
    from segment_anything import sam_model_registry

    checkpoint = tmp_path / "vit_b.safetensors"
    state = sam_model_registry["vit_b"](checkpoint=None).state_dict()
    save_file({k: v.half().contiguous() for k, v in state.items()}, str(checkpoint))
    dataset = _mask_folder(tmp_path / "data", 1, size=(32, 32))
    workspace = Workspace("vit_b", str(checkpoint), cache_dir=tmp_path / "cache")
    _, cache = workspace.model_and_cache([dataset])
    assert "1 embedded" in capsys.readouterr().out
    sam, again = workspace.model_and_cache([dataset])
    assert "the image encoder is not loaded" in capsys.readouterr().out and again.key == cache.key
    assert isinstance(sam.image_encoder, ImageEncoderPlaceholder)
    assert sum(p.numel() for p in sam.parameters()) < 5_000_000  # prompt encoder and mask decoder only
