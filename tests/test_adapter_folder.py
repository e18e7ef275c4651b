"""``PromptAdapter`` owns its whole folder: config, weights, card and the optional prototype are saved,
loaded, pushed, downloaded and verified through it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from samplm import PromptAdapter
from samplm.adapter.prototype import TargetPrototype
from samplm.constants import CONFIG_NAME, MODEL_CARD_NAME, PROTOTYPE_NAME, WEIGHTS_NAME
from samplm.errors import PrototypeError


def _same(a: TargetPrototype | None, b: TargetPrototype) -> bool:
    """Same vector, mask count, encoder and task."""
    return (
        a is not None
        and torch.equal(a.vector, b.vector)
        and (a.num_masks, a.encoder, a.task)
        == (
            b.num_masks,
            b.encoder,
            b.task,
        )
    )


def _prototype(task: str = "nose", seed: int = 0) -> TargetPrototype:
    vector = F.normalize(torch.randn(256, generator=torch.Generator().manual_seed(seed)), dim=0)
    return TargetPrototype(vector, num_masks=3, encoder="enc-key", task=task)


def test_save_writes_the_prototype_and_load_reads_it_back(adapter_factory, tmp_path):
    adapter = adapter_factory("nose", seed=1)
    adapter.prototype = _prototype()
    adapter.save_pretrained(tmp_path / "nose")
    assert {p.name for p in (tmp_path / "nose").iterdir()} == {
        CONFIG_NAME,
        WEIGHTS_NAME,
        MODEL_CARD_NAME,
        PROTOTYPE_NAME,
    }
    loaded = PromptAdapter.load(tmp_path / "nose")
    assert _same(loaded.prototype, adapter.prototype)
    assert loaded.source is not None and str(tmp_path / "nose") in loaded.source


def test_an_adapter_without_a_prototype_loads_with_none_and_keeps_a_written_one(adapter_factory, tmp_path):
    adapter = adapter_factory("nose", seed=1)
    adapter.save_pretrained(tmp_path / "nose")
    assert PromptAdapter.load(tmp_path / "nose").prototype is None
    _prototype(seed=2).save(tmp_path / "nose")  # as `samplm fit-prototype --adapter` writes it
    adapter.save_pretrained(tmp_path / "nose")  # saving without a prototype leaves that file alone
    assert _same(PromptAdapter.load(tmp_path / "nose").prototype, _prototype(seed=2))


def test_a_broken_prototype_fails_the_load_naming_the_file(adapter_factory, tmp_path):
    adapter = adapter_factory("nose", seed=1)
    adapter.prototype = _prototype()
    adapter.save_pretrained(tmp_path / "nose")
    (tmp_path / "nose" / PROTOTYPE_NAME).write_bytes(b"not a safetensors file")
    with pytest.raises(PrototypeError, match=PROTOTYPE_NAME):
        PromptAdapter.load(tmp_path / "nose")


def test_push_uploads_the_prototype_and_load_downloads_it(hub_env, adapter_factory, tmp_path):
    adapter = adapter_factory("nose", seed=1)
    adapter.prototype = _prototype()
    adapter.push_to_hub("acme/nose-proto", token="hf_test")
    _oid, files = hub_env.repos["acme/nose-proto"].commits[-1]
    assert set(files) == {CONFIG_NAME, WEIGHTS_NAME, MODEL_CARD_NAME, PROTOTYPE_NAME}
    loaded = PromptAdapter.load("acme/nose-proto", cache_dir=tmp_path / "hf")
    assert _same(loaded.prototype, adapter.prototype)
    assert "acme/nose-proto" in loaded.source
