"""ONNX export: the exported graphs, run with onnxruntime, against CustomSamPredictor in PyTorch."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from segment_anything.utils.onnx import SamOnnxModel

import samplm
from samplm import AdapterConfig, CustomSamPredictor, PromptAdapter
from samplm.cli import main
from samplm.errors import AdapterOutputError, ConfigError
from samplm.export.onnx import (
    INPUT_NAMES,
    OUTPUT_NAMES,
    PREPROCESSING_ADVICE,
    WEB_PLAIN_SAM_LABEL,
    export_encoder_onnx,
    export_onnx,
    quiet_export,
    write_web_bundle,
)
from samplm.utils.fingerprint import sam_fingerprint

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
    pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export"),
]

#: (H, W) of the test images; SamOnnxModel's own export is exact only at its dummy size (500 x 600).
SIZES = [(120, 160), (300, 200), (77, 301)]
DUMMY_SIZE = (500, 600)
TASK = "probe"


def _prompts(size: tuple[int, int]) -> dict[str, dict[str, np.ndarray]]:
    """Prompts in the original frame of an image of ``size`` (the mask prompt is added by the test)."""
    h, w = size
    return {
        "point": {"point_coords": np.array([[0.5 * w, 0.45 * h]]), "point_labels": np.array([1])},
        "points": {
            "point_coords": np.array([[0.5 * w, 0.45 * h], [0.1 * w, 0.9 * h]]),
            "point_labels": np.array([1, 0]),
        },
        "box": {"box": np.array([0.2 * w, 0.25 * h, 0.8 * w, 0.7 * h])},
    }


def _image(size: tuple[int, int]) -> np.ndarray:
    """A smooth background with a solid rectangle and a solid ellipse (what samplm_tiny segments)."""
    h, w = size
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([60 + 40 * xx / w, 70 + 30 * yy / h, 90 + 0 * xx], -1) + rng.normal(0, 4, (h, w, 1))
    img = img.clip(0, 255).astype(np.uint8)
    img[h // 4 : 7 * h // 10, w // 5 : 4 * w // 5] = (230, 200, 40)
    img[((yy - 0.8 * h) / (0.12 * h)) ** 2 + ((xx - 0.15 * w) / (0.1 * w)) ** 2 < 1] = (30, 160, 220)
    return img


def _session(path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _feeds(predictor, point_coords=None, point_labels=None, box=None, mask_input=None):
    """What a SAM ONNX client feeds: a box as two points labelled 2 and 3, else a (0, 0) padding point
    labelled -1; coordinates in the input frame."""
    coords, labels = [], []
    if point_coords is not None:
        coords.append(np.asarray(point_coords, dtype=np.float64))
        labels.append(np.asarray(point_labels, dtype=np.float64))
    if box is not None:
        coords.append(np.asarray(box, dtype=np.float64).reshape(2, 2))
        labels.append(np.array([2.0, 3.0]))
    else:
        coords.append(np.zeros((1, 2)))
        labels.append(np.array([-1.0]))
    coords = predictor.transform.apply_coords(np.concatenate(coords), predictor.original_size)
    h, w = predictor.model.prompt_encoder.image_embedding_size
    mask = np.zeros((1, 1, 4 * h, 4 * w)) if mask_input is None else np.asarray(mask_input)[None]
    return {
        "image_embeddings": predictor.features.cpu().numpy(),
        "point_coords": coords[None].astype(np.float32),
        "point_labels": np.concatenate(labels)[None].astype(np.float32),
        "mask_input": mask.astype(np.float32),
        "has_mask_input": np.array([0.0 if mask_input is None else 1.0], dtype=np.float32),
        "orig_im_size": np.array(predictor.original_size, dtype=np.float32),
    }


def _run(session, feeds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(masks M x H x W logits, iou M, low-res M x 4h x 4w)`` of the one prompt."""
    masks, iou, low_res = session.run(OUTPUT_NAMES, feeds)
    return masks[0], iou[0], low_res[0]


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _assert_close(got, ref, *, logit_tol: float = 1e-3, iou_tol: float = 1e-4) -> None:
    """``got`` (ONNX) equals ``ref`` (predictor, ``return_logits=True``) mask by mask."""
    (masks, iou, low_res), (ref_masks, ref_iou, ref_low) = got, ref
    assert masks.shape == ref_masks.shape and low_res.shape == ref_low.shape
    for m, r in zip(masks, ref_masks, strict=True):
        assert _mask_iou(m > 0, r > 0) >= 0.99
    assert np.abs(masks - ref_masks).max() < logit_tol
    assert np.abs(low_res - ref_low).max() < logit_tol
    np.testing.assert_allclose(iou, ref_iou, rtol=0, atol=iou_tol)


def _reference(predictor, prompt, multimask: bool):
    return predictor.predict(**prompt, multimask_output=multimask, return_logits=True)


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def adapter() -> PromptAdapter:
    """A fresh adapter (an identity) with its weights perturbed, as if trained."""
    generator = torch.Generator().manual_seed(0)
    adapter = PromptAdapter(AdapterConfig(task=TASK))
    with torch.no_grad():
        for param in adapter.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return adapter.eval()


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def adapter_onnx(sam, adapter, out_dir):
    return export_onnx(sam, out_dir / "adapter.onnx", adapter=adapter, model_type="samplm_tiny")


@pytest.fixture(scope="module")
def adapter_session(adapter_onnx):
    return _session(adapter_onnx)


@pytest.fixture(scope="module")
def plain_session(sam, out_dir):
    return _session(export_onnx(sam, out_dir / "plain.onnx"))


@pytest.fixture(scope="module")
def single_session(sam, adapter, out_dir):
    return _session(export_onnx(sam, out_dir / "single.onnx", adapter=adapter, return_single_mask=True))


@pytest.fixture(scope="module")
def original_session(sam, out_dir):
    """segment_anything's own SamOnnxModel export of the base (as scripts/export_onnx_model.py does)."""
    h, w = sam.prompt_encoder.image_embedding_size
    dim = sam.prompt_encoder.embed_dim
    dummy = (
        torch.randn(1, dim, h, w),
        torch.randint(0, int(sam.image_encoder.img_size), (1, 5, 2), dtype=torch.float),
        torch.randint(0, 4, (1, 5), dtype=torch.float),
        torch.randn(1, 1, 4 * h, 4 * w),
        torch.tensor([1.0]),
        torch.tensor(DUMMY_SIZE, dtype=torch.float),
    )
    path = out_dir / "original.onnx"
    with torch.no_grad():
        torch.onnx.export(
            SamOnnxModel(sam.eval(), return_single_mask=False),
            dummy,
            str(path),
            input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES,
            dynamic_axes={"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}},
            opset_version=17,
            do_constant_folding=True,
            dynamo=False,
        )
    return _session(path)


@pytest.fixture(scope="module")
def predictors(sam, adapter):
    """One CustomSamPredictor per image size, the adapter active."""
    out = {}
    for size in [*SIZES, DUMMY_SIZE]:
        predictor = CustomSamPredictor(sam)
        predictor.load_adapter(adapter)
        predictor.set_image(_image(size))
        out[size] = predictor
    return out


# ---------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", ["point", "points", "box", "point+mask"])
def test_adapter_graph_matches_predictor(adapter_session, predictors, size, kind):
    predictor = predictors[size]
    if kind == "point+mask":
        prompt = _prompts(size)["point"]
        _, scores, low_res = predictor.predict(**prompt, multimask_output=True)
        prompt = dict(prompt, mask_input=low_res[int(np.argmax(scores))][None])
    else:
        prompt = _prompts(size)[kind]
    masks, iou, low_res = _run(adapter_session, _feeds(predictor, **prompt))
    assert masks.shape == (4, *size)
    assert (masks[1:] > 0).mean(axis=(1, 2)).max() > 0.05  # (not only empty masks)
    _assert_close((masks[1:], iou[1:], low_res[1:]), _reference(predictor, prompt, True))
    _assert_close((masks[:1], iou[:1], low_res[:1]), _reference(predictor, prompt, False))
    # the adapter matters: plain SAM's logits are far from the adapter's (so the parity above means it)
    with predictor.disable_adapter():
        plain = _reference(predictor, prompt, True)[0]
    assert np.abs(plain - masks[1:]).max() > 0.05


# ---------------------------------------------------------------------------------- adapter off
def test_plain_graph_equals_samonnxmodel_at_its_dummy_size(plain_session, original_session, predictors):
    predictor = predictors[DUMMY_SIZE]
    for prompt in _prompts(DUMMY_SIZE).values():
        feeds = _feeds(predictor, **prompt)
        ours, theirs = _run(plain_session, feeds), _run(original_session, feeds)
        _assert_close(ours, theirs, logit_tol=1e-4, iou_tol=1e-5)
        with predictor.disable_adapter():
            _assert_close((ours[0][1:], ours[1][1:], ours[2][1:]), _reference(predictor, prompt, True))


@pytest.mark.parametrize("size", SIZES)
def test_plain_graph_is_exact_where_samonnxmodel_is_not(plain_session, original_session, predictors, size):
    predictor = predictors[size]
    for prompt in _prompts(size).values():
        feeds = _feeds(predictor, **prompt)
        ours, theirs = _run(plain_session, feeds), _run(original_session, feeds)
        with predictor.disable_adapter():
            ref = _reference(predictor, prompt, True)
        _assert_close((ours[0][1:], ours[1][1:], ours[2][1:]), ref)
        # SamOnnxModel crops to the dummy image's resized size (a traced constant): wrong masks here
        assert theirs[0].shape[1:] == size
        assert np.abs(theirs[0][1:] - ref[0]).max() > 0.1
        np.testing.assert_allclose(theirs[2], ours[2], atol=1e-4)  # (the decoder itself agrees)


# ---------------------------------------------------------------------------------- single mask
@pytest.mark.parametrize("size", SIZES)
def test_single_mask_one_click_is_best_of_three(single_session, predictors, size):
    predictor = predictors[size]
    prompt = _prompts(size)["point"]
    masks, iou, low_res = _run(single_session, _feeds(predictor, **prompt))
    assert masks.shape == (1, *size) and iou.shape == (1,)
    ref = _reference(predictor, prompt, True)
    best = slice(int(np.argmax(ref[1])), int(np.argmax(ref[1])) + 1)
    _assert_close((masks, iou, low_res), tuple(r[best] for r in ref))


@pytest.mark.parametrize("size", SIZES)
def test_single_mask_three_clicks_is_single_mask_output(single_session, predictors, size):
    predictor = predictors[size]
    h, w = size
    prompt = {
        "point_coords": np.array([[0.5 * w, 0.45 * h], [0.3 * w, 0.4 * h], [0.05 * w, 0.95 * h]]),
        "point_labels": np.array([1, 1, 0]),
    }
    got = _run(single_session, _feeds(predictor, **prompt))
    assert got[0].shape == (1, *size)
    _assert_close(got, _reference(predictor, prompt, False))


# ---------------------------------------------------------------------------------- metadata
def test_metadata(sam, adapter_onnx):
    meta = {p.key: p.value for p in onnx.load(str(adapter_onnx)).metadata_props}
    assert meta["samplm_adapter"] == TASK
    assert "samplm_adapter_fingerprint" in meta
    base = json.loads(meta["samplm_base"])
    assert base == {"model_type": "samplm_tiny", "fingerprint": sam_fingerprint(sam)}
    assert meta["samplm_version"] == samplm.__version__
    graph = onnx.load(str(adapter_onnx)).graph
    assert [i.name for i in graph.input] == INPUT_NAMES
    assert [o.name for o in graph.output] == OUTPUT_NAMES


# ---------------------------------------------------------------------------------- quantize
def test_quantized_is_small_and_close(sam, adapter, adapter_onnx, out_dir, predictors):
    path = export_onnx(sam, out_dir / "quantized.onnx", adapter=adapter, quantize=True)
    ratio = os.path.getsize(path) / os.path.getsize(adapter_onnx)
    assert ratio <= 1 / 3, f"quantized / fp32 size = {ratio:.3f}"
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["samplm_adapter"] == TASK
    # int8 weights move the boundaries a little and may flip near-empty masks: compare the mask a client
    # shows (the best by score) and the pixels of all three together
    session = _session(path)
    for size in SIZES:
        predictor = predictors[size]
        for kind in ("point", "box"):
            prompt = _prompts(size)[kind]
            masks = _run(session, _feeds(predictor, **prompt))[0][1:] > 0
            ref_logits, ref_iou, _ = _reference(predictor, prompt, True)
            ref = ref_logits > 0
            best = int(np.argmax(ref_iou))
            assert _mask_iou(masks[best], ref[best]) >= 0.9
            assert _mask_iou(masks, ref) >= 0.9


# ---------------------------------------------------------------------------------- encoder
def test_encoder_graph_matches_predictor_features(sam, out_dir, predictors):
    path = export_encoder_onnx(sam, out_dir / "encoder.onnx", model_type="samplm_tiny")
    session = _session(path)
    for size in SIZES[:2]:
        predictor = predictors[size]
        resized = predictor.transform.apply_image(_image(size))
        pixels = torch.as_tensor(resized).permute(2, 0, 1).contiguous()[None]
        with torch.no_grad():
            x = sam.preprocess(pixels).numpy().astype(np.float32)
        (features,) = session.run(None, {session.get_inputs()[0].name: x})
        ref = predictor.features.numpy()
        assert features.shape == ref.shape
        assert np.abs(features - ref).max() <= 1e-3 * np.abs(ref).max()
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["samplm_base"])["img_size"] == sam.image_encoder.img_size


# ---------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("export", [export_onnx, export_encoder_onnx])
def test_unsupported_opset(sam, out_dir, export):
    path = out_dir / f"opset7-{export.__name__}.onnx"
    with pytest.raises(ConfigError, match="--opset"):
        export(sam, path, opset=7)
    assert not path.exists()


def test_export_does_not_warn_about_traced_shape_checks(sam, adapter, out_dir):
    """The PLM's and SAM's shape checks become constants in the trace by design; the user sees no
    TracerWarning for them, and the filter ends with the export."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_onnx(sam, out_dir / "quiet.onnx", adapter=adapter, model_type="samplm_tiny")
        traced = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
        warnings.warn("after the export", torch.jit.TracerWarning, stacklevel=1)
    assert not traced
    assert [str(w.message) for w in caught][-1] == "after the export"


#: What an export printed before: torch's notes on tracing and indexing, onnxruntime's advice.
NOISE = ("aten::index", "TracerWarning", "pre-processing", "Converting a tensor to a Python")


def test_export_with_every_option_prints_none_of_its_notes(sam, adapter, out_dir, capfd, caplog):
    """``return_single_mask`` (torch's ``aten::index`` note), ``quantize`` (onnxruntime's pre-processing
    advice) and the encoder: no warning, log record or line on the terminal about them."""
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        export_onnx(sam, out_dir / "noisy.onnx", adapter=adapter, return_single_mask=True, quantize=True)
        export_encoder_onnx(sam, out_dir / "noisy-encoder.onnx")
    shown = [f"{w.category.__name__}: {w.message}" for w in caught]
    shown += [record.getMessage() for record in caplog.records]
    shown += capfd.readouterr()
    assert not [line for line in shown if any(note in line for note in NOISE)], shown


def test_quiet_export_drops_only_the_exports_notes(capfd, monkeypatch):
    """Other warnings and log records still reach the user, an error still propagates, and the filters
    end with the block; an unconfigured root logger stays unconfigured (onnxruntime logs through it)."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # a script that configured no logging
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match="a genuine error"), quiet_export():
            warnings.warn("traced", torch.jit.TracerWarning, stacklevel=1)
            warnings.warn("Exporting aten::index operator of advanced indexing", UserWarning, stacklevel=1)
            warnings.warn("a genuine warning", UserWarning, stacklevel=1)
            logging.warning(PREPROCESSING_ADVICE + ". Refer to example: https://example.invalid")
            logging.warning("a genuine log warning")
            raise RuntimeError("a genuine error")
        warnings.warn("Exporting aten::index operator after the export", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == [
        "a genuine warning",
        "Exporting aten::index operator after the export",
    ]
    err = capfd.readouterr().err
    assert "a genuine log warning" in err and "pre-processing" not in err
    assert root.handlers == [] and root.filters == []


def test_cli_export_prints_only_what_it_wrote(tmp_path):
    """``samplm export`` as a user runs it (default warning filters, logging unconfigured)."""
    out = tmp_path / "model.onnx"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONWARNINGS"}
    argv = ["export", "--model-type", "samplm_tiny", "--out", str(out), "--return-single-mask", "--quantize"]
    result = subprocess.run(
        [sys.executable, "-m", "samplm.cli", *argv],
        capture_output=True,
        text=True,
        env={**env, "OMP_NUM_THREADS": "1"},
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"wrote {out}")
    assert not any(note in result.stderr for note in (*NOISE, "WARNING")), result.stderr


# ---------------------------------------------------------------------------------- web bundle
def _overflowing(adapter: PromptAdapter) -> PromptAdapter:
    """A copy of ``adapter`` whose finite weights overflow: the decoder answers NaN / inf."""
    huge = PromptAdapter(AdapterConfig(task="huge"))
    huge.load_state_dict(adapter.state_dict())
    with torch.no_grad():
        huge.plm.norm_out.weight.fill_(3e38)
    return huge.eval()


def _files(root) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_web_bundle_file_names_never_come_from_labels(sam, adapter, tmp_path):
    """Labels (tasks, in ``samplm export --web``) are text on the page; graphs are numbered, so a label
    cannot write outside the folder, overwrite the encoder or replace plain SAM."""
    folder = tmp_path / "bundle" / "models"
    labels = ["../escaped", "encoder", "sam", str(tmp_path / "absolute")]
    write_web_bundle(sam, {"SAM": None, **dict.fromkeys(labels, adapter)}, folder, model_type="samplm_tiny")
    assert _files(tmp_path) == {"bundle", "bundle/models"} | {
        f"bundle/models/{name}"
        for name in ("models.json", "encoder.onnx", "sam.onnx", *(f"adapter-{i}.onnx" for i in range(1, 5)))
    }
    assert [i.name for i in onnx.load(str(folder / "encoder.onnx")).graph.input] == ["image"]
    manifest = json.loads((folder / "models.json").read_text())
    assert manifest["encoder"] == "encoder.onnx"
    assert [(a["name"], a["decoder"]) for a in manifest["adapters"]] == [
        ("SAM", "sam.onnx"),
        *((label, f"adapter-{i}.onnx") for i, label in enumerate(labels, 1)),
    ]
    meta = {p.key: p.value for p in onnx.load(str(folder / "sam.onnx")).metadata_props}
    assert meta["samplm_adapter"] == ""  # plain SAM's graph, not an adapter's


@pytest.mark.parametrize("task", ["sam", "encoder"])
def test_cli_web_bundle_keeps_plain_sam_and_the_encoder(adapter, tmp_path, capsys, task):
    named = PromptAdapter(AdapterConfig(task=task))
    named.load_state_dict(adapter.state_dict())
    named.save_pretrained(tmp_path / "adapter")
    folder = tmp_path / "models"
    argv = [
        "export",
        "--adapter",
        str(tmp_path / "adapter"),
        "--web",
        str(folder),
        "--model-type",
        "samplm_tiny",
    ]
    assert main(argv) == 0, capsys.readouterr().err
    manifest = json.loads((folder / "models.json").read_text())
    assert [(a["name"], a["decoder"]) for a in manifest["adapters"]] == [
        (WEB_PLAIN_SAM_LABEL, "sam.onnx"),
        (task, "adapter-1.onnx"),
    ]
    assert [i.name for i in onnx.load(str(folder / "encoder.onnx")).graph.input] == ["image"]
    meta = {p.key: p.value for p in onnx.load(str(folder / "adapter-1.onnx")).metadata_props}
    assert meta["samplm_adapter"] == task


def test_an_adapter_whose_outputs_overflow_is_not_exported(sam, adapter, tmp_path):
    huge = _overflowing(adapter)
    with pytest.raises(AdapterOutputError, match="adapter 'huge'.*NaN or infinite"):
        export_onnx(sam, tmp_path / "huge.onnx", adapter=huge)
    with pytest.raises(AdapterOutputError, match="adapter 'huge'"):
        write_web_bundle(sam, {"plain": None, "huge": huge}, tmp_path / "models")
    assert _files(tmp_path) == set()  # nothing written, not even the encoder or plain SAM


def test_cli_refuses_an_adapter_whose_outputs_overflow(adapter, tmp_path, capsys):
    _overflowing(adapter).save_pretrained(tmp_path / "huge")  # every weight finite: it saves and loads
    out = tmp_path / "huge.onnx"
    assert (
        main(
            ["export", "--adapter", str(tmp_path / "huge"), "--out", str(out), "--model-type", "samplm_tiny"]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("samplm: error: adapter 'huge'") and "\n" not in err
    assert not out.exists()


def _export_error(argv: list[str], capsys) -> str:
    """The one error line of ``samplm export ... --model-type samplm_tiny`` (exit status 2)."""
    assert main(["export", *argv, "--model-type", "samplm_tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("samplm: error:") and "\n" not in err, err
    return err


def test_out_and_encoder_naming_one_file_are_refused(tmp_path, capsys):
    same = tmp_path / "model.onnx"
    (tmp_path / "link.onnx").symlink_to(same)
    for encoder in (same, tmp_path / "sub" / ".." / "model.onnx", tmp_path / "link.onnx"):
        err = _export_error(["--out", str(same), "--encoder", str(encoder)], capsys)
        assert "--out and --encoder name the same file" in err
    assert not same.exists()


@pytest.mark.parametrize("flag", ["--out", "--encoder", "--web"])
def test_outputs_under_a_file_are_one_line_naming_the_flag(tmp_path, capsys, flag):
    (tmp_path / "file.txt").write_text("a file")
    under = str(tmp_path / "file.txt" / "x.onnx")
    argv = [flag, under] if flag != "--encoder" else ["--out", str(tmp_path / "m.onnx"), flag, under]
    err = _export_error(argv, capsys)
    assert f"{flag} {under} lies under" in err and "which is not a folder" in err
