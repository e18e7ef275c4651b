"""TargetPrototype (averaging, similarity, files, encoder check) and the location prior (clicks from it)."""

from __future__ import annotations

import json
from itertools import combinations

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from samplm import CustomSamPredictor
from samplm.adapter.prototype import TargetPrototype, centred_cells, valid_cells
from samplm.cache.embeddings import sam_encoder_key
from samplm.constants import PROTOTYPE_HEADER_KEY, PROTOTYPE_NAME
from samplm.errors import ConfigError, PrototypeError
from samplm.prompts.location_prior import LocationPrior, PriorSettings, location_prior
from samplm.segment.prototype_fitting import fit_prototype

CELL = 16  # samplm_tiny: 256 px input, 16 x 16 embedding
IMG = 256


pytestmark = pytest.mark.usefixtures("one_thread")


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _centred(cells: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """``C x h x w`` cells minus the mean of the image cells, the top-left ``rows x cols`` block."""
    return cells - cells[:, :rows, :cols].mean(axis=(1, 2))[:, None, None]


def _cosine(cells: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """``h x w`` cosine of every cell of ``C x h x w`` to ``vector``."""
    flat = cells.reshape(cells.shape[0], -1)
    cosine = (flat.T @ vector) / np.linalg.norm(flat, axis=0) / np.linalg.norm(vector)
    return cosine.reshape(cells.shape[1:])


# ---------------------------------------------------------------- centring


def test_valid_cells_are_those_centred_on_the_image():
    valid = valid_cells((16, 16), (150, 200), IMG)  # 16 px cells: centres 8, 24, ..., 248
    expected = np.zeros((16, 16), bool)
    expected[:9, :12] = True  # row 8 centre 136 < 150 <= 152; column 11 centre 184 < 200 = column 12's
    assert valid.dtype == torch.bool and valid.shape == (16, 16)
    np.testing.assert_array_equal(valid.numpy(), expected)
    assert bool(valid_cells((16, 16), (IMG, IMG), IMG).all())  # a full-size input: no padding
    wide = valid_cells((4, 4), (30, 64), 64)  # 16 px cells on a 64 px input, 30 px high image
    np.testing.assert_array_equal(wide.numpy(), np.repeat([[True], [True], [False], [False]], 4, axis=1))


def test_centred_cells_subtract_the_mean_of_the_image_cells():
    generator = torch.Generator().manual_seed(0)
    offset = 3.0 * torch.randn(8, 1, 1, generator=generator)
    embedding = (torch.randn(1, 8, 16, 16, generator=generator) + offset).half()  # as cached: float16
    centred = centred_cells(embedding, (150, 200), IMG)
    assert centred.shape == (8, 16, 16) and centred.dtype == torch.float32
    cells = embedding[0].double().numpy()
    np.testing.assert_allclose(centred.numpy(), _centred(cells, 9, 12), rtol=0, atol=1e-5)
    # the image cells now average to ~0; the padding cells are not (they are not in the mean) ...
    np.testing.assert_allclose(centred[:, :9, :12].double().mean(dim=(1, 2)).numpy(), 0.0, atol=1e-5)
    assert float(centred[:, 9:].double().mean(dim=(1, 2)).abs().max()) > 0.1
    # ... but every cell, padding included, is shifted by the same vector: the image cells' mean
    shift = (cells - centred.double().numpy()).reshape(8, -1)
    mean = cells[:, :9, :12].mean(axis=(1, 2))
    np.testing.assert_allclose(shift, np.repeat(mean[:, None], 256, axis=1), rtol=0, atol=1e-5)
    np.testing.assert_allclose(shift[:, 0], offset.flatten().double().numpy(), atol=0.5)  # ~ the offset
    torch.testing.assert_close(centred_cells(embedding[0], (150, 200), IMG), centred)  # C x h x w too
    full = centred_cells(embedding, (IMG, IMG), IMG)  # a full-size input: the mean of every cell
    np.testing.assert_allclose(full.double().mean(dim=(1, 2)).numpy(), 0.0, atol=1e-5)


def test_a_constant_offset_of_every_cell_changes_neither_the_prototype_nor_the_similarity():
    generator = torch.Generator().manual_seed(1)
    embedding = torch.randn(1, 8, 16, 16, generator=generator)
    shifted = embedding + 20.0 * torch.randn(1, 8, 1, 1, generator=generator)  # what every cell shares
    weights = np.zeros((16, 16))
    weights[2:5, 3:7] = 1.0
    weights[5, 3:7] = 0.5
    prototype = TargetPrototype.from_cells([(embedding, weights, (150, 200))], img_size=IMG)
    moved = TargetPrototype.from_cells([(shifted, weights, (150, 200))], img_size=IMG)
    torch.testing.assert_close(moved.vector, prototype.vector, rtol=0, atol=1e-5)
    similarity = prototype.similarity(embedding, (150, 200), IMG)
    torch.testing.assert_close(prototype.similarity(shifted, (150, 200), IMG), similarity, rtol=0, atol=1e-5)
    assert float(similarity.max()) > 0.5 and float(similarity.min()) < -0.2  # a map with contrast
    # without centring the offset would dominate: raw cosines nearly equal everywhere
    raw = _cosine(shifted[0].double().numpy(), prototype.vector.double().numpy())
    assert np.abs(raw - similarity.numpy()).max() > 0.3


# ---------------------------------------------------------------- averaging


def test_from_cells_is_the_normalised_mean_of_each_masks_centred_mean():
    rng = np.random.default_rng(0)
    generator = torch.Generator().manual_seed(0)
    offset = 2.0 * torch.randn(1, 8, 1, 1, generator=generator)
    embeddings = [torch.randn(1, 8, 4, 4, generator=generator) + offset for _ in range(3)]
    weights = [rng.uniform(0, 1, (4, 4)) * (rng.uniform(0, 1, (4, 4)) > 0.4) for _ in range(2)]
    weights.append(np.zeros((4, 4)))  # a mask that covers no cell is left out
    # 16 px cells on a 64 px input: all 4 x 4 cells on the image; 3 x 2 (centres 8, 24, 40 < 48; 8, 24 < 30)
    sizes, blocks = [(64, 64), (48, 30), (64, 64)], [(4, 4), (3, 2)]
    prototype = TargetPrototype.from_cells(
        zip(embeddings, weights, sizes, strict=True), img_size=64, encoder="enc", task="plates"
    )
    means, raw = [], []
    for embedding, w, (rows, cols) in zip(embeddings[:2], weights[:2], blocks, strict=True):
        cells = embedding[0].numpy().astype(np.float64)  # C x h x w
        means.append((_centred(cells, rows, cols) * w).sum(axis=(1, 2)) / w.sum())
        raw.append((cells * w).sum(axis=(1, 2)) / w.sum())
    expected = _unit(np.mean(means, axis=0))
    np.testing.assert_allclose(prototype.vector.numpy(), expected, rtol=0, atol=1e-6)
    assert np.abs(_unit(np.mean(raw, axis=0)) - expected).max() > 0.1  # centring matters here
    assert prototype.vector.dtype == torch.float32 and prototype.vector.shape == (8,)
    assert abs(float(prototype.vector.norm()) - 1.0) < 1e-6
    assert (prototype.num_masks, prototype.encoder, prototype.task) == (2, "enc", "plates")


def test_from_cells_without_any_coverage_is_refused():
    with pytest.raises(PrototypeError, match="no mask covers"):
        TargetPrototype.from_cells([], img_size=64)
    with pytest.raises(PrototypeError, match="no mask covers"):
        TargetPrototype.from_cells([(torch.randn(1, 8, 4, 4), np.zeros((4, 4)), (64, 64))], img_size=64)


def _scene(seed: int, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A 192 x 256 image (scale 1 in samplm_tiny's input frame, bottom rows padded) with a yellow box
    on cell boundaries, and the box's mask."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (192, 256, 3), dtype=np.uint8)
    mask = np.zeros((192, 256), bool)
    y0, x0, y1, x1 = box
    mask[y0:y1, x0:x1] = True
    image[mask] = (220, 180, 40)
    return image, mask


def test_fit_prototype_is_the_centred_masked_mean_of_the_embedding(sam):
    boxes = [(32, 48, 96, 112), (80, 128, 112, 240)]  # multiples of 16 px: each cell in or out
    scenes = [_scene(i, box) for i, box in enumerate(boxes)]
    prototype = fit_prototype(CustomSamPredictor(sam), scenes, task="box")
    reference = CustomSamPredictor(sam)
    means, pooled, raw = [], [], []
    for (image, _mask), (y0, x0, y1, x1) in zip(scenes, boxes, strict=True):
        reference.set_image(image)
        assert tuple(reference.input_size) == (192, 256)  # image cells: rows 0-11, every column
        features = reference.features[0].double().numpy()
        box = (slice(None), slice(y0 // CELL, y1 // CELL), slice(x0 // CELL, x1 // CELL))
        cells = _centred(features, 12, 16)[box]
        means.append(cells.mean(axis=(1, 2)))
        pooled.append(cells.reshape(cells.shape[0], -1))
        raw.append(features[box].mean(axis=(1, 2)))
    expected = _unit(np.mean(means, axis=0))
    np.testing.assert_allclose(prototype.vector.numpy(), expected, rtol=0, atol=1e-5)
    # each mask weighs the same whatever its size (a pooled mean of all cells would differ)
    assert np.abs(_unit(np.concatenate(pooled, axis=1).mean(axis=1)) - expected).max() > 1e-3
    assert np.abs(_unit(np.mean(raw, axis=0)) - expected).max() > 1e-2  # and so would uncentred cells
    assert prototype.num_masks == 2 and prototype.task == "box"
    assert prototype.encoder == sam_encoder_key(sam)


def test_fit_prototype_refuses_a_mask_of_another_size(sam):
    image, mask = _scene(0, (32, 48, 96, 112))
    with pytest.raises(PrototypeError, match="reference 2") as info:
        fit_prototype(CustomSamPredictor(sam), [(image, mask), (image, mask[:100])])
    assert "(100, 256)" in str(info.value) and "(192, 256)" in str(info.value)
    with pytest.raises(PrototypeError, match="no mask covers"):
        fit_prototype(CustomSamPredictor(sam), [(image, np.zeros_like(mask))])


# ---------------------------------------------------------------- similarity


def test_similarity_peaks_at_the_cell_the_prototype_came_from(sam):
    image, _ = _scene(3, (32, 48, 96, 112))
    predictor = CustomSamPredictor(sam)
    predictor.set_image(image)
    features, input_size = predictor.features, tuple(predictor.input_size)
    assert input_size == (192, 256)  # image cells: rows 0-11
    cells = _centred(features[0].double().numpy(), 12, 16)
    for row, col in [(3, 4), (7, 11), (0, 0)]:
        one_hot = np.zeros((16, 16))
        one_hot[row, col] = 1.0
        prototype = TargetPrototype.from_cells([(features, one_hot, input_size)], img_size=IMG)
        np.testing.assert_allclose(prototype.vector.numpy(), _unit(cells[:, row, col]), atol=1e-5)
        similarity = prototype.similarity(features, input_size, IMG)
        assert similarity.shape == (16, 16) and similarity.dtype == torch.float32
        assert divmod(int(similarity.argmax()), 16) == (row, col)
        assert abs(float(similarity[row, col]) - 1.0) < 1e-5
        cosine = _cosine(cells, cells[:, row, col])  # padding cells too, centred like the others
        np.testing.assert_allclose(similarity.numpy(), cosine, rtol=0, atol=1e-5)
        assert float(similarity.min()) < 0  # centred: not every cell looks alike
        chw = prototype.similarity(features[0], input_size, IMG)  # C x h x w too
        torch.testing.assert_close(chw, similarity)
    with pytest.raises(PrototypeError, match="channels"):
        prototype.similarity(torch.randn(1, 32, 16, 16), input_size, IMG)


# ---------------------------------------------------------------- files


def test_save_and_load_round_trip(tmp_path):
    prototype = TargetPrototype(
        torch.nn.functional.normalize(torch.randn(256, generator=torch.Generator().manual_seed(0)), dim=0),
        num_masks=7,
        encoder="abc",
        task="plates",
    )
    written = prototype.save(tmp_path / "adapter")  # a directory: prototype.safetensors in it
    assert written == tmp_path / "adapter" / PROTOTYPE_NAME and written.is_file()
    with safe_open(str(written), framework="pt") as handle:
        header = json.loads(handle.metadata()[PROTOTYPE_HEADER_KEY])
    assert header["features"] == "centred" and header["format"] == "samplm-prototype"
    for source in (tmp_path / "adapter", written):
        loaded = TargetPrototype.load(source)  # re-normalised on load: equal up to rounding
        torch.testing.assert_close(loaded.vector, prototype.vector, rtol=0, atol=1e-7)
        assert (loaded.num_masks, loaded.encoder, loaded.task) == (7, "abc", "plates")
    other = prototype.save(tmp_path / "elsewhere.safetensors")  # a file path is used as given
    assert other == tmp_path / "elsewhere.safetensors"
    torch.testing.assert_close(TargetPrototype.load(other).vector, prototype.vector, rtol=0, atol=1e-7)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["adapter", "elsewhere.safetensors", PROTOTYPE_NAME]


def _header(**fields) -> dict[str, str]:
    return {PROTOTYPE_HEADER_KEY: json.dumps({"format": "samplm-prototype", "num_masks": 1, **fields})}


@pytest.mark.parametrize(
    ("write", "match"),
    [
        (lambda f: f.write_bytes(b"\x00" * 40), "is not a samplm prototype file"),
        (lambda f: f.write_bytes(np.random.default_rng(0).bytes(300)), "is not a samplm prototype file"),
        (lambda f: save_file({"prototype": torch.ones(4)}, str(f)), "is not a samplm prototype file"),
        (lambda f: save_file({"other": torch.ones(4)}, str(f), metadata=_header()), "not a samplm"),
        (
            lambda f: save_file({"prototype": torch.ones(4)}, str(f), metadata=_header(format="x")),
            "header format",
        ),
        (lambda f: save_file({"prototype": torch.zeros(4)}, str(f), metadata=_header()), "non-zero"),
        (
            lambda f: save_file({"prototype": torch.tensor([1.0, float("nan")])}, str(f), metadata=_header()),
            "finite",
        ),
        (lambda f: save_file({"prototype": torch.ones(2, 2)}, str(f), metadata=_header()), "vector"),
    ],
)
def test_unreadable_prototype_files_name_the_file(tmp_path, write, match):
    file = tmp_path / PROTOTYPE_NAME
    write(file)
    with pytest.raises(PrototypeError, match=match) as info:
        TargetPrototype.load(tmp_path)
    assert info.value.path == str(file) and str(file) in str(info.value)


def test_missing_prototype_names_the_file(tmp_path):
    with pytest.raises(PrototypeError, match="no prototype here") as info:
        TargetPrototype.load(tmp_path / "adapter")
    assert info.value.path == str(tmp_path / "adapter" / PROTOTYPE_NAME)
    assert isinstance(info.value, ValueError)


def test_check_encoder():
    vector = torch.nn.functional.normalize(torch.ones(4), dim=0)
    TargetPrototype(vector, 1, encoder="abc").check_encoder("abc")
    TargetPrototype(vector, 1, encoder=None).check_encoder("anything")  # unknown: accepted
    with pytest.raises(PrototypeError, match="abc.*xyz") as info:
        TargetPrototype(vector, 1, encoder="abc").check_encoder("xyz", "runs/plates/prototype.safetensors")
    assert info.value.path == "runs/plates/prototype.safetensors"


def test_prototype_of_another_encoder_is_recognised(sam, tiny_sam):
    image, mask = _scene(0, (32, 48, 96, 112))
    prototype = fit_prototype(CustomSamPredictor(tiny_sam), [(image, mask)])
    prototype.check_encoder(sam_encoder_key(tiny_sam))
    with pytest.raises(PrototypeError, match="fit it again"):
        prototype.check_encoder(sam_encoder_key(sam))


# ---------------------------------------------------------------- location prior (synthetic maps)


INPUT_SIZE = (150, 200)  # H', W': valid cell centres are rows 0..8, columns 0..11
VALID_ROWS, VALID_COLS = 9, 12


def _embedding_with_similarity(similarity: np.ndarray) -> tuple[torch.Tensor, TargetPrototype]:
    """A 1 x 4 x h x w embedding whose *centred* cells' cosine similarity to the returned prototype
    ``e0`` is ``similarity`` (on ``INPUT_SIZE``).

    A cell ``t e0 + u`` (``u`` a unit vector in the ``e1, e2`` plane) has cosine ``s`` to ``e0`` for
    ``t = s / sqrt(1 - s^2)``, at any positive scale. The image cells are built with a zero mean, so
    centring leaves every cell as it is: within the cells of each sign of ``s`` the ``u`` are evenly
    spread around the circle (summing to 0), and the negative cells are scaled so that the ``t`` sum to
    0. A constant offset is then added to every cell, as every cell of a real embedding shares one.
    """
    s = np.asarray(similarity, dtype=np.float64)
    t = s / np.sqrt(1 - s**2)
    cells = np.zeros((4, *s.shape))
    cells[0] = t
    valid = np.zeros(s.shape, bool)
    valid[:VALID_ROWS, :VALID_COLS] = True
    groups = [valid & (s >= 0), valid & (s < 0), ~valid]
    for group in groups:
        assert group.sum() >= 2, "each sign needs two image cells to balance"
        angles = 2 * np.pi * np.arange(group.sum()) / group.sum()
        cells[1][group], cells[2][group] = np.cos(angles), np.sin(angles)
    cells[:, groups[1]] *= t[groups[0]].sum() / -t[groups[1]].sum()
    assert np.abs(cells[:, valid].mean(axis=1)).max() < 1e-9  # already centred
    offset = np.array([0.5, -1.0, 0.7, 2.0])[:, None, None]
    embedding = torch.as_tensor(cells + offset, dtype=torch.float32)[None]
    return embedding, TargetPrototype(torch.eye(4)[0], 1)


def _similarity_map(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    similarity = rng.uniform(-0.6, 0.9, (16, 16))
    similarity[12, 3] = 0.99  # the best cell lies in the padding: never a click
    similarity[14, 14] = -0.99  # so does the worst: never a negative click
    return similarity


def _cell(xy: np.ndarray) -> tuple[int, int]:
    """(row, column) of a cell-centre click."""
    col, row = (np.asarray(xy) / CELL - 0.5).tolist()
    assert float(col).is_integer() and float(row).is_integer(), xy  # clicks are cell centres
    return int(row), int(col)


def _expected_peaks(similarity: np.ndarray, settings: PriorSettings) -> list[tuple[int, int]]:
    """Brute force: valid cells above the threshold that are the maximum of their neighbourhood."""
    valid = similarity[:VALID_ROWS, :VALID_COLS]
    threshold = max(settings.min_similarity, settings.relative * valid.max())
    r = settings.nms_radius
    peaks = []
    for row in range(VALID_ROWS):
        for col in range(VALID_COLS):
            window = valid[max(0, row - r) : row + r + 1, max(0, col - r) : col + r + 1]
            if valid[row, col] >= threshold and valid[row, col] >= window.max():
                peaks.append((row, col))
    return sorted(peaks, key=lambda rc: -similarity[rc])


def _prior(similarity: np.ndarray, **settings) -> tuple[LocationPrior, PriorSettings]:
    embedding, prototype = _embedding_with_similarity(similarity)
    config = PriorSettings(**settings)
    return location_prior(embedding, prototype, INPUT_SIZE, 256, config), config


@pytest.mark.parametrize("radius", [0, 1, 2])
def test_positives_are_sorted_local_maxima_inside_the_input_frame(radius):
    similarity = _similarity_map()
    prior, settings = _prior(
        similarity, min_similarity=0.2, relative=0.5, max_clicks=4096, nms_radius=radius, negatives=3
    )
    expected = _expected_peaks(similarity, settings)
    assert len(expected) >= 3  # the map is not trivial
    cells = [_cell(xy) for xy in prior.positives]
    assert cells == expected
    assert prior.positives.shape == (len(expected), 2)
    assert (prior.positives[:, 0] < INPUT_SIZE[1]).all() and (prior.positives[:, 1] < INPUT_SIZE[0]).all()
    np.testing.assert_allclose(prior.scores, [similarity[rc] for rc in cells], atol=1e-6)
    assert (np.diff(prior.scores) <= 0).all()
    for a, b in combinations(cells, 2):  # the NMS radius is respected
        assert max(abs(a[0] - b[0]), abs(a[1] - b[1])) > radius
    if radius == 0:  # no suppression: every valid cell above the threshold
        threshold = max(0.2, 0.5 * similarity[:VALID_ROWS, :VALID_COLS].max())
        assert len(cells) == int((similarity[:VALID_ROWS, :VALID_COLS] >= threshold).sum())
    torch.testing.assert_close(prior.similarity, torch.as_tensor(similarity, dtype=torch.float32))


def test_negatives_are_the_least_similar_valid_cells():
    similarity = _similarity_map(1)
    prior, _ = _prior(similarity, negatives=5)
    lowest = np.sort(similarity[:VALID_ROWS, :VALID_COLS], axis=None)[:5]
    got = [similarity[_cell(xy)] for xy in prior.negatives]
    np.testing.assert_allclose(sorted(got), lowest, atol=1e-6)
    assert (14, 14) not in [_cell(xy) for xy in prior.negatives]
    assert _prior(similarity, negatives=0)[0].negatives.shape == (0, 2)


def test_max_clicks_keeps_the_most_similar_peaks():
    similarity = _similarity_map(2)
    everything, _ = _prior(similarity, min_similarity=-1.0, relative=0.0, nms_radius=1, max_clicks=4096)
    assert len(everything.positives) > 3
    for k in (1, 3):
        prior, _ = _prior(similarity, min_similarity=-1.0, relative=0.0, nms_radius=1, max_clicks=k)
        np.testing.assert_array_equal(prior.positives, everything.positives[:k])
        np.testing.assert_array_equal(prior.scores, everything.scores[:k])


def test_relative_threshold_drops_weak_peaks():
    similarity = np.full((16, 16), -0.5)
    similarity[1, 1], similarity[6, 8], similarity[2, 10] = 0.9, 0.7, 0.6
    strict, _ = _prior(similarity, min_similarity=0.1, relative=0.75, nms_radius=1)
    assert [_cell(xy) for xy in strict.positives] == [(1, 1), (6, 8)]  # 0.6 < 0.75 * 0.9
    loose, _ = _prior(similarity, min_similarity=0.1, relative=0.0, nms_radius=1)
    assert [_cell(xy) for xy in loose.positives] == [(1, 1), (6, 8), (2, 10)]


def test_min_similarity_above_the_maximum_gives_no_clicks():
    similarity = _similarity_map(3)
    top = similarity[:VALID_ROWS, :VALID_COLS].max()
    prior, _ = _prior(similarity, min_similarity=float(top) + 0.01, negatives=2)
    assert prior.positives.shape == (0, 2) and prior.scores.shape == (0,)
    assert prior.negatives.shape == (2, 2)
    coords, labels = prior.prompts()
    assert coords.shape == (0, 3, 2) and labels.shape == (0, 3)


def test_prompts_pair_every_positive_with_every_negative():
    prior, _ = _prior(_similarity_map(4), min_similarity=0.0, relative=0.0, max_clicks=5, negatives=2)
    coords, labels = prior.prompts()
    k = len(prior.positives)
    assert k == 5 and coords.shape == (k, 3, 2) and labels.shape == (k, 3)
    assert coords.dtype == torch.float32 and labels.dtype == torch.int32
    np.testing.assert_array_equal(coords[:, 0].numpy(), prior.positives)
    for i in range(k):
        np.testing.assert_array_equal(coords[i, 1:].numpy(), prior.negatives)
    assert labels[:, 0].tolist() == [1] * k and (labels[:, 1:] == 0).all()


def test_tied_peaks_still_respect_the_nms_radius():
    similarity = np.full((16, 16), -0.5)
    similarity[4, 4] = similarity[4, 5] = 0.9
    prior, _ = _prior(similarity, min_similarity=0.1, nms_radius=2)
    cells = [_cell(xy) for xy in prior.positives]
    for a, b in combinations(cells, 2):
        assert max(abs(a[0] - b[0]), abs(a[1] - b[1])) > 2


# ---------------------------------------------------------------- location prior (a real image)


def test_prior_on_a_real_embedding_uses_only_the_image_cells(sam):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60, (96, 128, 3), dtype=np.uint8)  # input frame 192 x 256: 4 padded rows
    image[10:40, 10:40] = (220, 180, 40)
    mask = np.zeros(image.shape[:2], bool)
    mask[10:40, 10:40] = True
    predictor = CustomSamPredictor(sam)
    prototype = fit_prototype(predictor, [(image, mask)])
    settings = PriorSettings(min_similarity=0.0, relative=0.0, nms_radius=1, max_clicks=4096, negatives=2)
    prior = location_prior(predictor.features, prototype, tuple(predictor.input_size), 256, settings)
    similarity = prototype.similarity(predictor.features, tuple(predictor.input_size), 256).numpy()
    valid = similarity[:12]  # rows whose centres lie in the 192 px input frame
    cells = [_cell(xy) for xy in prior.positives]
    assert cells and all(row < 12 for row, _ in cells)
    assert cells[0] == divmod(int(valid.argmax()), 16)
    np.testing.assert_allclose(prior.scores, [similarity[rc] for rc in cells], atol=1e-6)
    for row, col in cells:  # each a maximum of its 3 x 3 neighbourhood among the image cells
        assert similarity[row, col] >= valid[max(0, row - 1) : row + 2, max(0, col - 1) : col + 2].max()
    negatives = sorted(similarity[_cell(xy)] for xy in prior.negatives)
    np.testing.assert_allclose(negatives, np.sort(valid, axis=None)[:2], atol=1e-6)


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("min_similarity", 1.5),
        ("min_similarity", -2.0),
        ("min_similarity", float("nan")),
        ("min_similarity", "high"),
        ("relative", -0.1),
        ("relative", 1.01),
        ("max_clicks", 0),
        ("max_clicks", 2.5),
        ("max_clicks", True),
        ("nms_radius", -1),
        ("nms_radius", 65),
        ("negatives", -1),
        ("negatives", 100),
    ],
)
def test_prior_settings_reject_bad_values(field, value):
    with pytest.raises(ConfigError, match=f"PriorSettings.{field}"):
        PriorSettings(**{field: value})


def test_prior_settings_accept_their_bounds():
    settings = PriorSettings(min_similarity=-1, relative=1, max_clicks=1, nms_radius=0, negatives=0)
    assert isinstance(settings.min_similarity, float) and settings.min_similarity == -1.0
    assert PriorSettings(min_similarity=1.0, max_clicks=4096, nms_radius=64, negatives=64).max_clicks == 4096


def test_persam_prior_clicks_the_most_and_least_similar_cells():
    from samplm.eval.click_free import PERSAM_PRIOR

    similarity = _similarity_map(5)
    embedding, prototype = _embedding_with_similarity(similarity)
    prior = location_prior(embedding, prototype, INPUT_SIZE, 256, PERSAM_PRIOR)
    image = similarity[:VALID_ROWS, :VALID_COLS]
    top = np.unravel_index(image.argmax(), image.shape)
    low = np.unravel_index(image.argmin(), image.shape)
    assert len(prior.positives) == 1 and _cell(prior.positives[0]) == tuple(int(v) for v in top)
    assert len(prior.negatives) == 1 and _cell(prior.negatives[0]) == tuple(int(v) for v in low)
