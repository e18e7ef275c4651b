"""Evaluation protocol, SAM-F, sensitivity maps, reports and `samplm eval` on a tiny SAM."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import write_rect_dataset

from samplm import AdapterConfig, PMMConfig, PromptAdapter
from samplm.cache.embeddings import EmbeddingCache
from samplm.cli import main
from samplm.data import read_mask_folder
from samplm.eval import InstancePredictor, SamF, evaluate, run_evaluation, sensitivity_map, train_samf
from samplm.eval.methods import SAM, SAM_F, SAM_ORACLE
from samplm.eval.samf import blend_outputs
from samplm.train.losses import dice_loss, sigmoid_focal_loss
from samplm.train.training_set import TrainingSet


@pytest.fixture(scope="module")
def rects(tmp_path_factory, tiny_sam):
    root = write_rect_dataset(tmp_path_factory.mktemp("rects"), count=4, categories=("red", "blue"))
    dataset = read_mask_folder(root / "images", root / "masks")
    cache = EmbeddingCache.for_model(root / "cache", tiny_sam)
    cache.build(tiny_sam, dataset.image_paths(), progress=False)
    return root, dataset, cache


def test_samf_blend_math():
    logits = torch.stack([torch.full((2, 2), 1.0), torch.full((2, 2), 2.0), torch.full((2, 2), 4.0)])[None]
    blended = SamF(0.5, 0.25).blend(logits)
    assert blended.shape == (1, 1, 2, 2) and torch.allclose(
        blended, torch.full((1, 1, 2, 2), 0.5 + 0.5 + 1.0)
    )
    assert SamF().weights == pytest.approx((1 / 3, 1 / 3, 1 / 3))


def test_samf_blend_is_one_function_for_logits_scores_and_fitting():
    logits = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    scores = torch.tensor([[0.9, 0.5, 0.25], [0.1, 0.2, 0.3]])
    samf = SamF(0.5, 0.25)
    w1, w2, w3 = samf.weights
    assert torch.equal(samf.blend(logits), blend_outputs(logits, samf.weights))
    assert torch.allclose(samf.blend(logits)[:, 0], w1 * logits[:, 0] + w2 * logits[:, 1] + w3 * logits[:, 2])
    assert samf.blend_scores(scores).shape == (2, 1)
    assert torch.allclose(
        samf.blend_scores(scores)[:, 0], w1 * scores[:, 0] + w2 * scores[:, 1] + w3 * scores[:, 2]
    )
    weights = torch.tensor([0.5, 0.25, 0.25], requires_grad=True)  # fitting: gradients reach the weights
    blend_outputs(logits, weights).sum().backward()
    assert torch.allclose(weights.grad, logits.sum(dim=(0, 2, 3)))


def test_samf_fitting_lowers_its_objective(rects, tiny_sam):
    _, dataset, cache = rects
    data = TrainingSet(dataset, cache, tiny_sam, progress=False)
    from samplm.eval.samf import _sam_logits

    logits, targets = _sam_logits(tiny_sam, data, 100, "cpu")

    def objective(samf):
        blended = samf.blend(logits)[:, 0]
        return float((dice_loss(blended, targets[:, 0]) + sigmoid_focal_loss(blended, targets[:, 0])).mean())

    fitted = train_samf(tiny_sam, data, steps=60, progress=False)
    assert fitted != SamF()
    assert objective(fitted) < objective(SamF())


def test_identity_adapter_reproduces_sam_and_oracle_bounds(rects, tiny_sam):
    _, dataset, cache = rects
    fresh = PromptAdapter(AdapterConfig(task="fresh", pmm=PMMConfig(num_points=8)))
    result = evaluate(tiny_sam, dataset, cache, {"fresh": fresh}, samf=SamF(0.2, 0.3), progress=False)
    assert result.methods == [
        SAM,
        SAM_ORACLE,
        SAM_F,
        "fresh (PLM)",
        "fresh (PLM, oracle)",
        "fresh (PLM+PMM refine)",
    ]
    assert len(result.instances) == 8 and result.categories == ["blue", "red"]
    for record in result.instances:
        assert record.iou["fresh (PLM)"] == record.iou[SAM]  # a fresh PLM is an exact identity
        assert record.iou[SAM_ORACLE] >= record.iou[SAM]
        assert all(0.0 <= v <= 1.0 for v in record.iou.values())
        x, y = record.prompt["point"]
        inst = next(i for i in dataset if i.instance_id == record.instance_id)
        mask = inst.mask(72, 96)
        assert mask[int(y), int(x)]  # the click lies inside the object
        ys, xs = np.nonzero(mask)  # a box: clicked at its middle, not at one end of its middle line
        assert abs(x - (xs.min() + xs.max()) / 2) <= 1 and abs(y - (ys.min() + ys.max()) / 2) <= 1
    assert result.miou[SAM]["all"] == pytest.approx(np.mean([r.iou[SAM] for r in result.instances]))
    assert set(result.cross_task()) == {SAM, "fresh (PLM)"}
    assert set(result.refinement_effect()) == {"fresh"}


def test_box_prompts_have_no_samf_row(rects, tiny_sam):
    _, dataset, cache = rects
    result = evaluate(tiny_sam, dataset, cache, prompt="box", samf=SamF(), max_instances=3, progress=False)
    assert result.methods == [SAM, SAM_ORACLE] and len(result.instances) == 3
    assert "box" in result.instances[0].prompt
    with pytest.raises(ValueError, match="prompt must be"):
        evaluate(tiny_sam, dataset, cache, prompt="scribble")


def test_sensitivity_map(rects, tiny_sam):
    _, dataset, cache = rects
    inst = dataset[0]
    entry = cache.get(inst.image_path)
    gt = inst.mask(*entry.original_size)
    predictor = InstancePredictor(tiny_sam, {"fresh": PromptAdapter(AdapterConfig(task="fresh"))})
    maps = sensitivity_map(predictor, entry, gt, grid=6)
    assert maps.iou[SAM].shape == (6, 6) and maps.inside.any() and not maps.inside.all()
    np.testing.assert_array_equal(maps.iou[SAM], maps.iou["fresh (PLM)"])
    summary = maps.summary()[SAM]
    assert 0.0 <= summary["mean"] <= 1.0 and summary["std"] >= 0.0


def test_sensitivity_map_clicks_answer_as_the_predictor(rects, tiny_sam, adapter_factory):
    """Every cell of a map is the IoU of the predictor's top mask for that click, thresholded at the
    model's ``mask_threshold`` (not at 0)."""
    import copy

    from samplm import CustomSamPredictor
    from samplm.eval.metrics import iou

    sam = copy.deepcopy(tiny_sam)
    sam.mask_threshold = 0.5
    _, dataset, cache = rects
    inst = dataset[0]
    entry = cache.get(inst.image_path)
    gt = inst.mask(*entry.original_size)
    adapter = adapter_factory("a")
    maps = sensitivity_map(InstancePredictor(sam, {"a": adapter}), entry, gt, grid=3)
    predictor = CustomSamPredictor(sam)
    predictor.load_adapter(adapter, adapter_name="a")
    predictor.set_embedding(entry.embedding.float(), entry.original_size)
    for row, y in enumerate(maps.ys):
        for col, x in enumerate(maps.xs):
            masks, scores, _ = predictor.predict(point_coords=np.array([[x, y]]), point_labels=np.array([1]))
            assert maps.iou["a (PLM)"][row, col] == pytest.approx(
                iou(masks[int(np.argmax(scores))], gt), abs=1e-6
            )


@pytest.mark.parametrize("prompt", ["point", "box"])
def test_instance_predictor_answers_as_one_predict_per_adapter(rects, tiny_sam, adapter_factory, prompt):
    """SAM and every adapter answer one batched call; each row equals that adapter's own
    ``predict`` / ``predict_refined`` (the cross-task matrix is built from these rows)."""
    from samplm import CustomSamPredictor

    _, dataset, cache = rects
    adapters = {
        "a": adapter_factory("a", seed=1),
        "b": adapter_factory("b", seed=2),
        "c": adapter_factory("c", seed=3, pmm=PMMConfig(num_points=8)),
    }
    inst = dataset[1]
    entry = cache.get(inst.image_path)
    gt = inst.mask(*entry.original_size)
    if prompt == "point":
        prompts = {"point": [48.0, 36.0]}
        kwargs = {"point_coords": np.array([prompts["point"]]), "point_labels": np.array([1])}
    else:
        prompts = {"box": [20.0, 15.0, 70.0, 55.0]}
        kwargs = {"box": np.array(prompts["box"]), "multimask_output": False}
    rows = InstancePredictor(tiny_sam, adapters).predict(entry, prompts, gt)
    predictor = CustomSamPredictor(tiny_sam)
    predictor.set_embedding(entry.embedding.float(), entry.original_size, entry.input_size)
    expected = {SAM: predictor.predict(**kwargs)}
    for name, adapter in adapters.items():
        predictor.load_adapter(adapter, adapter_name=name, activate=True)
        expected[f"{name} (PLM)"] = predictor.predict(**kwargs)
    refined = predictor.predict_refined(**kwargs)
    for method, (masks, scores, _) in expected.items():
        top = int(np.argmax(scores))
        assert rows[method].score == pytest.approx(float(scores[top]), abs=1e-5)
        assert (rows[method].mask == masks[top]).mean() > 0.999
    assert (rows["c (PLM+PMM refine)"].mask == refined[0][int(np.argmax(refined[1]))]).mean() > 0.999
    assert not np.array_equal(rows["a (PLM)"].mask, rows["b (PLM)"].mask)


def test_methods_are_records_named_for_tables():
    from samplm.eval.methods import Method, oracle_method, plm_method, refined_method

    assert (SAM, SAM_ORACLE, SAM_F) == ("SAM", "SAM (oracle)", "SAM-F")
    assert (SAM.kind, SAM.adapter, SAM_F.kind) == ("top", None, "samf")
    refined = refined_method("nose (v2)")
    assert refined == "nose (v2) (PLM+PMM refine)" and refined.adapter == "nose (v2)"
    assert refined.with_kind("top") == plm_method("nose (v2)") and refined.with_kind(
        "oracle"
    ) == oracle_method("nose (v2)")
    assert json.loads(json.dumps({refined: 1})) == {"nose (v2) (PLM+PMM refine)": 1}
    with pytest.raises(ValueError, match="not a method kind of plain SAM"):
        Method("refined")


def test_run_evaluation_writes_reports(rects, tiny_sam, tmp_path, adapter_factory):
    _, dataset, cache = rects
    train_part, eval_part = dataset.split(0.5, seed=0)
    adapters = {"red": adapter_factory("red", seed=1), "blue": adapter_factory("blue", seed=2)}
    result = run_evaluation(
        tiny_sam,
        eval_part,
        cache,
        tmp_path,
        adapters=adapters,
        samf_data=train_part,
        samf_steps=10,
        sensitivity=1,
        sensitivity_grid=4,
        visuals=2,
        progress=False,
    )
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["methods"] == result.methods and SAM_F in data["methods"]
    assert set(data["cross_task"]) == {SAM, "red (PLM)", "blue (PLM)"}
    assert len(data["instances"]) == len(eval_part)
    assert len(list((tmp_path / "visuals").glob("*.png"))) == 4
    assert len(list((tmp_path / "sensitivity").glob("*.png"))) == 1
    markdown = (tmp_path / "results.md").read_text()
    assert "| method | blue | red | all | class average |" in markdown and "Cross-task" in markdown
    from PIL import Image

    panel = Image.open(next((tmp_path / "visuals").glob("worst_01_*.png")))
    assert panel.height == 256 + 22 and panel.width > 4 * 256


def test_eval_cli(capsys, tmp_path, rects, adapter_factory):
    root, _, _ = rects
    adapter_factory("red").save_pretrained(tmp_path / "red")
    base = [
        "eval",
        "--data",
        str(root / "masks"),
        "--images",
        str(root / "images"),
        "--format",
        "masks",
        "--model-type",
        "samplm_tiny",
        "--cache",
        str(tmp_path / "cache"),
    ]
    assert main([*base, "--adapter", str(tmp_path / "red")]) == 2
    assert "--out" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "o"), "--val-fraction", "0"]) == 2
    assert "evaluation split is empty" in capsys.readouterr().err
    out = tmp_path / "run"
    argv = [
        *base,
        "--out",
        str(out),
        "--adapter",
        str(tmp_path / "red"),
        "--samf-steps",
        "5",
        "--visuals",
        "1",
        "--sensitivity",
        "0",
        "--category",
        "red",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "red (PLM)" in printed and "results written to" in printed
    data = json.loads((out / "results.json").read_text())
    from samplm.eval.report import miou_table

    labels = {
        SAM: "samplm_tiny top",
        SAM_ORACLE: "samplm_tiny oracle (best of 3)",
        SAM_F: "SAM-F on samplm_tiny",
    }
    rows = [(labels.get(m, m), data["miou"][m]["all"]) for m in data["methods"]]
    assert miou_table(rows) in printed  # the Markdown table `samplm demo` prints, plain SAM named
    assert data["config"]["category"] == ["red"] and data["config"]["val_fraction"] == 0.2


def test_tables_and_pictures_name_the_base_and_say_iou(
    rects, tiny_sam, tmp_path, adapter_factory, monkeypatch
):
    """results.md and the panels call plain SAM's rows after the loaded base, panel titles say the number
    is an IoU, and sensitivity maps end with a colour bar; results.json keeps the method names."""
    from samplm.eval import report

    titles = []
    titled = report._titled
    monkeypatch.setattr(report, "_titled", lambda panel, title: titles.append(title) or titled(panel, title))
    _, dataset, cache = rects
    run_evaluation(
        tiny_sam,
        dataset.split(0.5, seed=0)[1],
        cache,
        tmp_path,
        adapters={"red": adapter_factory("red", seed=1)},
        sensitivity=1,
        sensitivity_grid=3,
        visuals=1,
        base="samplm_tiny",
        progress=False,
    )
    markdown = (tmp_path / "results.md").read_text()
    assert "| samplm_tiny top |" in markdown and "| samplm_tiny oracle (best of 3) |" in markdown
    assert "| SAM |" not in markdown and "| SAM (oracle) |" not in markdown
    assert json.loads((tmp_path / "results.json").read_text())["methods"][:2] == [SAM, SAM_ORACLE]
    assert any(t.startswith("samplm_tiny top: IoU 0.") for t in titles)
    assert any(t.startswith("red (PLM): IoU ") for t in titles)
    assert any(t.startswith("samplm_tiny top: mean IoU ") for t in titles)
    assert report.SENSITIVITY_LEGEND in titles
    assert not any(t.startswith("SAM") for t in titles)
    from PIL import Image

    drawn = np.asarray(Image.open(next((tmp_path / "sensitivity").glob("*.png"))).convert("RGB"))
    bar = report.colour_bar()
    np.testing.assert_array_equal(drawn[:, -bar.shape[1] :], bar)
    top, bottom = bar[report.TITLE_HEIGHT + 10, 20], bar[-10, 20]  # IoU 1 at the top: red; 0: blue
    assert top[0] > 100 > top[2] and bottom[2] > 100 > bottom[0]


def test_eval_and_demo_print_one_table_format():
    from pathlib import Path

    from samplm.demo import DemoResult, format_demo
    from samplm.eval.report import miou_table

    result = DemoResult("banners", "samplm_lite", 0.4, 0.7, 0.8, 0.5, 0.85, Path("a"), Path("b/results.md"))
    printed = format_demo(result)
    rows = [
        ("samplm_lite top", 0.4),
        ("samplm_lite oracle (best of 3)", 0.7),
        ("SAM-F on samplm_lite", 0.5),
        ("banner (PLM)", 0.8),
        ("banner (PLM+PMM refine)", 0.85),
    ]
    assert miou_table(rows) in printed
    assert "| samplm_lite top | 40.00 |" in printed and "| SAM |" not in printed and "SAM," not in printed
