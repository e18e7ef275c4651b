"""``samplm serve-web`` / :func:`samplm.web.serve_web`: the page folder is checked, then served on loopback
with the content types and headers onnxruntime-web needs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from samplm.cli import main
from samplm.web import ORT_SCRIPT, WebPageError, check_page, serve_web


def _page(root: Path, models: Path | None = None) -> Path:
    """A page folder as setup.sh and ``samplm export --web`` leave it (graph files are stand-ins: the
    server only sends bytes)."""
    page = root / "page"
    (page / ORT_SCRIPT).parent.mkdir(parents=True)
    (page / "index.html").write_text("<html>page</html>")
    (page / "app.js").write_text("// app")
    (page / ORT_SCRIPT).write_text("// ort")
    (page / ORT_SCRIPT).with_name("ort-wasm-simd-threaded.wasm").write_bytes(b"\0asm")
    models = models or page / "models"
    models.mkdir(parents=True)
    manifest = {"encoder": "encoder.onnx", "adapters": [{"name": "sam", "decoder": "sam.onnx"}]}
    (models / "models.json").write_text(json.dumps(manifest))
    (models / "encoder.onnx").write_bytes(b"encoder")
    (models / "sam.onnx").write_bytes(b"decoder")
    return page


def _get(url: str):
    """``(status, headers (case-insensitive), body)``."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, b""


@pytest.fixture()
def served(tmp_path):
    models = tmp_path / "elsewhere" / "models"
    page = _page(tmp_path, models)
    (tmp_path / "page" / "secret.txt").write_text("not under models")
    server = serve_web(page, models=models, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", page
    server.shutdown()
    server.server_close()


def test_serves_the_page_with_isolation_headers_and_wasm_type(served):
    url, _ = served
    status, headers, body = _get(f"{url}/index.html")
    assert status == 200 and body == b"<html>page</html>"
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    status, headers, body = _get(f"{url}/node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.wasm")
    assert status == 200 and headers["Content-Type"] == "application/wasm" and body == b"\0asm"
    assert _get(f"{url}/app.js")[1]["Content-Type"] == "text/javascript"


def test_models_come_from_the_models_folder_and_stay_inside_it(served):
    url, page = served
    status, _, body = _get(f"{url}/models/models.json?v=2")
    assert status == 200 and json.loads(body)["encoder"] == "encoder.onnx"
    assert _get(f"{url}/models/sam.onnx")[2] == b"decoder"
    assert not (page / "models").exists()  # served from the other folder, not the page's
    for escape in ("/models/../secret.txt", "/models/%2e%2e/secret.txt", "/models/../../page/app.js"):
        status, _, body = _get(url + escape)
        assert status == 404 and b"not under models" not in body, escape


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda p: (p / "index.html").unlink(), "index.html not found"),
        (lambda p: (p / ORT_SCRIPT).unlink(), "setup.sh"),
        (lambda p: (p / "models" / "models.json").unlink(), "samplm export --web"),
        (lambda p: (p / "models" / "sam.onnx").unlink(), r"sam.onnx \(named in"),
        (lambda p: (p / "models" / "models.json").write_text("{}"), "is not a models.json"),
    ],
)
def test_a_broken_page_is_refused_naming_the_file(tmp_path, breakage, message):
    page = _page(tmp_path)
    assert check_page(page) == page / "models"
    breakage(page)
    with pytest.raises(WebPageError, match=message):
        check_page(page)


def test_cli_reports_a_missing_page_in_one_line(tmp_path, capsys):
    assert main(["serve-web", "--page", str(tmp_path / "nowhere"), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("samplm: error:") and "index.html not found" in err and "\n" not in err


def test_cli_serves_until_interrupted(tmp_path):
    page = _page(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "samplm.cli", "serve-web", "--page", str(page), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("serving ") and "/index.html" in line, line
        url = line.split(" at ")[1].split()[0]
        assert _get(url)[2] == b"<html>page</html>"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
        assert "stopped" in process.stdout.read()
    finally:
        process.kill()
