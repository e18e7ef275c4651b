"""Adapter files: round trip, model card, strict loading of broken files, atomic saves, fingerprints."""

from __future__ import annotations

import json
import pickle
import shutil
import warnings

import pytest
import safetensors.torch
import torch
import yaml

import samplm.adapter.prompt_adapter as adapter_module
from samplm import (
    AdapterCompatibilityError,
    AdapterConfig,
    AdapterFormatError,
    FingerprintMismatchWarning,
    PMMConfig,
    PromptAdapter,
    sam_fingerprint,
)
from samplm.constants import CONFIG_NAME, MODEL_CARD_NAME, WEIGHTS_NAME


def _assert_same_weights(a: PromptAdapter, b: PromptAdapter) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_round_trip_directory(tmp_path, adapter_factory, tiny_sam):
    adapter = adapter_factory("nose", metadata={"metrics": {"val_miou": 0.81}})
    adapter.bind_base_model(tiny_sam, model_type="samplm_tiny")
    adapter.save_pretrained(tmp_path / "nose")
    assert sorted(p.name for p in (tmp_path / "nose").iterdir()) == sorted(
        [CONFIG_NAME, WEIGHTS_NAME, MODEL_CARD_NAME]
    )
    loaded = PromptAdapter.load(tmp_path / "nose")
    _assert_same_weights(adapter, loaded)
    assert loaded.config.task == "nose"
    assert loaded.config.base_model.fingerprint == sam_fingerprint(tiny_sam)
    assert loaded.config.metadata == {"metrics": {"val_miou": 0.81}}
    assert loaded.config.samplm_version is not None
    assert not loaded.training


def test_round_trip_with_pmm(tmp_path, adapter_factory):
    adapter = adapter_factory("banner", pmm=PMMConfig(num_points=16))
    adapter.save_pretrained(tmp_path / "a")
    loaded = PromptAdapter.from_pretrained(str(tmp_path / "a"))
    assert loaded.pmm is not None and loaded.pmm.num_points == 16
    _assert_same_weights(adapter, loaded)
    assert any(key.startswith("pmm.") for key in loaded.state_dict())


def test_config_file_content(tmp_path, adapter_factory):
    adapter_factory("plate", prompt_types=["point", "box"]).save_pretrained(tmp_path)
    data = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert data["format"] == "samplm-adapter"
    assert data["format_version"] == 5
    assert data["task"] == "plate"
    assert data["plm"] == {
        "embed_dim": 256,
        "num_heads": 8,
        "mlp_dim": 2048,
        "attention_downsample_rate": 1,
        "activation": "relu",
    }
    assert data["pmm"] is None
    assert data["prompt_types"] == ["point", "box"]
    assert len(data["weights_sha256"]) == 64


def test_model_card_front_matter(tmp_path, adapter_factory, tiny_sam):
    adapter = adapter_factory("nose", metadata={"metrics": {"miou": 0.5}})
    adapter.bind_base_model(tiny_sam, model_type="vit_h")
    adapter.save_pretrained(tmp_path)
    card = (tmp_path / MODEL_CARD_NAME).read_text()
    assert card.startswith("---\n")
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "samplm"
    assert front["pipeline_tag"] == "mask-generation"
    assert "nose" in front["tags"]
    assert front["base_model_type"] == "vit_h"
    assert front["metrics"] == ["miou"]
    assert "| miou | 0.5 |" in card
    assert 'sam_model_registry["vit_h"](checkpoint="...")' in card


def test_model_card_of_an_adapter_for_a_built_in_base_builds_it_without_a_checkpoint(
    tmp_path, adapter_factory, tiny_sam
):
    adapter = adapter_factory("plate")
    adapter.bind_base_model(tiny_sam, model_type="samplm_lite")
    adapter.save_pretrained(tmp_path)
    card = (tmp_path / MODEL_CARD_NAME).read_text()
    assert 'sam = build_sam("samplm_lite")' in card and "sam_model_registry" not in card


def test_lone_safetensors_file_uses_embedded_config(tmp_path, adapter_factory):
    adapter = adapter_factory("eyes")
    adapter.save_pretrained(tmp_path / "dir")
    lone = tmp_path / "eyes.safetensors"
    shutil.copy(tmp_path / "dir" / WEIGHTS_NAME, lone)
    loaded = PromptAdapter.load(lone)
    assert loaded.config.task == "eyes"
    _assert_same_weights(adapter, loaded)


def test_fresh_adapter_from_config_variants(tmp_path):
    fresh = PromptAdapter(AdapterConfig(task="x"))
    assert fresh.num_parameters("plm") == 1_578_752 + 4 + 9
    assert fresh.num_parameters("pmm") == 0
    from_dict = PromptAdapter.from_config({"task": "y", "plm": {"num_heads": 4}})
    assert from_dict.config.plm.num_heads == 4 and from_dict.task == "y"
    fresh.save_pretrained(tmp_path)
    from_file = PromptAdapter.from_config(tmp_path / CONFIG_NAME)
    assert from_file.task == "x"
    assert torch.count_nonzero(from_file.plm.norm_out.weight) == 0  # fresh, not loaded weights


def test_adapter_is_a_container_not_a_callable_module():
    """Prompts go through ``adapter.plm`` (``decode_prompts``); the adapter itself has no ``forward``."""
    adapter = PromptAdapter(AdapterConfig(task="x"))
    assert "forward" not in vars(PromptAdapter)
    tokens, image = torch.randn(1, 2, 256), torch.randn(1, 256, 4, 4)
    with pytest.raises(NotImplementedError):
        adapter(tokens, image, image)
    torch.testing.assert_close(adapter.plm(tokens, image, image), tokens)  # a fresh PLM is the identity


# ---------------------------------------------------------------- broken files


@pytest.fixture()
def saved(tmp_path, adapter_factory):
    directory = tmp_path / "adapter"
    adapter_factory("nose").save_pretrained(directory)
    return directory


def _rewrite_config(directory, **changes):
    path = directory / CONFIG_NAME
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def _expect_format_error(path, file_name, match):
    with pytest.raises(AdapterFormatError, match=match) as info:
        PromptAdapter.load(path)
    assert file_name in str(info.value)
    return info.value


def test_truncated_weights(saved):
    weights = saved / WEIGHTS_NAME
    weights.write_bytes(weights.read_bytes()[:-1000])
    _expect_format_error(saved, WEIGHTS_NAME, "corrupted, truncated")
    _rewrite_config(saved, weights_sha256=None)  # without a recorded digest the header check still fails
    _expect_format_error(saved, WEIGHTS_NAME, "not a readable safetensors file")


def test_flipped_byte_is_detected_by_checksum(saved):
    weights = saved / WEIGHTS_NAME
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    _expect_format_error(saved, WEIGHTS_NAME, "SHA-256")


def _write_weights(directory, tensors, **config_changes):
    safetensors.torch.save_file(tensors, str(directory / WEIGHTS_NAME))
    _rewrite_config(directory, weights_sha256=None, **config_changes)


def test_nan_weights(saved):
    tensors = safetensors.torch.load_file(str(saved / WEIGHTS_NAME))
    tensors["plm.mlp.lin1.weight"][0, 0] = float("nan")
    _write_weights(saved, tensors)
    _expect_format_error(saved, WEIGHTS_NAME, "NaN")


def test_missing_and_unknown_keys(saved):
    tensors = safetensors.torch.load_file(str(saved / WEIGHTS_NAME))
    del tensors["plm.mlp.lin1.weight"]
    tensors["plm.extra"] = torch.zeros(3)
    _write_weights(saved, tensors)
    error = _expect_format_error(saved, WEIGHTS_NAME, "missing keys")
    assert "plm.extra" in str(error)


def test_a_format_1_file_without_score_offsets_loads_with_zero_offsets(saved):
    tensors = safetensors.torch.load_file(str(saved / WEIGHTS_NAME))
    assert tensors["plm.score_offset"].abs().sum() > 0  # the factory's adapter has offsets
    del tensors["plm.score_offset"], tensors["plm.mask_mix"]
    del tensors["plm.score_readout"], tensors["plm.score_readout_bias"], tensors["plm.mask_bias"]
    _write_weights(saved, tensors)  # still declared format 5: the offsets are required
    error = _expect_format_error(saved, WEIGHTS_NAME, "missing keys")
    assert "plm.score_offset" in str(error)
    _write_weights(saved, tensors, format_version=1)
    adapter = PromptAdapter.load(saved)
    assert torch.equal(adapter.plm.score_offset.detach(), torch.zeros(4))
    assert torch.equal(adapter.plm.mask_mix.detach(), torch.eye(3))
    assert not adapter.plm.score_readout.any() and not adapter.plm.mask_bias.any()
    assert torch.equal(adapter.plm.mlp.lin1.weight, tensors["plm.mlp.lin1.weight"])


def test_a_format_2_file_without_mask_mix_loads_with_the_identity_mix(saved):
    tensors = safetensors.torch.load_file(str(saved / WEIGHTS_NAME))
    del tensors["plm.mask_mix"], tensors["plm.score_readout"], tensors["plm.score_readout_bias"]
    del tensors["plm.mask_bias"]
    _write_weights(saved, tensors)  # declared format 5: the mix is required
    assert "plm.mask_mix" in str(_expect_format_error(saved, WEIGHTS_NAME, "missing keys"))
    _write_weights(saved, tensors, format_version=2)
    adapter = PromptAdapter.load(saved)
    assert torch.equal(adapter.plm.mask_mix.detach(), torch.eye(3))
    assert torch.equal(adapter.plm.score_offset.detach(), tensors["plm.score_offset"])


def test_a_format_3_file_without_score_readout_loads_with_a_zero_readout(saved):
    tensors = safetensors.torch.load_file(str(saved / WEIGHTS_NAME))
    assert tensors["plm.score_readout"].abs().sum() > 0  # the factory's adapter has a readout
    del tensors["plm.score_readout"], tensors["plm.score_readout_bias"], tensors["plm.mask_bias"]
    _write_weights(saved, tensors)  # declared format 5: the readout is required
    assert "plm.score_readout" in str(_expect_format_error(saved, WEIGHTS_NAME, "missing keys"))
    _write_weights(saved, tensors, format_version=3)
    adapter = PromptAdapter.load(saved)
    assert not adapter.plm.score_readout.any() and not adapter.plm.score_readout_bias.any()
    assert torch.equal(adapter.plm.mask_mix.detach(), tensors["plm.mask_mix"])


def test_a_format_4_file_without_mask_bias_loads_with_a_zero_bias(saved):
    tensors = safetensors.torch.load_file(str(saved / WEIGHTS_NAME))
    assert tensors["plm.mask_bias"].abs().sum() > 0  # the factory's adapter has a mask bias
    del tensors["plm.mask_bias"]
    _write_weights(saved, tensors)  # declared format 5: the bias is required
    assert "plm.mask_bias" in str(_expect_format_error(saved, WEIGHTS_NAME, "missing keys"))
    _write_weights(saved, tensors, format_version=4)
    adapter = PromptAdapter.load(saved)
    assert not adapter.plm.mask_bias.any()
    assert torch.equal(adapter.plm.score_readout, tensors["plm.score_readout"])


def test_wrong_shape(saved):
    tensors = safetensors.torch.load_file(str(saved / WEIGHTS_NAME))
    tensors["plm.mlp.lin1.weight"] = torch.zeros(1024, 256)
    _write_weights(saved, tensors)
    _expect_format_error(saved, WEIGHTS_NAME, "shape")


def test_weights_that_do_not_match_config(saved):
    _rewrite_config(saved, plm={"mlp_dim": 1024}, weights_sha256=None)
    _expect_format_error(saved, WEIGHTS_NAME, "shape")


def test_integer_weights(saved):
    tensors = safetensors.torch.load_file(str(saved / WEIGHTS_NAME))
    tensors["plm.norm_out.bias"] = torch.zeros(256, dtype=torch.int32)
    _write_weights(saved, tensors)
    _expect_format_error(saved, WEIGHTS_NAME, "non-float")


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"format_version": 99}, "format_version 99 is not supported"),
        ({"format": "peft"}, "'format' must be"),
        ({"surprise": 1}, "unknown key"),
        ({"plm": {"num_heads": "eight"}}, "must be an integer"),
        ({"plm": {"typo_dim": 3}}, "unknown key"),
        ({"prompt_types": ["scribble"]}, "prompt_types"),
    ],
)
def test_bad_config(saved, changes, match):
    _rewrite_config(saved, **changes)
    _expect_format_error(saved, CONFIG_NAME, match)


def test_config_not_json(saved):
    (saved / CONFIG_NAME).write_text("{not json")
    _expect_format_error(saved, CONFIG_NAME, "not valid JSON")


def test_pickle_is_never_loaded(saved, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (marker.touch, ())

    (saved / WEIGHTS_NAME).write_bytes(pickle.dumps({"plm.x": Payload()}))
    _rewrite_config(saved, weights_sha256=None)
    _expect_format_error(saved, WEIGHTS_NAME, "not a readable safetensors file")
    assert not marker.exists()


# ---------------------------------------------------------------- atomic saves


def test_failed_save_leaves_previous_adapter_intact(saved, adapter_factory, monkeypatch):
    before = {p.name: p.read_bytes() for p in saved.iterdir()}

    def failing_save_file(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(adapter_module, "save_file", failing_save_file)
    with pytest.raises(OSError, match="disk full"):
        adapter_factory("other", seed=3).save_pretrained(saved)
    assert {p.name: p.read_bytes() for p in saved.iterdir()} == before  # no temp files, no changes
    PromptAdapter.load(saved)


def test_saved_files_get_ordinary_permissions_not_the_temp_files_private_mode(tmp_path, adapter_factory):
    import os
    import stat

    umask = os.umask(0o022)
    try:
        adapter_factory().save_pretrained(tmp_path / "a")
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "a").iterdir()}
        assert modes and set(modes.values()) == {0o644}, modes
        weights = tmp_path / "a" / WEIGHTS_NAME
        weights.chmod(0o640)  # a later save keeps the permissions the owner chose
        adapter_factory(seed=5).save_pretrained(tmp_path / "a")
        assert stat.S_IMODE(weights.stat().st_mode) == 0o640
    finally:
        os.umask(umask)


def test_save_over_file_is_refused(tmp_path, adapter_factory):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(NotADirectoryError):
        adapter_factory().save_pretrained(target)


# ---------------------------------------------------------------- fingerprints


def test_fingerprint_is_stable_and_discriminates(tiny_sam, other_sam):
    fp = sam_fingerprint(tiny_sam)
    assert fp.startswith("sha256:") and len(fp) == 7 + 64
    assert sam_fingerprint(tiny_sam) == fp
    assert sam_fingerprint(other_sam) != fp
    import copy

    assert sam_fingerprint(copy.deepcopy(tiny_sam).half()) == fp  # same checkpoint in float16


def test_fingerprint_mismatch_warns_or_raises(tiny_sam, other_sam, adapter_factory):
    adapter = adapter_factory()
    adapter.bind_base_model(tiny_sam)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert adapter.check_compatible(tiny_sam) is True
    with pytest.warns(FingerprintMismatchWarning, match="fingerprint"):
        assert adapter.check_compatible(other_sam) is False
    with pytest.raises(AdapterCompatibilityError, match="fingerprint"):
        adapter.check_compatible(other_sam, strict=True)


def test_width_mismatch_is_an_error(tiny_sam):
    narrow = PromptAdapter(AdapterConfig(plm={"embed_dim": 128, "num_heads": 8}))
    with pytest.raises(AdapterCompatibilityError, match="embed_dim 128"):
        narrow.check_compatible(tiny_sam)


# ---------------------------------------------------------------- hyper-parameters (issue 13)


def test_inf_weights(saved):
    tensors = safetensors.torch.load_file(str(saved / WEIGHTS_NAME))
    tensors["plm.norm_out.weight"][3] = float("-inf")
    _write_weights(saved, tensors)
    _expect_format_error(saved, WEIGHTS_NAME, "NaN or infinite")


@pytest.mark.parametrize(
    ("section", "changes", "match"),
    [
        ("plm", {"mlp_dim": 1 << 20}, r"plm\.mlp_dim must be an integer in \[1, 8192\], got 1048576"),
        ("plm", {"num_heads": 0}, r"plm\.num_heads"),
        ("plm", {"attention_downsample_rate": 0}, r"plm\.attention_downsample_rate"),
        ("plm", {"embed_dim": -256}, r"plm\.embed_dim"),
        ("plm", {"num_heads": 3}, r"plm\.num_heads=3 must divide"),
        ("plm", {"activation": "tanh"}, r"plm\.activation"),
        ("plm", {"num_heads": True}, r"plm\.num_heads must be an integer"),
        ("pmm", {"depth": 100}, r"pmm\.depth must be an integer in \[1, 32\]"),
        ("pmm", {"num_points": 100_000}, r"pmm\.num_points must be an integer in \[3, 1024\]"),
        ("pmm", {"num_heads": 0}, r"pmm\.num_heads"),
        ("pmm", {"hidden_dim": 100_000}, r"pmm\.hidden_dim"),
        ("pmm", {"dropout": 1.5}, r"pmm\.dropout must be a finite number in \[0, 1\]"),
        ("pmm", {"max_offset": -1.0}, r"pmm\.max_offset must be a finite number > 0"),
        ("pmm", {"max_offset": float("inf")}, r"pmm\.max_offset"),
    ],
)
def test_hyper_parameters_are_checked_before_any_module_is_built(saved, monkeypatch, section, changes, match):
    def refuse(**kwargs):
        raise AssertionError("a module was built from an invalid config")

    monkeypatch.setattr(adapter_module, "PromptLearningModule", refuse)
    monkeypatch.setattr(adapter_module, "PointMatchingModule", refuse)
    values = {"num_heads": 8, "num_points": 20} if section == "pmm" else {}
    _rewrite_config(saved, **{section: {**values, **changes}}, weights_sha256=None)
    error = _expect_format_error(saved, CONFIG_NAME, match)
    assert "\n" not in str(error)
    with pytest.raises(AdapterFormatError, match=match.split(" ")[0]):
        PromptAdapter.from_config({section: {**values, **changes}})
    with pytest.raises(ValueError, match=match.split(" ")[0]):
        AdapterConfig(**{section: {**values, **changes}})


def test_deeply_nested_json_is_a_format_error(saved):
    config = (saved / CONFIG_NAME).read_text()
    (saved / CONFIG_NAME).write_text("[" * 100_000 + "]" * 100_000)
    _expect_format_error(saved, CONFIG_NAME, "nested")
    (saved / CONFIG_NAME).write_text(config)
    _rewrite_config(saved, metadata=json.loads('{"a": ' * 200 + "1" + "}" * 200))
    _expect_format_error(saved, CONFIG_NAME, "metadata.*nested")


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"task": ""}, "task"),
        ({"prompt_types": "point"}, "prompt_types"),
        ({"base_model": {"model_type": 5}}, r"base_model\.model_type must be a string"),
        ({"samplm_version": ["1"]}, "samplm_version must be a string"),
        ({"plm": {1: 2}}, "unknown key"),
    ],
)
def test_other_config_fields_are_typed(saved, changes, match):
    _rewrite_config(saved, **changes)
    _expect_format_error(saved, CONFIG_NAME, match)
