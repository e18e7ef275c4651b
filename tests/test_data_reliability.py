"""Property tests for the dataset readers: whatever the input, a reader either reads it correctly or
raises :class:`DataError` (one printable line), never another exception; nothing vanishes uncounted.
"""

from __future__ import annotations

import copy
import json
import tempfile
import warnings
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from samplm.data import InstanceDataset, load_image, read_coco, read_mask_folder, read_voc
from samplm.errors import DataError, SkippedDataWarning

FUZZ = settings(max_examples=80, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
SIZES = {"a.png": (20, 30), "b.png": (40, 20)}  # (H, W) of the images on disk

ODD_TEXT = [
    "",
    " ",
    "a.png",
    "b.png",
    "\udcff.png",
    "nul\x00.png",
    "x" * 300,
    "../a.png",
    "/",
    "é.png",
    "a\nb.png",
]
ODD_NUMBERS = [
    0,
    -1,
    1,
    7,
    20,
    30,
    40,
    10**30,
    2**63,
    -(2**63),
    1e308,
    -1e308,
    0.5,
    float("inf"),
    float("nan"),
]
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.sampled_from(ODD_NUMBERS),
    st.text(max_size=8),
    st.sampled_from(ODD_TEXT),
)
JSON_VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=10,
)


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz_images")
    for name, (height, width) in SIZES.items():
        Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(folder / name)
    return folder


def _read_or_data_error(read, *args, **kwargs) -> InstanceDataset | None:
    """Call a reader, allowing only :class:`DataError` (one printable line) to escape."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SkippedDataWarning)
            return read(*args, **kwargs)
    except DataError as exc:
        assert str(exc).isprintable()  # one line; newlines and undecodable names escaped
        return None


def _check_instances(dataset: InstanceDataset) -> None:
    """Every instance is drawn at its image's real size, without error."""
    assert len({inst.instance_id for inst in dataset}) == len(dataset)
    for inst in dataset:
        size = load_image(inst.image_path, inst.image_size).shape[:2]
        assert inst.image_size in (None, size)
        mask = inst.mask(*size)
        assert mask.shape == size and mask.dtype == bool


# ---------------------------------------------------------------- COCO


def _base_coco() -> dict:
    return {
        "images": [
            {"id": 1, "file_name": "a.png", "height": 20, "width": 30},
            {"id": 2, "file_name": "b.png", "height": 40, "width": 20},
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 7,
                "iscrowd": 0,
                "bbox": [3, 4, 10, 5],
                "segmentation": [[3, 4, 13, 4, 13, 9, 3, 9]],
            },
            {
                "id": 2,
                "image_id": 2,
                "category_id": 8,
                "iscrowd": 0,
                "bbox": [2, 5, 10, 4],
                "segmentation": {"size": [40, 20], "counts": [100, 50, 650]},
            },
        ],
        "categories": [{"id": 7, "name": "plate"}, {"id": 8, "name": "car"}],
    }


def _paths(node, prefix: tuple = ()):
    """Every position in a JSON document, as key / index paths."""
    yield prefix
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield from _paths(child, (*prefix, key))


def _mutate(doc, data) -> object:
    """One random change: replace, delete, wrap, duplicate a node, or add a key."""
    path = data.draw(st.sampled_from(list(_paths(doc))))
    op = data.draw(st.sampled_from(["replace", "delete", "wrap", "duplicate", "extra"]))
    if not path:
        return data.draw(JSON_VALUES) if op == "replace" else [doc] if op == "wrap" else doc
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    key, node = path[-1], parent[path[-1]]
    if op == "replace":
        parent[key] = data.draw(JSON_VALUES)
    elif op == "delete":
        del parent[key]
    elif op == "wrap":
        parent[key] = data.draw(st.sampled_from([[node], {"value": node}]))
    elif op == "duplicate" and isinstance(parent, list):
        parent.append(copy.deepcopy(node))
    elif op == "extra" and isinstance(node, dict):
        node[data.draw(st.text(max_size=6))] = data.draw(JSON_VALUES)
    return doc


def _check_coco(images_dir: Path, doc: object) -> None:
    path = images_dir / "instances.json"
    path.write_text(json.dumps(doc))
    for strict in (False, True):
        dataset = _read_or_data_error(read_coco, path, images_dir, strict=strict)
        if dataset is not None:
            _check_instances(dataset)
            assert all(inst.image_size == SIZES[inst.image_path.name] for inst in dataset)


@FUZZ
@given(data=st.data())
def test_coco_mutations_read_or_raise_data_error(images_dir, data):
    doc = _base_coco()
    for _ in range(data.draw(st.integers(1, 4))):
        doc = _mutate(doc, data)
    _check_coco(images_dir, doc)


IMAGE_ENTRIES = st.fixed_dictionaries(
    {"id": st.sampled_from([1, 2, "1"]), "file_name": st.sampled_from(ODD_TEXT)},
    optional={"height": st.sampled_from(ODD_NUMBERS), "width": st.sampled_from(ODD_NUMBERS)},
)
ANNOTATIONS = st.fixed_dictionaries(
    {"image_id": st.sampled_from([1, 2, 3]), "category_id": st.sampled_from([7, 8, "7"])},
    optional={
        "id": st.sampled_from([1, 2, 2, "2", None]),
        "iscrowd": st.sampled_from([0, 1, True, "0", 2]),
        "bbox": st.lists(st.sampled_from(ODD_NUMBERS), max_size=5),
        "segmentation": JSON_VALUES
        | st.lists(st.lists(st.sampled_from(ODD_NUMBERS), max_size=8), max_size=2),
    },
)


@FUZZ
@given(
    images=st.lists(IMAGE_ENTRIES | JSON_VALUES, max_size=4),
    annotations=st.lists(ANNOTATIONS | JSON_VALUES, max_size=5),
    categories=st.lists(
        st.fixed_dictionaries({"id": st.sampled_from([7, 8, True])}, optional={"name": JSON_VALUES}),
        max_size=3,
    ),
)
def test_random_coco_tables_read_or_raise_data_error(images_dir, images, annotations, categories):
    _check_coco(images_dir, {"images": images, "annotations": annotations, "categories": categories})


# ---------------------------------------------------------------- VOC

XML_TEXT = st.one_of(
    st.integers(-50, 60).map(str),
    st.sampled_from(
        ["", "nan", "inf", "-5", "1e400", "10.5", " 7 ", "abc", "0", "2" * 400, "x.png", "y.png"]
    ),
    st.text(max_size=6),
)


BOX = {"xmin": "2", "ymin": "3", "xmax": "25", "ymax": "15"}


def _element(data, tag: str, default: str) -> str:
    """``<tag>default</tag>``, or a random change of it: dropped, other text, nested, repeated."""
    choice = data.draw(st.sampled_from(["keep", "keep", "keep", "drop", "text", "nest", "twice"]))
    text = escape(data.draw(XML_TEXT)) if choice == "text" else default
    if choice == "drop":
        return ""
    if choice == "nest":
        return f"<{tag}><v>{text}</v></{tag}>"
    return f"<{tag}>{text}</{tag}>" * (2 if choice == "twice" else 1)


def _voc_xml(data) -> str:
    size = _element(data, "width", "30") + _element(data, "height", "20")
    objects = ""
    for _ in range(data.draw(st.integers(0, 3))):
        box = "".join(_element(data, key, value) for key, value in BOX.items())
        objects += f"<object>{_element(data, 'name', 'plate')}<bndbox>{box}</bndbox></object>"
    text = f"<annotation>{_element(data, 'filename', 'a.png')}<size>{size}</size>{objects}</annotation>"
    if data.draw(st.booleans()):  # broken XML now and then
        text = text[: data.draw(st.integers(0, len(text)))]
    return text


@FUZZ
@given(data=st.data())
def test_voc_random_xml_read_or_raise_data_error(images_dir, data):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for index in range(data.draw(st.integers(1, 2))):
            (folder / f"f{index}.xml").write_text(_voc_xml(data), encoding="utf-8", errors="surrogateescape")
        for strict in (False, True):
            dataset = _read_or_data_error(read_voc, folder, images_dir, strict=strict)
            if dataset is not None:
                _check_instances(dataset)
                for inst in dataset:
                    height, width = SIZES[inst.image_path.name]
                    x1, y1, x2, y2 = inst.box
                    assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height


# ---------------------------------------------------------------- mask folders


def _mask_image(data) -> Image.Image:
    """A random mask in an odd mode: all zero, all one, random labels; sometimes another size."""
    size = data.draw(st.sampled_from([(8, 8), (8, 8), (8, 8), (4, 8), (16, 16)]))
    fill = data.draw(st.sampled_from(["zero", "one", "labels", "small"]))
    labels = np.zeros(size, np.int64)
    if fill == "one":
        labels[:] = 1
    elif fill == "labels":
        labels = np.asarray(
            data.draw(st.lists(st.integers(0, 3), min_size=labels.size, max_size=labels.size))
        )
        labels = labels.reshape(size)
    elif fill == "small":
        labels[0, 0] = 1
    mode = data.draw(st.sampled_from(["1", "L", "L255", "I;16", "RGB", "RGBA", "LA", "P"]))
    if mode == "1":
        return Image.fromarray(labels > 0)
    if mode == "I;16":
        return Image.fromarray((labels * 20000).astype(np.uint16))
    gray = (labels * (85 if mode == "L255" else 1)).astype(np.uint8)
    if mode in ("RGB", "RGBA", "LA"):
        return Image.fromarray(np.repeat(gray[:, :, None], len(mode), axis=2), mode=mode)
    return Image.fromarray(gray, mode="L").convert("P") if mode == "P" else Image.fromarray(gray)


@FUZZ
@given(data=st.data())
def test_mask_folder_random_masks_are_read_or_counted(data):
    with tempfile.TemporaryDirectory() as tmp:
        images, masks = Path(tmp) / "images", Path(tmp) / "masks"
        images.mkdir(), masks.mkdir()
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / "a.png")
        layout = data.draw(st.sampled_from(["a.png", "a_0.png", "a/1.png", "garbage"]))
        (masks / layout).parent.mkdir(parents=True, exist_ok=True)
        if layout == "garbage":
            (masks / "a.png").write_bytes(data.draw(st.binary(max_size=64)))
        else:
            _mask_image(data).save(masks / layout)
        dataset = _read_or_data_error(read_mask_folder, images, masks)
        assert dataset is not None  # non-strict: problems are counted, never raised
        assert len(dataset) + sum(dataset.skipped.values()) >= 1  # nothing vanishes uncounted
        _check_instances(dataset)
        assert all(inst.mask(8, 8).sum() >= 4 for inst in dataset)
        strict = _read_or_data_error(read_mask_folder, images, masks, strict=True)
        assert strict is None or [i.instance_id for i in strict] == [i.instance_id for i in dataset]
