"""Images, names and click-free runs: text read from files reaches the terminal escaped; images that are
too large, of extreme aspect ratio or replaced under the same name are skipped or segmented again, never a
crash; adapter names, prototype files and adapter weights are accepted or refused with one line.

Property tests (hypothesis) feed random adapter names, prototype files and image shapes."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from samplm import CustomSamPredictor, PromptAdapter
from samplm.adapter.prototype import TargetPrototype
from samplm.cli import main
from samplm.constants import CONFIG_NAME, PROTOTYPE_HEADER_KEY, PROTOTYPE_NAME, WEIGHTS_NAME
from samplm.data.images import DEFAULT_MAX_PIXELS, load_image
from samplm.errors import (
    AdapterFormatError,
    AdapterNameError,
    DataError,
    FingerprintMismatchWarning,
    ImageError,
    PromptError,
    PrototypeError,
    SamplmError,
)
from samplm.segment.generator import AdapterMaskGenerator
from samplm.segment.jobs import SegmentTask, segment_images
from samplm.utils.checks import first_line, printable
from samplm.utils.files import sha256_file

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
ESC = "\x1b[2J"  # "clear the screen", as a hostile file name or config string would carry it
TINY = ["--model-type", "samplm_tiny", "--device", "cpu"]


def _save(path: Path, shape: tuple[int, ...], seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)).save(path)
    return path


def _grid_task(predictor: CustomSamPredictor) -> list[SegmentTask]:
    """One base-decoder task clicking a 2 x 2 grid (cheap; no adapter, no prototype)."""
    generator = AdapterMaskGenerator(
        predictor, prompts="grid", points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0
    )
    return [SegmentTask("thing", None, generator)]


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("samplm: error: ") and "\n" not in err and "\x1b" not in err, err
    return err


# ---------------------------------------------------------------- 1. text from files, escaped


def test_printable_escapes_control_characters_and_keeps_letters():
    assert printable("plain name é.png") == "plain name é.png"
    assert printable(f"a{ESC}b\nc\td") == "a\\x1b[2Jb\\nc\\td"
    assert printable("bad\udcffname") == "bad\\udcffname"  # an undecodable byte of a file name
    assert printable(printable(f"x{ESC}\n")) == printable(f"x{ESC}\n")  # escaping twice changes nothing
    assert printable(123) == "123"


def test_errors_naming_a_file_stay_one_printable_line(tmp_path):
    error = DataError(tmp_path / f"cut\nhere{ESC}.png", "cannot be read")
    assert str(error).isprintable() and "cut\\nhere\\x1b[2J.png" in str(error)
    assert error.path == str(tmp_path / f"cut\nhere{ESC}.png")  # the attribute keeps the real name
    assert first_line(PrototypeError(f"a\nb{ESC}", "bad")) == "a\\nb\\x1b[2J: bad"
    assert first_line(ValueError(f"x{ESC}y\nz")) == "x\\x1b[2Jy"


def test_a_fingerprint_with_escapes_is_warned_escaped(tiny_sam, adapter_factory):
    adapter = adapter_factory("nose")
    adapter.config.base_model.fingerprint = f"sha256:{ESC}\nforged"
    adapter.config.base_model.model_type = f"vit{ESC}"
    with pytest.warns(FingerprintMismatchWarning) as caught:
        CustomSamPredictor(tiny_sam).load_adapter(adapter)
    message = str(caught[0].message)
    assert message.isprintable() and "sha256:\\x1b[2J\\nforged" in message and "vit\\x1b[2J" in message


def test_segment_prints_odd_image_names_escaped(capsys, tmp_path):
    images = tmp_path / f"photos{ESC}"
    _save(images / "0.png", (40, 50, 3))
    (images / f"bad{ESC}\nname.png").write_bytes(b"not a png")
    reference = [str(images / "0.png"), "--reference-mask", str(_save(tmp_path / "m.png", (40, 50)))]
    argv = ["segment", "--images", str(images), "--out", str(tmp_path / "out"), "--reference-image"]
    argv += [*reference, "--prompts", "grid", "--points-per-side", "2", "--no-overlays", *TINY]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "\x1b" not in captured.err + captured.out
    skipped = [line for line in captured.err.splitlines() if "skipped an image" in line]
    assert len(skipped) == 1 and "bad\\x1b[2J\\nname.png" in skipped[0] and "cannot be read" in skipped[0]
    assert "none\\x1b[2J" in _error(capsys, [*argv[:2], str(tmp_path / f"none{ESC}"), *argv[3:]])


# ---------------------------------------------------------------- 2. images above the pixel limit


def test_pixel_limit_is_checked_from_the_header(tmp_path, monkeypatch):
    path = _save(tmp_path / "big.png", (40, 60, 3))
    assert load_image(path, max_pixels=2400).shape == (40, 60, 3)  # at the limit: read

    def no_decoding(self):
        raise AssertionError("pixels decoded")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    with pytest.raises(DataError, match=r"60 x 40 = 0\.0 megapixels.*--max-pixels") as info:
        load_image(path, max_pixels=2399)
    assert info.value.path == str(path)
    assert 50_000_000 <= DEFAULT_MAX_PIXELS < 10_000 * 10_000  # a 10000 x 10000 image is refused


def test_segment_skips_and_counts_images_above_max_pixels(capsys, tmp_path):
    small, large = (
        _save(tmp_path / "images" / "a.png", (30, 40, 3)),
        _save(tmp_path / "images" / "b.png", (60, 90, 3)),
    )
    out = tmp_path / "out"
    argv = [
        "segment",
        "--images",
        str(tmp_path / "images"),
        "--out",
        str(out),
        "--reference-image",
        str(small),
    ]
    argv += ["--reference-mask", str(_save(tmp_path / "m.png", (30, 40))), "--prompts", "grid"]
    argv += ["--points-per-side", "2", "--no-overlays", *TINY]
    assert main([*argv, "--max-pixels", "2000"]) == 0
    captured = capsys.readouterr()
    assert "2 images: 1 segmented, 0 already done" in captured.out and "1 failed" in captured.out
    skipped = [line for line in captured.err.splitlines() if "skipped an image" in line]
    assert len(skipped) == 1 and str(large) in skipped[0] and "--max-pixels" in skipped[0]
    assert list(json.loads((out / "summary.json").read_text())["failed"]) == [str(large)]
    assert "--max-pixels must be an integer >= 1" in _error(capsys, [*argv, "--max-pixels", "0"])


# ---------------------------------------------------------------- 3. resuming by content


def test_an_image_replaced_under_the_same_name_is_segmented_again(tiny_sam, tmp_path):
    paths = [_save(tmp_path / "images" / f"{i}.png", (48, 64, 3), seed=i) for i in range(2)]
    predictor = CustomSamPredictor(tiny_sam)
    tasks = _grid_task(predictor)
    first = segment_images(predictor, tasks, paths, tmp_path / "out", progress=False)
    assert (first.segmented, first.resumed) == (2, 0)
    _save(paths[1], (30, 90, 3), seed=7)  # same name, other pixels and size
    second = segment_images(predictor, tasks, paths, tmp_path / "out", progress=False)
    assert (second.segmented, second.resumed) == (1, 1)
    images = json.loads((tmp_path / "out" / "images.json").read_text())["images"]
    assert [(e["height"], e["width"]) for e in images] == [(48, 64), (30, 90)]
    third = segment_images(predictor, tasks, paths, tmp_path / "out", progress=False)
    assert (third.segmented, third.resumed) == (0, 2)


# ---------------------------------------------------------------- 4. extreme aspect ratios


def test_set_image_names_the_shape_of_an_image_it_cannot_resize(tiny_sam):
    predictor = CustomSamPredictor(tiny_sam)
    with pytest.raises(ImageError, match=r"1 x 5000 \(H x W\).*aspect ratio.*crop or pad"):
        predictor.set_image(np.zeros((1, 5000, 3), np.uint8))
    with pytest.raises(ImageError, match=r"5000 x 1"):
        predictor.set_image(np.zeros((5000, 1, 3), np.uint8))
    predictor.set_image(np.zeros((1, 40, 3), np.uint8))  # thin, but every side survives the resize


def test_segment_skips_an_image_of_extreme_aspect_ratio_and_goes_on(tiny_sam, tmp_path):
    paths = [_save(tmp_path / "a.png", (48, 64, 3)), _save(tmp_path / "b.png", (1, 5000, 3))]
    paths.append(_save(tmp_path / "c.png", (40, 40, 3)))
    predictor = CustomSamPredictor(tiny_sam)
    summary = segment_images(predictor, _grid_task(predictor), paths, tmp_path / "out", progress=False)
    assert summary.segmented == 2 and list(summary.failed) == [str(paths[1])]
    assert str(paths[1]) in summary.failed[str(paths[1])] and "1 x 5000" in summary.failed[str(paths[1])]
    images = json.loads((tmp_path / "out" / "images.json").read_text())["images"]
    assert [e["id"] for e in images] == [1, 3]


def test_overlay_names_stay_within_the_file_system_limit(tiny_sam, tmp_path):
    path = _save(tmp_path / ("é" * 120 + ".png"), (32, 32, 3))  # 244 bytes: with a prefix, over 255
    predictor = CustomSamPredictor(tiny_sam)
    summary = segment_images(predictor, _grid_task(predictor), [path], tmp_path / "out", progress=False)
    assert summary.segmented == 1 and len(list((tmp_path / "out" / "overlays").iterdir())) == 1


# ---------------------------------------------------------------- 5. fit-prototype on another base


def test_fit_prototype_refuses_an_adapter_of_another_base(capsys, tmp_path, tiny_sam, sam, adapter_factory):
    image, mask = _save(tmp_path / "i.png", (48, 64, 3)), _save(tmp_path / "m.png", (48, 64))
    foreign, own = tmp_path / "foreign", tmp_path / "own"
    adapter = adapter_factory("box")
    adapter.bind_base_model(tiny_sam, model_type="small_vit")
    adapter.save_pretrained(foreign)
    TargetPrototype(torch.ones(256) / 16, 3, "trained", "box").save(foreign)
    before = (foreign / PROTOTYPE_NAME).read_bytes()
    argv = ["fit-prototype", "--images", str(image), "--masks", str(mask), *TINY]
    err = _error(capsys, [*argv, "--adapter", str(foreign)])
    assert "--adapter" in err and "small_vit" in err and adapter.config.base_model.fingerprint in err
    assert "samplm_tiny" in err and "--out" in err
    assert (foreign / PROTOTYPE_NAME).read_bytes() == before
    adapter.bind_base_model(sam, model_type="samplm_tiny")  # its own base: written
    adapter.save_pretrained(own)
    assert main([*argv, "--adapter", str(own)]) == 0
    assert TargetPrototype.load(own).num_masks == 1


# ---------------------------------------------------------------- 6. prototype files


def _prototype(path: Path, vector: torch.Tensor, **fields) -> Path:
    header = {"format": "samplm-prototype", "num_masks": 1, **fields}
    save_file({"prototype": vector}, str(path), metadata={PROTOTYPE_HEADER_KEY: json.dumps(header)})
    return path


@pytest.mark.parametrize(
    ("vector", "fields", "match"),
    [
        (torch.full((256,), 1e30), {}, "fits float32"),  # its norm overflows: it would normalise to zeros
        (torch.full((4,), 1e300, dtype=torch.float64), {}, "finite"),
        (torch.ones(4, dtype=torch.int32), {}, "float vector"),
        (torch.ones(4), {"num_masks": "many"}, "num_masks must be an integer"),
        (torch.ones(4), {"num_masks": float("inf")}, "num_masks must be an integer"),
        (torch.ones(4), {"num_masks": 1.5}, "num_masks must be an integer"),
        (torch.ones(4), {"num_masks": True}, "num_masks must be an integer"),
        (torch.ones(4), {"num_masks": -1}, "num_masks must be an integer >= 0"),
        (torch.ones(4), {"encoder": 5}, "encoder must be a string or null"),
        (torch.ones(4), {"task": ["a"]}, "task must be a string or null"),
    ],
)
def test_bad_prototype_values_and_header_fields_name_the_file(tmp_path, vector, fields, match):
    file = _prototype(tmp_path / PROTOTYPE_NAME, vector, **fields)
    with pytest.raises(PrototypeError, match=match) as info:
        TargetPrototype.load(file)
    assert info.value.path == str(file) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000, '{"format": "samplm-prototype", "num_masks": 1' + "0" * 5000 + "}"],
    ids=["deep", "long-number"],
)
def test_a_deep_or_overlong_prototype_header_names_the_file(tmp_path, text):
    file = tmp_path / PROTOTYPE_NAME
    save_file({"prototype": torch.ones(4)}, str(file), metadata={PROTOTYPE_HEADER_KEY: text})
    with pytest.raises(PrototypeError) as info:
        TargetPrototype.load(file)
    assert info.value.path == str(file) and "\n" not in str(info.value)


def test_a_prototype_of_another_encoder_names_the_file_and_both_encoders(tiny_sam, tmp_path):
    file = TargetPrototype(torch.ones(256) / 16, 1, "other-encoder").save(tmp_path / "p.safetensors")
    predictor = CustomSamPredictor(tiny_sam)
    with pytest.raises(PrototypeError) as info:
        AdapterMaskGenerator(predictor, prototype=TargetPrototype.load(file))
    message = str(info.value)
    assert info.value.path == str(file) and "other-encoder" in message and predictor.encoder_key() in message


# ---------------------------------------------------------------- 7. one line instead of a traceback


def test_float8_adapter_weights_are_refused_naming_the_tensor(tmp_path, tiny_sam, adapter_factory):
    folder = adapter_factory("nose").save_pretrained(tmp_path / "nose")
    with safe_open(str(folder / WEIGHTS_NAME), framework="pt") as handle:
        tensors, metadata = {k: handle.get_tensor(k) for k in handle.keys()}, handle.metadata()  # noqa: SIM118
    key = sorted(tensors)[0]
    tensors[key] = tensors[key].to(torch.float8_e4m3fn)
    save_file(tensors, str(folder / WEIGHTS_NAME), metadata=metadata)
    config = json.loads((folder / CONFIG_NAME).read_text())
    config["weights_sha256"] = sha256_file(folder / WEIGHTS_NAME)  # (else the checksum refuses it first)
    (folder / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(AdapterFormatError, match=rf"{key}.*float8_e4m3fn.*float32") as info:
        CustomSamPredictor(tiny_sam).load_adapter(str(folder))
    assert info.value.path == str(folder / WEIGHTS_NAME)
    in_memory = adapter_factory("nose").to(torch.float8_e4m3fn)
    with pytest.raises(AdapterFormatError, match="float8_e4m3fn"):
        CustomSamPredictor(tiny_sam).load_adapter(in_memory)


@pytest.mark.parametrize(
    "version", ["2.0", "1" + "0" * 5000, "true", "1e0"], ids=["float", "long", "bool", "exponent"]
)
def test_format_version_must_be_a_supported_integer(tmp_path, adapter_factory, version):
    folder = adapter_factory("nose").save_pretrained(tmp_path / "nose")
    config = (folder / CONFIG_NAME).read_text()
    stored = json.loads(config)["format_version"]
    (folder / CONFIG_NAME).write_text(
        config.replace(f'"format_version": {stored}', f'"format_version": {version}')
    )
    with pytest.raises(AdapterFormatError) as info:
        PromptAdapter.load(folder)
    assert info.value.path == str(folder / CONFIG_NAME) and len(str(info.value)) < 400


@pytest.fixture(scope="module")
def ready(tiny_sam):
    """A predictor on the tiny SAM with an image set and one adapter, ``nose``."""
    from conftest import make_adapter

    predictor = CustomSamPredictor(tiny_sam)
    predictor.load_adapter(make_adapter("nose"))
    predictor.set_image(np.zeros((40, 50, 3), np.uint8))
    return predictor


def test_adapter_names_must_be_non_empty_strings(ready, adapter_factory):
    prompt = {"point_coords": [[5, 5]], "point_labels": [1]}
    with pytest.raises(AdapterNameError, match=r"list of adapter names.*'nose'.*pass \['nose'\]"):
        ready.predict_many("nose", **prompt)
    with pytest.raises(AdapterNameError, match="list of adapter names, got 5"):
        ready.predict_many(5, **prompt)
    for name in ("", 5, b"nose", ["nose"]):
        with pytest.raises(AdapterNameError, match="non-empty string"):
            ready.predict_many([name], **prompt)
        with pytest.raises(AdapterNameError, match="non-empty string"):
            ready.set_adapter(name)
        with pytest.raises(AdapterNameError, match="non-empty string"):
            ready.load_adapter(adapter_factory("x"), adapter_name=name)
    assert ready.adapters == ["nose"] and ready.active_adapter == "nose"
    assert set(ready.predict_many(["nose", None], **prompt)) == {"nose", None}


def test_complex_prompts_are_refused(ready):
    with pytest.raises(PromptError, match="point_coords must be real"):
        ready.predict(point_coords=[[5 + 1j, 5]], point_labels=[1])
    with pytest.raises(PromptError, match="point_labels must be real"):
        ready.predict(point_coords=[[5, 5]], point_labels=np.array([1 + 0j]))
    with pytest.raises(PromptError, match="box must be real"):
        ready.predict(box=np.array([1, 1, 9, 9], np.complex64))
    coords = torch.tensor([[[5.0, 5.0]]], dtype=torch.complex64)
    with pytest.raises(PromptError, match="point_coords must be real"):
        ready.predict_torch(coords, torch.ones(1, 1))


# ---------------------------------------------------------------- 8. property tests


NAMES = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "nose", "a/b", "..", "\x1b[2J", "x\ny", "é" * 300]),
    st.integers(),
    st.none(),
    st.binary(max_size=8),
    st.lists(st.text(max_size=3), max_size=2),
    st.floats(allow_nan=True),
)


@SETTINGS
@given(name=NAMES)
def test_any_adapter_name_is_accepted_or_refused_in_one_line(ready, adapter_factory, name):
    assume(name != "nose")  # (the fixture's own adapter)
    prompt = {"point_coords": [[5, 5]], "point_labels": [1]}
    ready.set_image(np.zeros((40, 50, 3), np.uint8))  # (free when already set)
    try:
        registered = ready.load_adapter(adapter_factory("x"), adapter_name=name, replace=True, activate=False)
    except SamplmError as exc:
        assert "\n" not in str(exc)
        assert not isinstance(name, str) or name == ""  # every non-empty string is a name
        registered = None
    if registered is not None:
        assert registered == (name if name is not None else "x")
        ready.set_adapter(registered)
        masks, _, _ = ready.predict_many([registered], **prompt)[registered]
        assert masks.shape == (3, 40, 50)
        ready.set_adapter("nose")
        ready.delete_adapter(registered)
    for call in (lambda: ready.predict_many(name, **prompt), lambda: ready.set_adapter(name)):
        try:
            call()
        except SamplmError as exc:
            assert "\n" not in str(exc)
    ready.set_adapter("nose")


HEADER_VALUES = st.one_of(
    st.integers(-3, 10),
    st.sampled_from([2**64, 1.5, float("inf"), float("nan"), True, None, "", "x\x1b", [], {}]),
    st.text(max_size=5),
)
HEADERS = st.one_of(
    st.fixed_dictionaries(
        {"format": st.sampled_from(["samplm-prototype", "other", 1])},
        optional={k: HEADER_VALUES for k in ("num_masks", "encoder", "task", "features")},
    ).map(json.dumps),
    st.text(max_size=20),
    st.integers(1, 3000).map(lambda depth: "[" * depth + "]" * depth),
)
VECTORS = st.tuples(
    st.sampled_from([(4,), (0,), (2, 2), ()]),
    st.sampled_from([torch.float32, torch.float64, torch.float16, torch.int64, torch.bool, torch.uint8]),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
)


@SETTINGS
@given(header=HEADERS, vector=VECTORS, raw=st.one_of(st.none(), st.binary(max_size=200)))
def test_any_prototype_file_loads_or_names_the_file(tmp_path, header, vector, raw):
    file = tmp_path / PROTOTYPE_NAME
    if raw is not None:
        file.write_bytes(raw)
    else:
        shape, dtype, value = vector
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (casting nan/inf to an integer)
            tensor = torch.full(shape, value, dtype=torch.float64).to(dtype)
        save_file({"prototype": tensor}, str(file), metadata={PROTOTYPE_HEADER_KEY: header})
    try:
        prototype = TargetPrototype.load(file)
    except PrototypeError as exc:
        assert exc.path == str(file) and str(exc).isprintable()
        return
    assert torch.isfinite(prototype.vector).all() and abs(float(prototype.vector.norm()) - 1) < 1e-5
    assert isinstance(prototype.num_masks, int) and prototype.num_masks >= 0
    assert all(isinstance(v, str | None) for v in (prototype.encoder, prototype.task))


SHAPES = st.one_of(
    st.tuples(st.integers(1, 4), st.integers(1, 4)),
    st.tuples(st.just(1), st.integers(1, 6000)),
    st.tuples(st.integers(1, 6000), st.just(1)),
    st.tuples(st.integers(1, 300), st.integers(1, 300)),
)


@SETTINGS
@given(shape=SHAPES, channels=st.sampled_from([(), (3,), (4,)]), limit=st.sampled_from([None, 5000]))
def test_any_image_shape_is_segmented_or_skipped_and_counted(ready, tmp_path, shape, channels, limit):
    path = _save(tmp_path / "images" / "x.png", (*shape, *channels))
    summary = segment_images(
        ready, _grid_task(ready), [path], tmp_path / "out", overlays=False, progress=False, max_pixels=limit
    )
    assert summary.segmented + summary.resumed + len(summary.failed) == 1
    for reason in summary.failed.values():
        assert reason.isprintable() and str(path) in reason
    if limit is not None and shape[0] * shape[1] > limit:
        assert "--max-pixels" in summary.failed[str(path)]
