"""Resolution of adapter names against a real HTTP Hub served on loopback (no mocking)."""

from __future__ import annotations

import pytest
import torch

from samplm import AdapterNotFoundError, PromptAdapter
from samplm.constants import CONFIG_NAME, MODEL_CARD_NAME, WEIGHTS_NAME


def _same(a: PromptAdapter, b: PromptAdapter) -> bool:
    return all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_push_then_load_by_repo_id(hub_env, adapter_factory, tmp_path):
    adapter = adapter_factory("nose", seed=1)
    url = adapter.push_to_hub("acme/nose-adapter", token="hf_test")
    assert "/acme/nose-adapter/commit/" in url
    _oid, files = hub_env.repos["acme/nose-adapter"].commits[-1]
    assert set(files) == {CONFIG_NAME, WEIGHTS_NAME, MODEL_CARD_NAME}
    assert any("library_name: samplm" in card for card in hub_env.validated_cards)
    loaded = PromptAdapter.load("acme/nose-adapter", cache_dir=tmp_path / "cache")
    assert loaded.task == "nose" and _same(adapter, loaded)


def test_revision_pinning(hub_env, adapter_factory, tmp_path):
    first, second = adapter_factory("lips", seed=1), adapter_factory("lips", seed=2)
    first.push_to_hub("acme/lips")
    first_oid = hub_env.repos["acme/lips"].commits[-1][0]
    second.push_to_hub("acme/lips")
    cache = tmp_path / "cache"
    assert _same(PromptAdapter.load("acme/lips", cache_dir=cache), second)
    assert _same(PromptAdapter.load(f"acme/lips@{first_oid}", cache_dir=cache), first)
    assert _same(PromptAdapter.load("acme/lips", revision=first_oid, cache_dir=cache), first)


def test_short_name_uses_namespace_argument_then_env(hub_env, adapter_factory, tmp_path, monkeypatch):
    adapter = adapter_factory("brow", seed=4)
    hub_env.commit("samplm/brow", {})  # the default namespace exists but lacks the files
    adapter.push_to_hub("myorg/brow")
    cache = tmp_path / "cache"
    with pytest.raises(AdapterNotFoundError) as info:
        PromptAdapter.load("brow", cache_dir=cache)
    assert "samplm/brow" in str(info.value)
    assert _same(PromptAdapter.load("brow", namespace="myorg", cache_dir=cache), adapter)
    monkeypatch.setenv("SAMPLM_HUB_NAMESPACE", "myorg")
    assert _same(PromptAdapter.load("brow", cache_dir=cache), adapter)


def test_short_name_prefers_local_adapters_dir(hub_env, adapter_factory, tmp_path, monkeypatch):
    local = adapter_factory("ear", seed=5)
    local.save_pretrained(tmp_path / "adapters" / "ear")
    adapter_factory("ear", seed=6).push_to_hub("samplm/ear")
    monkeypatch.setenv("SAMPLM_ADAPTERS_DIR", str(tmp_path / "adapters"))
    assert _same(PromptAdapter.load("ear", cache_dir=tmp_path / "cache"), local)
    explicit = PromptAdapter.load("ear", adapters_dir=tmp_path / "adapters", cache_dir=tmp_path / "c2")
    assert _same(explicit, local)


def test_offline_uses_cache_only(hub_env, adapter_factory, tmp_path, monkeypatch):
    adapter = adapter_factory("skin", seed=7)
    adapter.push_to_hub("acme/skin")
    cache = tmp_path / "cache"
    PromptAdapter.load("acme/skin", cache_dir=cache)  # populate the cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(hub_env.requests)
    assert _same(PromptAdapter.load("acme/skin", cache_dir=cache), adapter)
    assert len(hub_env.requests) == before  # nothing was sent
    with pytest.raises(AdapterNotFoundError, match="offline"):
        PromptAdapter.load("acme/skin", cache_dir=tmp_path / "empty-cache")


def test_not_found_lists_every_place_tried(hub_env, tmp_path):
    with pytest.raises(AdapterNotFoundError) as info:
        PromptAdapter.load("nothing-here", cache_dir=tmp_path / "cache")
    tried = info.value.tried
    assert len(tried) == 3
    assert "local path nothing-here" in tried[0]
    assert "no-local-adapters" in tried[1]
    assert "hub samplm/nothing-here" in tried[2] and hub_env.endpoint in tried[2]
    assert isinstance(info.value, FileNotFoundError)


def test_missing_revision_and_missing_repo(hub_env, adapter_factory, tmp_path):
    adapter_factory("neck").push_to_hub("acme/neck")
    with pytest.raises(AdapterNotFoundError, match="RevisionNotFound|Revision"):
        PromptAdapter.load("acme/neck@" + "0" * 40, cache_dir=tmp_path / "c")
    with pytest.raises(AdapterNotFoundError, match="acme/absent"):
        PromptAdapter.load("acme/absent", cache_dir=tmp_path / "c")


def test_local_directory_missing_files_is_reported(tmp_path, hub_env):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / CONFIG_NAME).write_text("{}")
    with pytest.raises(AdapterNotFoundError, match="missing adapter_model.safetensors"):
        PromptAdapter.load(tmp_path / "half")


def test_push_rejects_bad_repo_id(adapter_factory, hub_env):
    with pytest.raises(ValueError, match="org/name"):
        adapter_factory().push_to_hub("not a repo")


# ---------------------------------------------------------------- malformed names (issue 13)


def test_names_with_a_trailing_newline_are_not_names(hub_env, adapter_factory, tmp_path):
    from samplm.adapter.hub import parse_repo_id
    from samplm.errors import AdapterNameError

    assert parse_repo_id("acme/nose\n") is None and parse_repo_id("acme/../x") is None
    assert parse_repo_id("acme/nose@feature/x") == ("acme/nose", "feature/x")
    with pytest.raises(AdapterNameError, match="revision"):
        parse_repo_id("acme/nose@main\n")
    before = len(hub_env.requests)
    for name in ("nose\n", "acme/nose\n"):
        with pytest.raises(AdapterNotFoundError, match="neither an existing path"):
            PromptAdapter.load(name, cache_dir=tmp_path / "c")
    assert len(hub_env.requests) == before  # nothing was sent to the Hub


def test_overlong_names_are_refused_clearly(hub_env, tmp_path):
    from samplm.errors import AdapterNameError, SamplmError

    with pytest.raises(AdapterNameError, match="5000 characters") as info:
        PromptAdapter.load("a" * 5000, cache_dir=tmp_path / "c")
    assert len(str(info.value)) < 300
    with pytest.raises(SamplmError) as info:  # a path component longer than the file system allows
        PromptAdapter.load("b" * 300, cache_dir=tmp_path / "c")
    assert isinstance(info.value, AdapterNotFoundError) and "too long" in str(info.value)


@pytest.mark.parametrize(
    "revision",
    ["../../etc", "a/../b", "a b", "main\n", "ma\x00in", "/main", "main/", "a//b", "a\\b", "x" * 300],
)
def test_malformed_revisions_never_reach_the_hub(hub_env, tmp_path, revision):
    from samplm.errors import AdapterNameError

    before = len(hub_env.requests)
    with pytest.raises(AdapterNameError, match="revision"):
        PromptAdapter.load(f"acme/nose@{revision}", cache_dir=tmp_path / "c")
    with pytest.raises(AdapterNameError, match="revision"):
        PromptAdapter.load("acme/nose", revision=revision, cache_dir=tmp_path / "c")
    assert len(hub_env.requests) == before


def test_push_validates_the_revision(adapter_factory, hub_env):
    from samplm.errors import AdapterNameError

    with pytest.raises(AdapterNameError, match="revision"):
        adapter_factory().push_to_hub("acme/x", revision="../main")


# ---------------------------------------------------------------- an unreachable Hub fails fast


@pytest.fixture()
def refusing_endpoint(monkeypatch, tmp_path):
    """``HF_ENDPOINT`` on a loopback port that refuses connections (bound, never listening)."""
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("SAMPLM_ADAPTERS_DIR", str(tmp_path / "no-local-adapters"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("SAMPLM_HUB_NAMESPACE", raising=False)
    yield endpoint
    sock.close()


def _load_timed(name: str, **kwargs) -> tuple[float, object]:
    import time

    start = time.perf_counter()
    try:
        return time.perf_counter() - start, PromptAdapter.load(name, **kwargs)
    except AdapterNotFoundError as exc:
        return time.perf_counter() - start, exc


def test_unreachable_hub_fails_fast_with_a_hint(refusing_endpoint, tmp_path):
    seconds, error = _load_timed("nose", cache_dir=tmp_path / "cache")
    assert isinstance(error, AdapterNotFoundError), error
    assert seconds < 10  # huggingface_hub's own retries took ~23 s
    message = str(error)
    assert len(error.tried) == 3 and f"hub samplm/nose at {refusing_endpoint}" in error.tried[2]
    assert "cannot reach the Hub" in error.tried[2] and "not in the local Hub cache" in error.tried[2]
    assert "HF_HUB_OFFLINE=1" in error.hint and "local path" in error.hint
    assert message.startswith("Could not find adapter 'nose'. Tried:\n") and message.endswith(error.hint)


def test_unreachable_hub_falls_back_to_the_cache(hub_env, adapter_factory, tmp_path, monkeypatch):
    adapter = adapter_factory("jaw", seed=8)
    adapter.push_to_hub("acme/jaw")
    cache = tmp_path / "cache"
    assert _same(PromptAdapter.load("acme/jaw", cache_dir=cache), adapter)
    import socket

    with socket.socket() as refusing:
        refusing.bind(("127.0.0.1", 0))
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{refusing.getsockname()[1]}")
        seconds, loaded = _load_timed("acme/jaw", cache_dir=cache)
    assert isinstance(loaded, PromptAdapter) and _same(loaded, adapter)
    assert seconds < 10


def test_silent_hub_times_out_after_the_etag_timeout(monkeypatch, tmp_path):
    """A Hub that accepts the connection and never answers: ``HF_HUB_ETAG_TIMEOUT`` bounds the wait."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # connections complete in the kernel's backlog; nothing ever answers
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
        monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
        monkeypatch.setenv("SAMPLM_ADAPTERS_DIR", str(tmp_path / "none"))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        seconds, error = _load_timed("acme/quiet", cache_dir=tmp_path / "cache")
    assert isinstance(error, AdapterNotFoundError) and "cannot reach the Hub" in str(error)
    assert "HF_HUB_OFFLINE=1" in str(error)
    assert seconds < 10
