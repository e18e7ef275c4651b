"""Embedding cache and SAM loading: same embeddings as SamPredictor, resumable, keyed by model."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from segment_anything import SamPredictor

from samplm.base import build_sam_without_image_encoder, load_state_dict
from samplm.cache.embeddings import EmbeddingCache, encoder_key, sam_encoder_key
from samplm.errors import DataError, MissingEmbeddingError, SamplmError
from samplm.utils.fingerprint import sam_fingerprint


@pytest.fixture()
def images(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate([(40, 60), (64, 48), (50, 50)]):
        path = tmp_path / "imgs" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_cached_embeddings_match_predictor(tmp_path, images, tiny_sam):
    cache = EmbeddingCache.for_model(tmp_path / "cache", tiny_sam)
    assert cache.build(tiny_sam, images, progress=False) == {"computed": 3, "reused": 0}
    predictor = SamPredictor(tiny_sam)
    for path in images:
        image = np.asarray(Image.open(path).convert("RGB"))
        predictor.set_image(image)
        entry = cache.get(path)
        assert entry.original_size == image.shape[:2]
        assert entry.input_size == tuple(predictor.input_size)
        assert entry.embedding.dtype == torch.float16
        torch.testing.assert_close(entry.embedding.float(), predictor.features, atol=2e-3, rtol=2e-3)
    assert (cache.directory / "model.json").is_file()


def test_build_resumes_after_interruption(tmp_path, images, tiny_sam):
    cache = EmbeddingCache.for_model(tmp_path / "cache", tiny_sam)

    missing = tmp_path / "gone.png"  # the run stops at the second image, as if killed there
    with pytest.raises(DataError):
        cache.build(tiny_sam, [images[0], missing, *images[1:]], progress=False)
    assert cache.missing(images) == [str(p) for p in images[1:]]
    assert not list(cache.directory.rglob("*.tmp"))
    assert cache.build(tiny_sam, images, progress=False) == {"computed": 2, "reused": 1}


def test_cache_is_keyed_by_model_and_content(tmp_path, images, tiny_sam, other_sam):
    root = tmp_path / "cache"
    cache = EmbeddingCache.for_model(root, tiny_sam)
    cache.build(tiny_sam, images[:1], progress=False)
    other = EmbeddingCache.for_model(root, other_sam)
    assert other.key != cache.key and not other.contains(images[0])
    with pytest.raises(ValueError, match="does not match"):
        cache.build(other_sam, images, progress=False)
    with pytest.raises(KeyError, match="samplm embed"):  # still a KeyError, as before
        cache.get(images[1])
    # same bytes under another name share the entry; changed bytes do not
    copy = images[0].parent / "copy.png"
    copy.write_bytes(images[0].read_bytes())
    assert EmbeddingCache.for_model(root, tiny_sam).contains(copy)
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(images[0])
    assert not EmbeddingCache.for_model(root, tiny_sam).contains(images[0])


def test_encoder_key_from_state_dict_equals_model(tiny_sam):
    state = tiny_sam.state_dict()
    key = encoder_key(
        state, image_size=128, pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375]
    )
    assert key == sam_encoder_key(tiny_sam)


def test_corrupted_entry_is_reported(tmp_path, images, tiny_sam):
    cache = EmbeddingCache.for_model(tmp_path / "cache", tiny_sam)
    cache.build(tiny_sam, images[:1], progress=False)
    entry = next(cache.directory.rglob("*.safetensors"))
    entry.write_bytes(entry.read_bytes()[:50])
    with pytest.raises(DataError, match="corrupted cache entry"):
        cache.get(images[0])


def test_sam_without_image_encoder_loads_only_decoder_weights(tmp_path):
    source = build_sam_without_image_encoder("vit_b")
    torch.nn.init.normal_(source.mask_decoder.iou_token.weight)
    state = dict(source.state_dict())
    state["image_encoder.patch_embed.proj.weight"] = torch.zeros(2, 2)  # ignored
    path = tmp_path / "ckpt.pth"
    torch.save(state, path)
    loaded = build_sam_without_image_encoder("vit_b", path)
    assert sam_fingerprint(loaded) == sam_fingerprint(source)
    with pytest.raises(RuntimeError, match="without its image encoder"):
        loaded.image_encoder(torch.zeros(1, 3, 8, 8))
    del state["mask_decoder.iou_token.weight"]
    torch.save(state, path)
    with pytest.raises(ValueError, match="lacks 1 decoder weights"):
        build_sam_without_image_encoder("vit_b", path)
    assert set(load_state_dict(path)) == set(state)


def test_sam_without_image_encoder_matches_registry_model():
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    full = sam_model_registry["vit_b"](checkpoint=None)
    decoder_only = build_sam_without_image_encoder("vit_b", state_dict=full.state_dict())
    assert sam_fingerprint(decoder_only) == sam_fingerprint(full)
    assert decoder_only.image_encoder.img_size == full.image_encoder.img_size == 1024
    assert decoder_only.prompt_encoder.image_embedding_size == full.prompt_encoder.image_embedding_size


def test_missing_embedding_error_names_the_image_and_the_fix(tmp_path, images, tiny_sam):
    cache = EmbeddingCache.for_model(tmp_path / "cache", tiny_sam)
    with pytest.raises(MissingEmbeddingError) as info:
        cache.get(images[0])
    error = info.value
    assert isinstance(error, DataError) and isinstance(error, SamplmError) and isinstance(error, KeyError)
    assert error.path == str(images[0]) and error.cache_dir == str(cache.directory)
    assert str(error).startswith(f"{images[0]}: no cached embedding in {cache.directory}")
    assert "run `samplm embed`" in str(error) and not str(error).startswith("'")  # not KeyError's repr


def _rewrite_entry(cache, embedding, metadata):
    """Replace the cache's only entry by ``embedding`` with ``metadata`` (as another writer would)."""
    entry = next(cache.directory.rglob("*.safetensors"))
    save_file({"embedding": embedding.contiguous()}, str(entry), metadata=metadata)
    return entry


def test_flipped_bytes_in_an_entry_are_reported_naming_the_image(tmp_path, images, tiny_sam):
    cache = EmbeddingCache.for_model(tmp_path / "cache", tiny_sam)
    cache.build(tiny_sam, images[:1], progress=False)
    entry = next(cache.directory.rglob("*.safetensors"))
    data = bytearray(entry.read_bytes())
    data[-8:-4] = bytes(b ^ 0x01 for b in data[-8:-4])  # low mantissa bits: still finite values
    entry.write_bytes(bytes(data))
    with pytest.raises(DataError) as info:
        cache.get(images[0])
    assert info.value.path == str(images[0]) and str(entry) in str(info.value)
    assert "checksum" in str(info.value) and "re-run `samplm embed`" in str(info.value)


def test_non_finite_entries_are_rejected_and_entries_without_checksum_still_read(tmp_path, images, tiny_sam):
    cache = EmbeddingCache.for_model(tmp_path / "cache", tiny_sam)
    cache.build(tiny_sam, images[:1], progress=False)
    good = cache.get(images[0])
    entry = next(cache.directory.rglob("*.safetensors"))
    with safe_open(str(entry), framework="pt") as handle:
        metadata = handle.metadata()
    assert len(metadata.pop("sha256")) == 64  # written with each entry
    _rewrite_entry(cache, good.embedding, metadata)  # an entry of an older samplm: no checksum
    torch.testing.assert_close(EmbeddingCache(cache.root, cache.key).get(images[0]).embedding, good.embedding)
    poisoned = good.embedding.clone()
    poisoned[0, 5, 1, 1] = float("nan")
    _rewrite_entry(cache, poisoned, metadata)
    with pytest.raises(DataError, match="NaN or infinite") as info:
        EmbeddingCache(cache.root, cache.key).get(images[0])
    assert info.value.path == str(images[0]) and "samplm embed" in str(info.value)
    digest = hashlib.sha256(poisoned.view(torch.uint8).numpy().tobytes()).hexdigest()
    _rewrite_entry(cache, poisoned, {**metadata, "sha256": digest})  # a matching checksum is not enough
    with pytest.raises(DataError, match="NaN or infinite"):
        EmbeddingCache(cache.root, cache.key).get(images[0])
