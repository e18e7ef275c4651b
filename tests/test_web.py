"""samplm's browser page (installed with the package) in a real headless Chromium: load an image, click,
read the mask.

The page runs the exported encoder and decoder graphs with onnxruntime-web (installed into
``examples/web`` by ``examples/web/setup.sh``, i.e. ``samplm web-setup --dir examples/web``, and served
from there). The browser is Debian's ``chromium`` driven by
Playwright through ``executable_path``. Without a browser or onnxruntime-web the test skips with the
reason, unless ``SAMPLM_REQUIRE_BROWSER=1`` (CI), where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samplm import CustomSamPredictor
from samplm.export.onnx import write_web_bundle
from samplm.export.web import serve_web

WEB = Path(__file__).resolve().parents[1] / "examples" / "web"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT = os.environ.get("SAMPLM_WEB_SCREENSHOT")  # where to keep the page's screenshot, if set


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright)"
    if CHROMIUM is None:
        return "no chromium on PATH (apt-get install -y chromium)"
    if not (WEB / "node_modules" / "onnxruntime-web" / "dist" / "ort.min.js").is_file():
        return "onnxruntime-web is not installed (bash examples/web/setup.sh)"
    return None


@pytest.fixture(scope="module")
def site(tmp_path_factory, sam, adapter_factory_module):
    """The packaged page, its models (samplm_tiny: plain SAM and one adapter) and a photo, served on
    loopback."""
    reason = _missing()
    if reason:
        if os.environ.get("SAMPLM_REQUIRE_BROWSER") == "1":
            pytest.fail(f"the browser test must run here: {reason}")
        pytest.skip(reason)
    models = tmp_path_factory.mktemp("web") / "models"
    write_web_bundle(sam, {"banner": adapter_factory_module, "plain": None}, models, model_type="samplm_tiny")
    image = np.zeros((150, 200, 3), np.uint8)
    image[:] = (40, 90, 40)
    image[40:110, 50:160] = (230, 200, 30)  # a banner-like block
    Image.fromarray(image).save(models / "photo.png")
    # what `samplm serve-web --models DIR --runtime examples/web` serves: the packaged page
    server = serve_web(models=models, runtime=WEB, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", image
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def adapter_factory_module():
    from conftest import make_adapter

    return make_adapter("banner", seed=3)  # random, non-identity weights


def _python_mask(sam, adapter, image, click) -> np.ndarray:
    predictor = CustomSamPredictor(sam)
    if adapter is not None:
        predictor.load_adapter(adapter)
    predictor.set_image(image)
    masks, scores, _ = predictor.predict(point_coords=[click], point_labels=[1])
    return masks[int(np.argmax(scores))]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def test_page_segments_a_click_with_each_adapter(site, sam, adapter_factory_module):
    from playwright.sync_api import sync_playwright

    url, image = site
    click = (100.0, 75.0)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(f"{url}/index.html?image=models/photo.png")
        page.wait_for_function("document.getElementById('status').textContent === 'ready'", timeout=60_000)
        results = {}
        for name, adapter in (("banner", adapter_factory_module), ("plain", None)):
            page.select_option("#adapter", label=name)
            page.evaluate("window.samplmResult = null")
            box = page.locator("#overlay").bounding_box()
            page.mouse.click(box["x"] + click[0], box["y"] + click[1])
            page.wait_for_function("window.samplmResult !== null", timeout=30_000)
            result = page.evaluate("window.samplmResult")
            mask = np.array(result["mask"], bool).reshape(result["height"], result["width"])
            assert result["adapter"] == name and result["area"] == int(mask.sum()) > 0
            # serve_web's headers isolate the page, which lets onnxruntime-web run threads
            assert result["isolated"] and result["threads"] == min(4, os.cpu_count())
            expected = _python_mask(sam, adapter, image, click)
            assert _iou(mask, expected) >= 0.9, name  # the page resizes the photo with the browser's filter
            results[name] = mask
            if SCREENSHOT and name == "banner":
                page.screenshot(path=SCREENSHOT)
        browser.close()
    assert not np.array_equal(results["banner"], results["plain"])  # switching adapters changes the answer
