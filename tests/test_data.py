"""Dataset readers: COCO, VOC, mask folders, CelebAMask-HQ; image modes; splits; skip accounting."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samplm.data import load_image, read_celebamask, read_coco, read_dataset, read_mask_folder, read_voc
from samplm.errors import DataError, SkippedDataWarning

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PLATES = SHARED / "car_license_plate_andrewmvd"
PERSEG = SHARED / "perseg_persam_examples"
needs_plates = pytest.mark.skipif(not PLATES.is_dir(), reason="license-plate data not found next to the repo")
needs_perseg = pytest.mark.skipif(not PERSEG.is_dir(), reason="PerSeg data not found next to the repo")


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


# ---------------------------------------------------------------- COCO


@pytest.fixture()
def coco(tmp_path):
    _save(tmp_path / "img" / "a.png", np.zeros((20, 30, 3), np.uint8))
    mask = np.zeros((20, 30), bool)
    mask[5:9, 2:12] = True
    import pycocotools.mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode()
    data = {
        "images": [
            {"id": 1, "file_name": "a.png", "height": 20, "width": 30},
            {"id": 2, "file_name": "missing.png", "height": 20, "width": 30},
        ],
        "categories": [{"id": 7, "name": "plate"}, {"id": 8, "name": "car"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 7,
                "bbox": [3, 4, 10, 5],
                "iscrowd": 0,
                "segmentation": [[3, 4, 13, 4, 13, 9, 3, 9]],
            },
            {
                "id": 2,
                "image_id": 1,
                "category_id": 7,
                "bbox": [2, 5, 10, 4],
                "iscrowd": 0,
                "segmentation": rle,
            },
            {
                "id": 3,
                "image_id": 1,
                "category_id": 7,
                "bbox": [0, 0, 1, 1],
                "iscrowd": 1,
                "segmentation": rle,
            },
            {
                "id": 4,
                "image_id": 2,
                "category_id": 7,
                "bbox": [0, 0, 5, 5],
                "iscrowd": 0,
                "segmentation": [[0, 0, 5, 0, 5, 5]],
            },
            {
                "id": 5,
                "image_id": 1,
                "category_id": 8,
                "bbox": [0, 0, 5, 5],
                "iscrowd": 0,
                "segmentation": [[0, 0, 1, 0, 1, 1]],
            },
            {
                "id": 6,
                "image_id": 1,
                "category_id": 8,
                "bbox": [0, 0, 5, 5],
                "iscrowd": 0,
                "segmentation": [],
            },
        ],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path, mask


def test_coco_polygons_rle_and_xywh_boxes(coco):
    path, rle_mask = coco
    with pytest.warns(SkippedDataWarning, match="crowd annotation") as record:
        dataset = read_coco(path, path.parent / "img")
    message = str(record[0].message)
    assert "image file missing" in message and "mask smaller than 4 px" in message
    assert "missing or malformed segmentation" in message
    assert [i.instance_id for i in dataset] == ["coco:1", "coco:2"]
    polygon, rle = dataset.instances
    assert polygon.box == (3.0, 4.0, 13.0, 9.0)  # XYWH [3, 4, 10, 5] -> XYXY
    expected = np.zeros((20, 30), bool)
    expected[4:9, 3:13] = True
    assert np.array_equal(polygon.mask(20, 30), expected)
    assert np.array_equal(rle.mask(20, 30), rle_mask)
    assert dataset.skipped["crowd annotation"] == 1


def test_coco_category_selection_and_errors(coco, tmp_path):
    path, _ = coco
    with pytest.warns(SkippedDataWarning):
        cars = read_coco(path, path.parent / "img", categories=["car"])
    assert len(cars) == 0 and cars.skipped["mask smaller than 4 px"] == 1
    with pytest.raises(DataError, match=r"unknown categories \['bus'\]; available: \['car', 'plate'\]"):
        read_coco(path, path.parent / "img", categories=["bus"])
    with pytest.raises(DataError, match=r"annotation id 3\): crowd annotation"):
        read_coco(path, path.parent / "img", strict=True)
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(DataError, match="not a COCO instances file"):
        read_coco(bad)


# ---------------------------------------------------------------- VOC


@needs_plates
def test_voc_license_plates():
    dataset = read_voc(PLATES / "annotations")
    assert len(dataset) == 471 and len(dataset.image_paths()) == 433
    assert dataset.categories == ["licence"]
    first = next(i for i in dataset if i.instance_id == "voc:Cars0:0")
    assert first.box == (181.0, 140.0, 335.0, 194.0)
    mask = first.mask(300, 400)
    assert mask.sum() == 154 * 54 and mask[140, 181] and not mask[139, 181] and not mask[140, 335]


def test_voc_broken_files_are_counted(tmp_path):
    ann, img = tmp_path / "annotations", tmp_path / "images"
    _save(img / "x.jpg", np.zeros((10, 10, 3), np.uint8))
    ann.mkdir()
    (ann / "x.xml").write_text(
        "<annotation><filename>x.jpg</filename><size><width>10</width><height>10</height></size>"
        "<object><name>p</name><bndbox><xmin>2</xmin><ymin>2</ymin><xmax>8</xmax><ymax>6</ymax></bndbox></object>"
        "<object><name>p</name><bndbox><xmin>5</xmin><ymin>2</ymin><xmax>5</xmax><ymax>6</ymax></bndbox></object>"
        "</annotation>"
    )
    (ann / "y.xml").write_text("<annotation><filename>nope.jpg</filename></annotation>")
    (ann / "z.xml").write_text("<annotation")
    with pytest.warns(SkippedDataWarning) as record:
        dataset = read_voc(ann)
    assert len(dataset) == 1
    assert dataset.skipped["degenerate box"] == 1 and dataset.skipped["image file missing"] == 1
    assert any("unreadable XML" in reason for reason in dataset.skipped)
    assert "skipped 3 annotation(s)" in str(record[0].message)


# ---------------------------------------------------------------- mask folders


@needs_perseg
def test_perseg_layout():
    dataset = read_mask_folder(PERSEG / "Images", PERSEG / "Annotations")
    assert len(dataset) == 9 and dataset.categories == ["cat", "colorful_sneaker", "duck_toy"]
    cats = read_dataset("masks", PERSEG / "Annotations", images=PERSEG / "Images", categories=["cat"])
    assert len(cats) == 3
    image = load_image(cats[0].image_path)
    mask = cats[0].mask(*image.shape[:2])
    assert 0.05 < mask.mean() < 0.9


def test_label_map_and_per_instance_files(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    _save(images / "a.png", np.zeros((8, 8, 3), np.uint8))
    _save(images / "b.png", np.zeros((8, 8, 3), np.uint8))
    _save(images / "c.png", np.zeros((8, 8, 3), np.uint8))
    labels = np.zeros((8, 8), np.uint8)
    labels[:4, :4], labels[4:, 4:] = 1, 2
    _save(masks / "a.png", labels)
    one = np.zeros((8, 8), np.uint8)
    one[1:5, 1:5] = 255
    _save(masks / "b_0.png", one)
    _save(masks / "b_1.png", 255 - one)
    with pytest.warns(SkippedDataWarning, match="image without a mask file"):
        dataset = read_mask_folder(images, masks)
    assert [i.instance_id for i in dataset] == [
        "mask:a.png:1",
        "mask:a.png:2",
        "mask:b_0.png",
        "mask:b_1.png",
    ]
    assert dataset[1].mask(8, 8).sum() == 16 and dataset[2].mask(8, 8).sum() == 16
    with pytest.raises(DataError, match="is 8x8 but the image is 16x16"):
        dataset[0].mask(16, 16)


# ---------------------------------------------------------------- CelebAMask-HQ


def test_celebamask_layout(tmp_path):
    _save(tmp_path / "CelebA-HQ-img" / "3.jpg", np.zeros((16, 16, 3), np.uint8))
    nose = np.zeros((8, 8), np.uint8)
    nose[2:4, 3:5] = 255
    _save(tmp_path / "CelebAMask-HQ-mask-anno" / "0" / "00003_nose.png", nose)
    _save(tmp_path / "CelebAMask-HQ-mask-anno" / "0" / "00003_skin.png", 255 - nose)
    _save(tmp_path / "CelebAMask-HQ-mask-anno" / "0" / "00009_nose.png", nose)
    with pytest.warns(SkippedDataWarning, match="image file missing"):
        dataset = read_celebamask(tmp_path, categories=["nose"])
    assert len(dataset) == 1 and dataset[0].category == "nose"
    mask = dataset[0].mask(16, 16)  # 8 x 8 mask resized to the 16 x 16 image
    assert mask.sum() == 16 and mask[4:8, 6:10].all()
    with pytest.raises(DataError, match="unknown parts"):
        read_celebamask(tmp_path, categories=["beard"])


# ---------------------------------------------------------------- images, splits


def test_image_modes(tmp_path):
    gray = _save(tmp_path / "g.png", np.full((4, 5), 100, np.uint8))
    rgba = _save(tmp_path / "a.png", np.full((4, 5, 4), 50, np.uint8))
    deep = tmp_path / "d.png"
    Image.fromarray(np.full((4, 5), 65535, np.uint16)).save(deep)
    for path, value in ((gray, 100), (rgba, 50), (deep, 255)):
        image = load_image(path)
        assert image.shape == (4, 5, 3) and image.dtype == np.uint8 and (image == value).all()
    with pytest.raises(DataError, match="does not exist"):
        load_image(tmp_path / "none.png")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="cannot be read"):
        load_image(tmp_path / "junk.png")


def test_exif_orientation(tmp_path):
    array = np.zeros((4, 6, 3), np.uint8)
    array[0, 0] = 255
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rot.jpg"
    image.save(path, exif=exif, quality=100)
    assert load_image(path).shape == (6, 4, 3)
    assert load_image(path, expected_size=(4, 6)).shape == (4, 6, 3)  # annotations on raw pixels


@needs_plates
def test_split_is_deterministic_and_by_image():
    dataset = read_voc(PLATES / "annotations")
    train, val = dataset.split(0.2, seed=0, by_content=False)
    _again_train, again_val = dataset.split(0.2, seed=0, by_content=False)
    assert [i.instance_id for i in val] == [i.instance_id for i in again_val]
    assert len(val.image_paths()) == 87 and len(train.image_paths()) == 346
    assert not set(train.image_paths()) & set(val.image_paths())
    assert len(train) + len(val) == len(dataset)
    _, other_val = dataset.split(0.2, seed=1, by_content=False)
    assert set(other_val.image_paths()) != set(val.image_paths())


def _digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@needs_plates
def test_split_by_content_keeps_duplicate_files_on_one_side():
    dataset = read_voc(PLATES / "annotations")
    by_path_train, by_path_val = dataset.split(0.5, seed=0, by_content=False)
    leaked = {_digest(p) for p in by_path_train.image_paths()} & {
        _digest(p) for p in by_path_val.image_paths()
    }
    assert leaked  # the public set holds copies under several names (433 files, 299 distinct)
    train, val = dataset.split(0.5, seed=0)
    assert not {_digest(p) for p in train.image_paths()} & {_digest(p) for p in val.image_paths()}
    assert len(train) + len(val) == len(dataset)
    assert [i.instance_id for i in val] == [i.instance_id for i in dataset.split(0.5, seed=0)[1]]


def test_split_by_content_equals_split_by_path_without_duplicates(tmp_path):
    for i in range(10):
        _save(tmp_path / "images" / "x" / f"{i}.png", np.full((8, 8, 3), i, np.uint8))
        _save(tmp_path / "masks" / "x" / f"{i}.png", np.ones((8, 8), np.uint8) * 255)
    dataset = read_mask_folder(tmp_path / "images", tmp_path / "masks")
    for seed in range(3):
        a, b = dataset.split(0.3, seed=seed), dataset.split(0.3, seed=seed, by_content=False)
        assert a[1].image_paths() == b[1].image_paths() and a[0].image_paths() == b[0].image_paths()


# ---------------------------------------------------------------- failing loudly (issue 13)


def _coco_file(tmp_path: Path, images: list, annotations: list, categories: list | None = None) -> Path:
    """Write a COCO file beside ``tmp_path/img``; ``categories`` defaults to one ``plate`` (id 7)."""
    data = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 7, "name": "plate"}] if categories is None else categories,
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path


def _ann(ann_id, image_id=1, **extra) -> dict:
    """A valid 10 x 5 polygon annotation of category 7."""
    ann = {"id": ann_id, "image_id": image_id, "category_id": 7, "iscrowd": 0, "bbox": [3, 4, 10, 5]}
    ann["segmentation"] = [[3, 4, 13, 4, 13, 9, 3, 9]]
    return {**ann, **extra}


@pytest.fixture()
def two_images(tmp_path):
    _save(tmp_path / "img" / "a.png", np.zeros((20, 30, 3), np.uint8))
    _save(tmp_path / "img" / "b.png", np.zeros((20, 30, 3), np.uint8))
    return tmp_path


def test_coco_shared_image_id_never_mixes_files(two_images):
    images = [
        {"id": 1, "file_name": "a.png", "height": 20, "width": 30},
        {"id": 1, "file_name": "b.png", "height": 20, "width": 30},
        {"id": 2, "file_name": "b.png", "height": 20, "width": 30},
    ]
    path = _coco_file(two_images, images, [_ann(1), _ann(2), _ann(3, image_id=2)])
    with pytest.warns(SkippedDataWarning, match="image id shared by several images"):
        dataset = read_coco(path, two_images / "img")
    assert [(i.instance_id, i.image_path.name) for i in dataset] == [("coco:3", "b.png")]
    assert dataset.skipped["image id shared by several images"] == 2
    with pytest.raises(DataError, match=r"instances.json \(image id 1\): .*'a.png'.*'b.png'") as error:
        read_coco(path, two_images / "img", strict=True)
    assert "\n" not in str(error.value) and "unique id" in str(error.value)


def test_coco_identical_duplicate_image_entries_are_harmless(two_images):
    image = {"id": 1, "file_name": "a.png", "height": 20, "width": 30}
    path = _coco_file(two_images, [image, dict(image)], [_ann(1)])
    dataset = read_coco(path, two_images / "img", strict=True)
    assert [i.instance_id for i in dataset] == ["coco:1"] and not dataset.skipped


def test_coco_duplicate_annotation_ids_give_unique_instance_ids(two_images):
    images = [{"id": 1, "file_name": "a.png", "height": 20, "width": 30}]
    anns = [_ann(5), _ann(5), _ann("5"), _ann(6), {k: v for k, v in _ann(0).items() if k != "id"}]
    path = _coco_file(two_images, images, anns)
    dataset = read_coco(path, two_images / "img")
    ids = [i.instance_id for i in dataset]
    assert ids == ["coco:5#0", "coco:5#1", "coco:5#2", "coco:6", "coco:#4"]
    with pytest.raises(DataError, match=r"annotation id 5\): .*unique id"):
        read_coco(path, two_images / "img", strict=True)


def test_instance_dataset_rejects_duplicate_instance_ids(tmp_path):
    from samplm.data import BoxShape, Instance, InstanceDataset

    one = Instance(tmp_path / "a.png", "x", BoxShape((0, 0, 2, 2)), "id:1")
    two = Instance(tmp_path / "b.png", "x", BoxShape((0, 0, 2, 2)), "id:1")
    with pytest.raises(DataError, match=r"instance id 'id:1' is used by 2 instances"):
        InstanceDataset([one, two], source="here")


def test_mask_folder_images_sharing_a_mask_are_counted(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    for name in ("a.png", "a.jpg", "b.png", "b_0.png"):
        _save(images / name, np.zeros((8, 8, 3), np.uint8))
    one = np.zeros((8, 8), np.uint8)
    one[1:5, 1:5] = 255
    for name in ("a.png", "b_0.png", "b_1.png"):
        _save(masks / name, one)
    with pytest.warns(SkippedDataWarning, match="mask file matches several images"):
        dataset = read_mask_folder(images, masks)
    assert sorted((i.image_path.name, i.instance_id) for i in dataset) == [
        ("b.png", "mask:b_1.png"),
        ("b_0.png", "mask:b_0.png"),
    ]
    assert dataset.skipped["mask file matches several images"] == 2  # a.png and a.jpg


def test_celebamask_duplicate_part_masks_are_counted(tmp_path):
    _save(tmp_path / "CelebA-HQ-img" / "3.jpg", np.zeros((16, 16, 3), np.uint8))
    nose = np.zeros((8, 8), np.uint8)
    nose[2:4, 3:5] = 255
    _save(tmp_path / "CelebAMask-HQ-mask-anno" / "0" / "00003_nose.png", nose)
    _save(tmp_path / "CelebAMask-HQ-mask-anno" / "1" / "3_nose.png", nose)
    _save(tmp_path / "CelebAMask-HQ-mask-anno" / "0" / "00003_skin.png", 255 - nose)
    with pytest.warns(SkippedDataWarning, match="several masks for one image and part"):
        dataset = read_celebamask(tmp_path)
    assert [i.instance_id for i in dataset] == ["celebamask:3:skin"]
    assert dataset.skipped["several masks for one image and part"] == 2


def test_coco_declared_size_differs_from_the_image(tmp_path):
    _save(tmp_path / "img" / "a.png", np.zeros((40, 60, 3), np.uint8))  # resized after annotating
    images = [{"id": 1, "file_name": "a.png", "height": 20, "width": 30}]
    path = _coco_file(tmp_path, images, [_ann(1), _ann(2)])
    reason = "declared image size differs from the image file"
    with pytest.warns(SkippedDataWarning, match=reason):
        dataset = read_coco(path, tmp_path / "img")
    assert len(dataset) == 0 and dataset.skipped[reason] == 2
    with pytest.raises(DataError, match=r"a.png \(image id 1\): .*declares 20x30 but the file is 40x60"):
        read_coco(path, tmp_path / "img", strict=True)


def test_voc_declared_size_differs_from_the_image(tmp_path):
    ann, img = tmp_path / "annotations", tmp_path / "images"
    _save(img / "x.jpg", np.zeros((20, 20, 3), np.uint8))
    ann.mkdir()
    (ann / "x.xml").write_text(
        "<annotation><filename>x.jpg</filename><size><width>10</width><height>10</height></size>"
        "<object><name>p</name><bndbox><xmin>2</xmin><ymin>2</ymin><xmax>8</xmax><ymax>6</ymax></bndbox></object>"
        "</annotation>"
    )
    reason = "declared image size differs from the image file"
    with pytest.warns(SkippedDataWarning, match=reason):
        dataset = read_voc(ann)
    assert len(dataset) == 0 and dataset.skipped[reason] == 1
    with pytest.raises(DataError, match=r"x.xml: .*declares 10x10 but the file is 20x20"):
        read_voc(ann, strict=True)


def test_declared_size_is_checked_when_the_image_is_read(tmp_path):
    from samplm.data import BoxShape, Instance

    path = _save(tmp_path / "a.png", np.zeros((40, 60, 3), np.uint8))
    with pytest.raises(DataError, match="declares 20x30 but the file is 40x60"):
        load_image(path, expected_size=(20, 30))
    inst = Instance(path, "x", BoxShape((0, 0, 5, 5)), "id:1", image_size=(20, 30))
    with pytest.raises(DataError, match=r"id:1 .*20x30.*40x60"):
        inst.mask(40, 60)
    assert inst.mask(20, 30).sum() == 25


def test_all_zero_label_map_is_counted(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    _save(images / "a.png", np.zeros((8, 8, 3), np.uint8))
    _save(images / "b.png", np.zeros((8, 8, 3), np.uint8))
    _save(masks / "a.png", np.zeros((8, 8), np.uint8))
    _save(masks / "b.png", np.full((8, 8), 255, np.uint8))
    with pytest.warns(SkippedDataWarning, match="empty mask"):
        dataset = read_mask_folder(images, masks)
    assert [i.instance_id for i in dataset] == ["mask:b.png"]
    assert dataset.skipped["empty mask (all zeros)"] == 1
    with pytest.raises(DataError, match=r"a.png: empty mask"):
        read_mask_folder(images, masks, strict=True)


def test_mask_of_another_size_is_counted(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    _save(images / "a.png", np.zeros((8, 8, 3), np.uint8))
    _save(masks / "a.png", np.full((16, 16), 255, np.uint8))
    with pytest.warns(SkippedDataWarning, match="mask size differs from the image"):
        dataset = read_mask_folder(images, masks)
    assert len(dataset) == 0


_IMAGE = {"id": 1, "file_name": "a.png", "height": 20, "width": 30}


@pytest.mark.parametrize(
    ("images", "categories", "match"),
    [
        ([_IMAGE], [{"id": 7}], r"category id 7\): no valid 'name'"),
        ([_IMAGE], [{"name": "plate"}], r"categories\[0\]\): no valid 'id'"),
        ([_IMAGE], [{"id": 7, "name": "a"}, {"id": 7, "name": "b"}], r"category id 7\): .*'a' and 'b'"),
        ([_IMAGE], {"7": "plate"}, r"'categories' is not a list"),
        ([{"id": 1, "height": 20, "width": 30}], None, r"image id 1\): no valid 'file_name'"),
        ([{**_IMAGE, "file_name": ""}], None, r"image id 1\): no valid 'file_name'"),
        ([{"id": 1, "file_name": "a.png", "width": 30}], None, r"image id 1\): no valid 'height'"),
        ([{**_IMAGE, "height": -3}], None, r"image id 1\): no valid 'height'"),
        ([{**_IMAGE, "width": "wide"}], None, r"image id 1\): no valid 'width'"),
        ([{**_IMAGE, "id": [1]}], None, r"images\[0\]\): no valid 'id'"),
        ([[_IMAGE]], None, r"images\[0\]\): not a JSON object"),
    ],
)
def test_coco_malformed_tables_give_one_clear_line(tmp_path, images, categories, match):
    _save(tmp_path / "img" / "a.png", np.zeros((20, 30, 3), np.uint8))
    path = _coco_file(tmp_path, images, [_ann(1)], categories)
    with pytest.raises(DataError, match=match) as error:
        read_coco(path, tmp_path / "img")
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("annotation", "reason", "where"),
    [
        (_ann(1, bbox=[3, 4, 10]), "malformed bbox", "annotation id 1"),
        (_ann(1, bbox=[3, 4, "x", 1]), "malformed bbox", "annotation id 1"),
        ([_ann(1)], "malformed annotation (not a JSON object)", r"annotations\[0\]"),
        (_ann(1, segmentation=[[3, 4, "13", 4, 13, 9]]), "missing or malformed segmentation", "id 1"),
        (_ann(1, segmentation=[[3, 4, [13], 4, 13, 9]]), "missing or malformed segmentation", "id 1"),
        (
            _ann(1, segmentation={"size": "20x30", "counts": [600]}),
            "missing or malformed segmentation",
            "id 1",
        ),
        (
            _ann(1, segmentation={"size": [20, 30], "counts": [1e99]}),
            "missing or malformed segmentation",
            "id 1",
        ),
        (_ann(1, segmentation=[[0, 0, 1e300, 0, 0, 1e300]]), "segmentation outside the image", "id 1"),
        (_ann(1, category_id=[7]), "annotation with unknown category_id", "id 1"),
        (_ann(1, image_id={"id": 1}), "annotation with unknown image_id", "id 1"),
        (_ann(1, iscrowd="no"), "malformed iscrowd", "id 1"),
    ],
)
def test_coco_malformed_annotations_are_counted(tmp_path, annotation, reason, where):
    _save(tmp_path / "img" / "a.png", np.zeros((20, 30, 3), np.uint8))
    path = _coco_file(tmp_path, [_IMAGE], [annotation, _ann(2)])
    with pytest.warns(SkippedDataWarning, match=re.escape(reason)):
        dataset = read_coco(path, tmp_path / "img")
    assert [i.instance_id for i in dataset] == ["coco:2"] and dataset.skipped[reason] == 1
    with pytest.raises(DataError, match=where) as error:
        read_coco(path, tmp_path / "img", strict=True)
    assert reason in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    "name",
    ["bad\udcffname.png", "nul\x00.png", "new\nline.png", "x" * 5000 + ".png", "/"],
    ids=["surrogate", "nul", "newline", "too-long", "root"],
)
def test_coco_odd_file_names_are_counted_as_missing(tmp_path, name):
    _save(tmp_path / "img" / "a.png", np.zeros((20, 30, 3), np.uint8))
    images = [_IMAGE, {"id": 2, "file_name": name, "height": 20, "width": 30}]
    path = _coco_file(tmp_path, images, [_ann(1), _ann(2, image_id=2)])
    with pytest.warns(SkippedDataWarning) as record:
        dataset = read_coco(path, tmp_path / "img")
    assert [i.instance_id for i in dataset] == ["coco:1"] and dataset.skipped["image file missing"] == 1
    for message in (str(record[0].message), dataset.skipped_examples["image file missing"]):
        assert message.isprintable()  # one line, odd characters escaped
    with pytest.raises(DataError, match=r"image id 2\): image file missing") as error:
        read_coco(path, tmp_path / "img", strict=True)
    assert str(error.value).isprintable()


def test_coco_unreadable_json_is_one_data_error(tmp_path):
    path = tmp_path / "instances.json"
    for content in (b'{"images": [\xff]}', b"[" * 100_000, b'{"images": 1' + b"0" * 5000 + b"}"):
        path.write_bytes(content)
        with pytest.raises(DataError, match="instances.json: is not a readable JSON file"):
            read_coco(path)
    path.write_text(json.dumps({"images": [], "annotations": {}, "categories": []}))
    with pytest.raises(DataError, match="'annotations' is not a list"):
        read_coco(path)


def test_declared_size_may_be_either_exif_orientation(tmp_path):
    image = Image.fromarray(np.zeros((20, 30, 3), np.uint8))
    exif = image.getexif()
    exif[0x0112] = 6  # displayed rotated: 30 x 20
    image.save(tmp_path / "rot.jpg", exif=exif)
    sizes = [(20, 30), (30, 20), (30, 30)]  # stored, displayed, neither
    images = [{"id": i, "file_name": "rot.jpg", "height": h, "width": w} for i, (h, w) in enumerate(sizes)]
    path = _coco_file(tmp_path, images, [_ann(i, image_id=i) for i in range(3)])
    with pytest.warns(SkippedDataWarning, match="declared image size differs"):
        dataset = read_coco(path, tmp_path)
    assert [i.image_size for i in dataset] == sizes[:2]
    for inst in dataset:
        assert load_image(inst.image_path, inst.image_size).shape[:2] == inst.image_size
