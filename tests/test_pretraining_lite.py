"""The samplm_lite pretraining tools (``pretraining/lite``): region hierarchy, prompts, one training step."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from pretraining.lite.corpus import LOW_RES, STRIDE, View
from pretraining.lite.prompts import sample_view_prompts
from pretraining.lite.regions import (
    Hierarchy,
    anchored_levels,
    build_hierarchy,
    click_levels,
    persistence,
    persistent_ends_levels,
    persistent_levels,
    persistent_part_levels,
)


def nested_squares(size: int = 128) -> np.ndarray:
    """Grey background, a blue 64 px square, and inside it a yellow 24 px square (plus mild noise)."""
    rng = np.random.default_rng(0)
    image = np.full((size, size, 3), 128, np.float64)
    image[32:96, 32:96] = (30, 60, 200)
    image[52:76, 52:76] = (240, 220, 30)
    image += rng.normal(0, 3, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def square_features(size: int = 128) -> np.ndarray:
    """Stand-in trunk features (``2 x 8 x 8``): the outer square differs from the background."""
    feats = np.zeros((2, 8, 8), np.float32)
    feats[0, 2:6, 2:6] = 1.0
    feats[1] = 1.0 - feats[0]
    return feats


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_hierarchy_chains_are_nested_and_find_both_squares():
    image = nested_squares()
    h = build_hierarchy(image, square_features(), (32, 32), scale=50, min_size=10)
    inner = np.zeros((32, 32), bool)
    inner[13:19, 13:19] = True
    outer = np.zeros((32, 32), bool)
    outer[8:24, 8:24] = True
    chain = h.chain(16, 16)
    masks = [h.mask(r) for r in chain]
    for small, large in itertools.pairwise(masks):
        assert not (small & ~large).any()  # every region lies inside its parent
    assert masks[-1].all()  # the root covers the image
    assert max(iou(m, inner) for m in masks) > 0.8
    assert max(iou(m, outer) for m in masks) > 0.8
    levels = click_levels(h, 16, 16, min_area=4, max_area=0.8 * 32 * 32)
    areas = [h.area[r] for r in levels]
    assert areas == sorted(areas) and len(set(areas)) == len(areas)
    assert max(iou(h.mask(r), outer) for r in levels) > 0.8


def chain_hierarchy(areas: list[float], levels: list[float]) -> Hierarchy:
    """A hand-built hierarchy that is one chain: region ``i`` merges into ``i + 1`` (a 1 x 1 leaf map;
    only areas, parents and merge levels matter to the answer rules)."""
    n = len(areas)
    return Hierarchy(
        leaves=np.zeros((1, 1), np.int32),
        members=[np.array([0])] * n,
        parent=np.array([*range(1, n), -1]),
        area=np.array(areas, np.float64),
        level=np.array(levels, np.float64),
    )


def test_persistent_answers_pick_the_region_that_survives_longest_in_each_half_of_the_chain():
    # areas double along the chain; region 1 and region 4 are formed early and merged late
    h = chain_hierarchy([10, 20, 40, 80, 160, 320, 640], [9.0, 8.9, 5.0, 4.9, 4.8, 1.0, 0.9])
    assert persistence(h, 1) == pytest.approx(3.9) and persistence(h, 4) == pytest.approx(3.8)
    assert persistence(h, 6) == 0.0  # the root never merges
    assert persistent_levels(h, 0, 0, min_area=5, max_area=700) == [1, 4, 6]
    # the area rule takes the smallest, the log-area middle and the largest instead
    assert click_levels(h, 0, 0, min_area=5, max_area=700) == [0, 3, 6]
    # regions outside the area range are never answers; short chains are returned whole
    assert persistent_levels(h, 0, 0, min_area=15, max_area=300) == [1, 3, 4]
    assert persistent_levels(h, 0, 0, min_area=150, max_area=400) == [4, 5]


def test_anchored_answers_keep_the_area_rules_ends_and_put_the_most_persistent_region_between():
    # regions 2 and 4 are formed early and merged late; the area rule's middle is region 3
    h = chain_hierarchy([10, 20, 40, 80, 160, 320, 640], [9.0, 8.9, 8.8, 4.9, 4.8, 1.0, 0.9])
    assert click_levels(h, 0, 0, min_area=5, max_area=700) == [0, 3, 6]
    assert persistent_levels(h, 0, 0, min_area=5, max_area=700) == [2, 4, 6]
    assert anchored_levels(h, 0, 0, min_area=5, max_area=700) == [0, 2, 6]
    assert anchored_levels(h, 0, 0, min_area=30, max_area=700) == [2, 4, 6]  # 2 is now the smallest
    assert anchored_levels(h, 0, 0, min_area=5, max_area=30) == click_levels(h, 0, 0, 5, 30) == [0, 1]


def test_persistent_ends_answers_are_the_two_persistent_regions_and_the_log_area_middle_between():
    # regions 1 and 6 are formed early and merged late, one in each half of the chain
    areas = [10, 20, 30, 40, 90, 160, 320, 640, 1000]
    h = chain_hierarchy(areas, [9.0, 8.9, 5.0, 4.9, 4.8, 4.7, 4.6, 1.0, 0.9])
    assert persistent_levels(h, 0, 0, min_area=5, max_area=2000)[:2] == [1, 6]
    # between 20 and 320 px the log-area middle is 80 px: region 4 (90 px); the largest is not an answer
    assert persistent_ends_levels(h, 0, 0, min_area=5, max_area=2000) == [1, 4, 6]
    # when the two persistent regions are neighbours in the chain there is nothing between them
    h = chain_hierarchy([10, 20, 40, 80, 160, 320, 640], [9.0, 8.95, 8.9, 5.0, 1.0, 0.95, 0.9])
    assert persistent_ends_levels(h, 0, 0, min_area=5, max_area=700) == [2, 3]
    # short chains within the area range are returned whole, as by the other rules
    assert persistent_ends_levels(h, 0, 0, min_area=150, max_area=400) == [4, 5]


def test_persistent_part_answers_are_the_persistent_part_the_largest_and_the_log_area_middle_between():
    areas = [10, 20, 30, 40, 90, 160, 320, 640, 1000]
    h = chain_hierarchy(areas, [9.0, 8.9, 5.0, 4.9, 4.8, 4.7, 4.6, 1.0, 0.9])
    # region 1 is the lower half's most persistent; between 20 and 1,000 px the log-area middle is
    # 141 px: region 5 (160 px); the area rule starts from the smallest region instead
    assert persistent_part_levels(h, 0, 0, min_area=5, max_area=2000) == [1, 5, 8]
    assert click_levels(h, 0, 0, min_area=5, max_area=2000)[0] == 0
    # the largest region is the one within the area range
    assert persistent_part_levels(h, 0, 0, min_area=5, max_area=700) == [1, 4, 7]
    assert persistent_part_levels(h, 0, 0, min_area=150, max_area=400) == [5, 6]


def test_persistent_answers_on_a_photo_like_image_are_nested_and_find_both_squares():
    h = build_hierarchy(nested_squares(), square_features(), (32, 32), scale=5, min_size=2)
    inner = np.zeros((32, 32), bool)
    inner[13:19, 13:19] = True
    outer = np.zeros((32, 32), bool)
    outer[8:24, 8:24] = True
    levels = persistent_levels(h, 16, 16, min_area=4, max_area=0.8 * 32 * 32)
    masks = [h.mask(r) for r in levels]
    assert len(masks) == 3
    for small, large in itertools.pairwise(masks):
        assert not (small & ~large).any() and small.sum() < large.sum()
    assert iou(masks[1], inner) > 0.9 and iou(masks[2], outer) > 0.8


def test_view_prompts_have_three_nested_targets_and_boxes_inside_the_frame():
    image = nested_squares()
    h = build_hierarchy(image, square_features(), (32, 32), scale=50, min_size=10)
    view = View(features=[], size=(32, 32), hierarchy=h, objects=[])
    prompts = sample_view_prompts(view, np.random.default_rng(0), clicks=6, boxes=3)
    assert prompts.click_targets.shape[1:] == (3, LOW_RES, LOW_RES)
    assert len(prompts.clicks) == len(prompts.click_targets) > 0
    t = prompts.click_targets.bool()
    assert not (t[:, 0] & ~t[:, 1]).any() and not (t[:, 1] & ~t[:, 2]).any()
    assert not t[:, :, 32:, :].any() and not t[:, :, :, 32:].any()  # only inside the view
    assert prompts.boxes.shape[1] == 4 and (prompts.boxes >= 0).all() and (prompts.boxes <= 512).all()


def test_one_training_step_reduces_the_loss_on_a_fixed_batch():
    from pretraining.lite.train import embed, trainable, view_loss
    from samplm.base import build_sam_lite_architecture

    torch.manual_seed(0)
    sam = build_sam_lite_architecture()
    image = nested_squares()
    h = build_hierarchy(image, square_features(), (32, 32), scale=50, min_size=10)
    features = [torch.randn(40, 64, 64), torch.randn(112, 32, 32), torch.randn(320, 16, 16)]
    view = View(features=[f.half() for f in features], size=(32, 32), hierarchy=h, objects=[])
    prompts = sample_view_prompts(view, np.random.default_rng(1), clicks=4, boxes=2)
    opt = torch.optim.AdamW(trainable(sam), lr=1e-3)
    losses = []
    for _ in range(4):
        loss = view_loss(sam, embed(sam, [view]), prompts)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    assert all(p.grad is None for p in sam.image_encoder.trunk.parameters())  # trunk frozen


def test_a_continued_run_keeps_the_earlier_log(tmp_path):
    import json

    from pretraining.lite.train import previous_log

    weights = tmp_path / "stage1.safetensors"
    assert previous_log(None) is None and previous_log(weights) is None  # no log beside the weights
    (tmp_path / "stage1.log.json").write_text(
        json.dumps({"steps": 1580, "final": {"plates": {"oracle": 39.6}}})
    )
    assert previous_log(weights)["final"]["plates"]["oracle"] == 39.6


def lite_and_view() -> tuple:
    """An untrained ``samplm_lite`` (seeded) and one view of nested squares with random cached features."""
    from samplm.base import build_sam_lite_architecture

    torch.manual_seed(0)
    sam = build_sam_lite_architecture()
    h = build_hierarchy(nested_squares(), square_features(), (32, 32), scale=50, min_size=10)
    features = [torch.randn(40, 64, 64), torch.randn(112, 32, 32), torch.randn(320, 16, 16)]
    return sam, View(features=[f.half() for f in features], size=(32, 32), hierarchy=h, objects=[])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_training_step_runs_on_the_gpu_from_cpu_features_and_prompts():
    from pretraining.lite.train import embed, view_loss

    sam, view = lite_and_view()
    prompts = sample_view_prompts(view, np.random.default_rng(1), clicks=4, boxes=2)
    cpu_loss = view_loss(sam, embed(sam, [view]), prompts)
    gpu_loss = view_loss(sam.cuda(), embed(sam, [view]), prompts)  # views and prompts stay on the CPU
    assert gpu_loss.device.type == "cuda"
    assert float(gpu_loss) == pytest.approx(float(cpu_loss), rel=1e-3)


def test_feature_cut_finds_the_object_whose_features_differ_and_snaps_it_to_leaves():
    from pretraining.lite.feature_cut import feature_objects, object_at, spectral_embedding

    rng = np.random.default_rng(0)
    features = rng.normal(0.0, 0.05, (4, 8, 8)).astype(np.float32)
    features[0, 2:6, 2:6] += 1.0  # an object: cells unlike the background's
    features[1] += 1.0
    features[1, 2:6, 2:6] -= 1.0
    embedding = spectral_embedding(features, 1)
    inside = np.zeros((8, 8), bool)
    inside[2:6, 2:6] = True
    values = embedding[:, 0].reshape(8, 8)
    assert values[inside].max() < values[~inside].min() or values[inside].min() > values[~inside].max()
    leaves = np.zeros((32, 32), np.int32)  # leaves at 4x the grid; one leaf is the object, shifted 1 px
    leaves[9:25, 9:25] = 1
    objects = feature_objects(features, leaves, k=2)
    found = object_at(objects, 16, 16)
    assert found.sum() == 16 * 16 and found[9:25, 9:25].all()  # the leaf's outline, not the grid's
    assert not object_at(objects, 0, 0)[found].any()


def test_cluster_objects_on_a_wider_shared_embedding_matches_the_cut_for_each_k():
    from pretraining.lite.feature_cut import cluster_objects, feature_objects, spectral_embedding

    rng = np.random.default_rng(1)
    features = rng.normal(0.0, 0.05, (6, 8, 8)).astype(np.float32)
    features[0, :4, :4] += 1.0
    features[1, 4:, 4:] += 1.0
    features[2, :4, 4:] += 1.0
    leaves = np.arange(32 * 32, dtype=np.int32).reshape(32, 32) // 4  # one leaf per 4 pixels of a row
    shared = spectral_embedding(features, 5)
    for k in (2, 3, 4):
        alone = feature_objects(features, leaves, k)
        assert np.array_equal(cluster_objects(shared, (8, 8), leaves, k), alone)
    assert len(np.unique(feature_objects(features, leaves, 4))) >= 4  # three blocks and the rest


def test_package_photos_lists_only_installed_files_with_source_and_licence(tmp_path, monkeypatch):
    from pretraining.lite import package_photos as pp

    monkeypatch.setattr(pp, "MATE_NATURE", tmp_path / "mate")
    monkeypatch.setattr(pp, "KDE_WALLPAPERS", tmp_path / "kde")
    (tmp_path / "mate").mkdir()
    (tmp_path / "mate" / "LadyBird.jpg").write_bytes(b"x")
    (tmp_path / "mate" / "Elephants.jpg").write_bytes(b"x")  # not a listed photo
    python_only = pp.package_photos(debian=False)
    assert [p.path.name for p in python_only][-1] == "grace_hopper.jpg"  # matplotlib's, after skimage's
    assert all(p.path.is_file() and p.licence for p in python_only)
    with_debian = pp.package_photos(debian=True)
    assert with_debian[: len(python_only)] == python_only
    assert [p.path.name for p in with_debian[len(python_only) :]] == ["LadyBird.jpg"]
    assert with_debian[-1].as_log() == {
        "path": str(tmp_path / "mate" / "LadyBird.jpg"),
        "package": "mate-backgrounds (Debian)",
        "licence": "GPL-2+",
    }


def _square(size: int, lo: int, hi: int) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[lo:hi, lo:hi] = True
    return mask


def test_the_feature_cut_object_becomes_the_largest_answer_only_when_it_is_larger():
    from pretraining.lite.feature_cut import with_object

    small, middle, large = _square(32, 14, 18), _square(32, 10, 22), _square(32, 0, 30)
    obj = _square(32, 6, 26)
    answers = with_object([small, middle, large], obj, 4, 900)
    assert len(answers) == 3 and answers[2] is obj and answers[1] is middle  # the third answer's place
    assert with_object([small, middle], obj, 4, 900)[2] is obj  # a short chain gains it
    assert with_object([small, large], obj, 4, 900)[1] is large  # not above the two smallest: unchanged
    assert with_object([small, middle, large], obj, 4, 300)[2] is large  # outside the area range


def test_view_prompts_take_the_cut_object_as_the_large_target_for_clicks_inside_it():
    image = nested_squares()
    h = build_hierarchy(image, square_features(), (32, 32), scale=50, min_size=10)
    cut = _square(32, 6, 26).astype(np.int32)  # object 1: the outer square and a 2 px margin
    view = View(features=[], size=(32, 32), hierarchy=h, objects=[], cut=cut)
    prompts = sample_view_prompts(view, np.random.default_rng(0), clicks=12, boxes=0)
    xy = (prompts.clicks[:, 0] / STRIDE).long()  # low-res pixels
    inside = torch.from_numpy(_square(32, 8, 24))[xy[:, 1], xy[:, 0]]  # clicks on the outer square
    assert inside.any()
    large = prompts.click_targets[inside, 2].bool()
    assert (large[:, :32, :32] == torch.from_numpy(cut == 1)).all()  # the cut object, whole
    plain = sample_view_prompts(
        View(features=[], size=(32, 32), hierarchy=h, objects=[]), np.random.default_rng(0), 12, 0
    )
    assert not (plain.click_targets[inside, 2].bool()[:, :32, :32] == torch.from_numpy(cut == 1)).all()


def test_view_prompts_with_persistent_answers_take_those_regions_as_click_targets():
    from pretraining.lite.prompts import MAX_AREA, MIN_AREA

    h = build_hierarchy(nested_squares(), square_features(), (32, 32), scale=5, min_size=2)
    view = View(features=[], size=(32, 32), hierarchy=h, objects=[], answers="persistent")
    prompts = sample_view_prompts(view, np.random.default_rng(0), 12, 0)
    assert len(prompts.clicks) > 0
    differs = False
    for (x, y), targets in zip(
        (prompts.clicks[:, 0] / STRIDE).long().tolist(), prompts.click_targets, strict=True
    ):
        chosen = persistent_levels(h, y, x, MIN_AREA * 1024, MAX_AREA * 1024)
        by_area = click_levels(h, y, x, MIN_AREA * 1024, MAX_AREA * 1024)
        differs |= chosen != by_area
        got = targets.bool()[:, :32, :32].numpy()
        assert (got[0] == h.mask(chosen[0])).all() and (got[2] == h.mask(chosen[-1])).all()
        if len(chosen) == 3:
            assert (got[1] == h.mask(chosen[1])).all()
    assert differs  # the two rules disagree on some of these clicks


def test_the_last_stages_recompute_the_stride_32_map_from_the_cached_stride_16_map():
    from pretraining.lite.backbone import last_stages
    from pretraining.lite.corpus import trunk_features
    from pretraining.lite.train import embed, param_groups
    from samplm.base import build_sam_lite_architecture

    torch.manual_seed(0)
    sam = build_sam_lite_architecture().eval()
    image = np.repeat(np.repeat(nested_squares(), 4, 0), 4, 1)  # 512 x 512
    with torch.no_grad():
        view = View(trunk_features(sam.image_encoder.trunk, image), (128, 128), None, [])
        cached, recomputed = embed(sam, [view]), embed(sam, [view], train_last_stages=True)
    assert torch.allclose(cached, recomputed, atol=0.05)  # same map (the cache holds float16)
    assert not torch.equal(cached, recomputed)  # but recomputed, not read
    groups = param_groups(sam, train_last_stages=True, trunk_lr_scale=0.1)
    assert [g["lr_scale"] for g in groups] == [1.0, 0.1]
    stage_ids = {id(p) for p in last_stages(sam.image_encoder.trunk).parameters()}
    assert {id(p) for p in groups[1]["params"]} == stage_ids


@pytest.mark.parametrize("scale", [0.0, 0.1])
def test_a_step_with_the_last_stages_moves_only_their_weights_at_their_scaled_rate(scale):
    from pretraining.lite.train import parse_args, train_loop

    sam, view = lite_and_view()
    sam.train()  # the loop itself must put the trunk in eval mode
    args = parse_args(
        ["--out", "unused.safetensors", "--seed", "0", "--lr", "1e-3", "--train-last-stages",
         "--trunk-lr-scale", str(scale), "--minutes", "1", "--max-steps", "1", "--views", "1",
         "--clicks", "4", "--boxes", "2", "--evals", "0"]
    )  # fmt: skip
    trunk = sam.image_encoder.trunk
    before = {k: v.clone() for k, v in trunk.state_dict().items()}
    neck_before = [p.detach().clone() for p in sam.image_encoder.neck.parameters()]
    log = {"loss": []}
    train_loop(sam, [view], args, log, evaluate=None)
    assert log["steps"] == 1
    neck_after = sam.image_encoder.neck.parameters()
    assert any(not torch.equal(a, b) for a, b in zip(neck_before, neck_after, strict=True))
    changed = {k for k, v in trunk.state_dict().items() if not torch.equal(before[k], v)}
    if scale == 0:
        assert not changed  # the trunk's group follows --trunk-lr-scale
    else:
        assert changed and all(k.startswith(("blocks.5.", "blocks.6.")) for k in changed)
        assert not any("running_" in k or "num_batches" in k for k in changed)  # batch-norm statistics stay


def test_each_check_on_the_way_is_saved_with_a_log_that_holds_it():
    from pretraining.lite.train import parse_args, train_loop

    sam, view = lite_and_view()
    args = parse_args(
        ["--out", "unused.safetensors", "--max-steps", "3", "--views", "1", "--clicks", "2", "--boxes", "1",
         "--evals", "3"]
    )  # fmt: skip
    log, saved = {"loss": [], "evals": []}, []
    checks = iter(range(10))
    train_loop(
        sam, [view], args, log, lambda: {"check": next(checks)}, save=lambda: saved.append(list(log["evals"]))
    )
    assert [e["step"] for e in log["evals"]] == [1, 2]  # the caller makes the third, at the end
    assert saved == [log["evals"][:1], log["evals"][:2]]


def test_keep_checks_keeps_each_checks_weights_and_log_beside_the_latest(tmp_path):
    import json

    from pretraining.lite.train import parse_args, save_check, train_loop
    from samplm.base.loading import load_state_dict

    sam, view = lite_and_view()
    out = tmp_path / "samplm_lite.safetensors"
    argv = ["--out", str(out), "--max-steps", "3", "--views", "1", "--clicks", "2", "--boxes", "1",
            "--evals", "3"]  # fmt: skip
    log, states = {"loss": [], "evals": []}, {}

    def save() -> None:
        save_check(sam, args, log)
        states[log["evals"][-1]["step"]] = {k: v.detach().half().clone() for k, v in sam.state_dict().items()}

    args = parse_args([*argv, "--keep-checks"])
    train_loop(sam, [view], args, log, lambda: {"plates": {}}, save=save)
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == [
        "samplm_lite.safetensors", "samplm_lite.step1.safetensors", "samplm_lite.step2.safetensors"
    ]  # fmt: skip
    for step in (1, 2):
        kept = load_state_dict(tmp_path / f"samplm_lite.step{step}.safetensors")
        assert all(torch.equal(kept[k], v) for k, v in states[step].items())
        kept_log = json.loads((tmp_path / f"samplm_lite.step{step}.log.json").read_text())
        assert kept_log["partial"] and kept_log["steps"] == step and len(kept_log["evals"]) == step
    assert any(not torch.equal(v, states[2][k]) for k, v in states[1].items())  # two different checks
    assert json.loads(out.with_suffix(".log.json").read_text())["steps"] == 2  # the latest check

    other = tmp_path / "plain"
    other.mkdir()
    args = parse_args([*argv[:1], str(other / "samplm_lite.safetensors"), *argv[2:]])
    log = {"loss": [], "evals": []}
    train_loop(sam, [view], args, log, lambda: {}, save=lambda: save_check(sam, args, log))
    assert [p.name for p in other.glob("*.safetensors")] == ["samplm_lite.safetensors"]


def test_a_run_from_a_photo_folder_without_checks_reads_no_data(tmp_path):
    from argparse import Namespace

    from PIL import Image

    from pretraining.lite.train import car_photos

    for name in ("b", "a"):
        Image.fromarray(nested_squares()).save(tmp_path / f"{name}.png")
    args = Namespace(photos=tmp_path, data=tmp_path / "absent", evals=0, limit_photos=0, eval_plates=40)
    photos, checks = car_photos(args)
    assert photos == [tmp_path / "a.png", tmp_path / "b.png"] and checks == {}
    args.limit_photos = 1
    assert car_photos(args)[0] == [tmp_path / "a.png"]
    with pytest.raises(SystemExit, match="--photos .*no image files"):
        car_photos(Namespace(**{**vars(args), "photos": tmp_path / "absent"}))


def test_pseudo_labels_built_in_worker_processes_equal_those_built_in_one(tmp_path):
    from PIL import Image

    from pretraining.lite.corpus import build_corpus
    from samplm.base.lite_encoder import build_trunk

    rng = np.random.default_rng(0)
    paths = []
    for i in range(2):
        photo = np.repeat(np.repeat(nested_squares(), 2, 0), 3, 1)
        photo = np.clip(photo.astype(int) + rng.integers(-20, 20, 3), 0, 255).astype(np.uint8)
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(photo).save(paths[-1])
    torch.manual_seed(0)
    trunk = build_trunk()
    one = build_corpus(trunk, paths, seed=0, crops=1, scenes=0, object_k=2, progress=False)
    two = build_corpus(trunk, paths, seed=0, crops=1, scenes=0, object_k=2, progress=False, workers=2)
    assert len(one) == len(two) == 4
    for a, b in zip(one, two, strict=True):
        assert a.size == b.size
        assert all(torch.equal(x, y) for x, y in zip(a.features, b.features, strict=True))
        assert np.array_equal(a.hierarchy.leaves, b.hierarchy.leaves)
        assert np.array_equal(a.hierarchy.area, b.hierarchy.area)
        assert np.array_equal(a.hierarchy.parent, b.hierarchy.parent)
        members = zip(a.hierarchy.members, b.hierarchy.members, strict=True)
        assert all(np.array_equal(x, y) for x, y in members)
        assert np.array_equal(a.cut, b.cut)


def test_answers_on_general_keeps_the_area_rule_on_the_car_photos(tmp_path, monkeypatch):
    from PIL import Image

    from pretraining.lite import train
    from pretraining.lite.package_photos import PackagePhoto
    from samplm.base.lite_encoder import build_trunk

    photo = np.repeat(np.repeat(nested_squares(), 2, 0), 3, 1)
    for name in ("car.png", "general.png"):
        Image.fromarray(photo).save(tmp_path / name)
    general = [PackagePhoto(tmp_path / "general.png", "test", "CC0")]
    monkeypatch.setattr(train, "package_photos", lambda debian: general)
    torch.manual_seed(0)
    trunk = build_trunk()
    for answers_on, car_rule in (("all", "anchored"), ("general", "area")):
        rule = ["--answers", "anchored", "--answers-on", answers_on]
        args = train.parse_args(
            ["--out", str(tmp_path / "w.safetensors"), *rule, "--crops", "0", "--scenes", "0"]
        )
        views, entry = train.training_views(trunk, [tmp_path / "car.png"], args)
        # the car photo's one view, then the general photo's full view and 8 crops
        assert [v.answers for v in views] == [car_rule] + ["anchored"] * 9
        assert entry["views"] == 10


def test_exported_photos_keep_their_pixels_and_their_order(tmp_path):
    from PIL import Image

    from pretraining.lite.export_photos import export_photos
    from samplm.data.images import find_images, load_image

    rng = np.random.default_rng(0)
    sources = []
    for name in ("zebra", "apple", "mango"):  # a split's order is not the names' order
        sources.append(tmp_path / "src" / f"{name}.png")
        sources[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(sources[-1])
    written = export_photos(sources, tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="not empty"):
        export_photos(sources, tmp_path / "out", progress=False)  # stale photos would be trained on
    assert find_images(tmp_path / "out") == written
    for src, out in zip(sources, written, strict=True):
        assert out.suffix == ".webp" and src.stem in out.name
        assert np.array_equal(load_image(out), load_image(src))


def test_a_blend_lies_on_the_line_between_two_weight_files_and_keeps_both_logs(tmp_path):
    import json

    from pretraining.lite import blend
    from pretraining.lite.train import save_state
    from samplm.base.loading import load_state_dict

    torch.manual_seed(0)
    a = {"w": torch.randn(3, 4), "bn.running_var": torch.rand(4) + 0.5}
    b = {"w": torch.randn(3, 4), "bn.running_var": a["bn.running_var"].clone()}
    save_state(a, tmp_path / "a.safetensors", {"run": "a"})
    save_state(b, tmp_path / "b.safetensors", {"run": "b"})
    out = tmp_path / "blend" / "m.safetensors"
    blend.main(
        [str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"), "--t", "0.25", "--out", str(out)]
    )
    got = load_state_dict(out)
    want = 0.75 * a["w"].half().float() + 0.25 * b["w"].half().float()
    assert torch.allclose(got["w"].float(), want, atol=2e-3)
    assert torch.equal(got["bn.running_var"], a["bn.running_var"].half())
    log = json.loads(out.with_suffix(".log.json").read_text())
    assert log["blend"]["t"] == 0.25 and log["a_log"] == {"run": "a"} and log["b_log"] == {"run": "b"}
    with pytest.raises(ValueError, match="w: shapes"):
        blend.blend_states(a, {**b, "w": torch.zeros(4, 3)}, 0.5)
    with pytest.raises(SystemExit):
        blend.parse_args(["x", "y", "--t", "1.5", "--out", "z"])


def test_a_blend_logs_the_runs_checks_made_on_the_weights_it_saved(tmp_path):
    import json

    from conftest import write_rect_dataset, write_voc_plates

    from pretraining.lite import blend
    from pretraining.lite.evaluate import centre_click_miou, items_of, perseg_items, plate_split
    from pretraining.lite.train import save_state
    from samplm.base.lite import build_sam_lite_architecture

    write_voc_plates(tmp_path / "data" / "car_license_plate_andrewmvd", count=4)
    perseg = write_rect_dataset(tmp_path / "rects", count=2, categories=("a", "b"))
    (tmp_path / "data" / "perseg_persam_examples").mkdir()
    (perseg / "images").rename(tmp_path / "data" / "perseg_persam_examples" / "Images")
    (perseg / "masks").rename(tmp_path / "data" / "perseg_persam_examples" / "Annotations")
    torch.manual_seed(0)
    for name in ("a", "b"):
        save_state(build_sam_lite_architecture().state_dict(), tmp_path / f"{name}.safetensors", {})
    out = tmp_path / "blend.safetensors"
    args = [str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"), "--t", "0.5", "--out", str(out)]
    blend.main([*args, "--data", str(tmp_path / "data")])
    logged = json.loads(out.with_suffix(".log.json").read_text())["final"]
    saved = build_sam_lite_architecture()  # the weights as the file holds them, loaded as samplm loads them
    saved.load_state_dict({k: v.float() for k, v in blend.load_state_dict(out).items()})
    data = tmp_path / "data"
    assert logged["plates"] == centre_click_miou(
        saved.eval(), items_of(plate_split(data / "car_license_plate_andrewmvd")[1], 40)
    )
    assert logged["perseg"] == centre_click_miou(saved, perseg_items(data / "perseg_persam_examples"))
    assert len(perseg_items(data / "perseg_persam_examples")) == 4
