"""``samplm serve-web`` / :func:`samplm.export.web.serve_web`: the page folder is checked, then served
on loopback with the content types and headers onnxruntime-web needs."""

from __future__ import annotations

import http.server
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from samplm.cli import main
from samplm.export.web import ORT_SCRIPT, PageRequestHandler, WebPageError, check_page, serve_web


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
    """The page with its models in another folder, a decoy ``page/models`` and a file outside both."""
    models = tmp_path / "elsewhere" / "models"
    page = _page(tmp_path, models)
    (page / "models").mkdir()
    (page / "models" / "sam.onnx").write_bytes(b"decoy")
    (tmp_path / "secret.txt").write_text("outside the page and the models")
    server = serve_web(page, models=models, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", page
    server.shutdown()
    server.server_close()


def test_serves_the_page_with_isolation_headers(served):
    url, _ = served
    status, headers, body = _get(f"{url}/index.html")
    assert status == 200 and body == b"<html>page</html>"
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    status, headers, body = _get(f"{url}/node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.wasm")
    assert status == 200 and headers["Content-Type"] == "application/wasm" and body == b"\0asm"
    assert _get(f"{url}/node_modules/")[0] == 404  # no folder listings


def test_wasm_and_modules_are_typed_whatever_the_system_mime_table_says(monkeypatch):
    monkeypatch.setattr(
        http.server.SimpleHTTPRequestHandler, "guess_type", lambda self, path: "application/octet-stream"
    )
    handler = PageRequestHandler.__new__(PageRequestHandler)  # guess_type reads nothing from the request
    assert handler.guess_type("dist/ort-wasm-simd-threaded.wasm") == "application/wasm"
    assert handler.guess_type("dist/ort.bundle.min.mjs") == "text/javascript"
    assert handler.guess_type("photo.png") == "application/octet-stream"


def test_models_come_from_the_models_folder_and_stay_inside_it(served):
    url, _ = served
    status, _, body = _get(f"{url}/models/models.json?v=2")
    assert status == 200 and json.loads(body)["encoder"] == "encoder.onnx"
    for spelling in ("/models/sam.onnx", "/%6dodels/sam.onnx", "/./models/sam.onnx", "/x/../models/sam.onnx"):
        assert _get(url + spelling)[2] == b"decoder", spelling  # never the page's own models/ decoy
    assert _get(f"{url}/models/sam.onnx/")[0] == 404
    assert _get(f"{url}/models/")[0] == 404
    for escape in ("/models/../../secret.txt", "/models/%2e%2e/%2e%2e/secret.txt", "/../secret.txt"):
        status, _, body = _get(url + escape)
        assert status == 404 and b"outside" not in body, escape


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda p: (p / "index.html").unlink(), "index.html not found"),
        (lambda p: (p / ORT_SCRIPT).unlink(), "setup.sh"),
        (lambda p: (p / "models" / "models.json").unlink(), "samplm export --web"),
        (lambda p: (p / "models" / "sam.onnx").unlink(), r"sam.onnx \(named in"),
        (lambda p: (p / "models" / "models.json").write_text("{}"), "is not a models.json"),
        (
            lambda p: (p / "models" / "models.json").write_text('{"encoder": 5, "adapters": []}'),
            "graph names must be file names",
        ),
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
        # a runner that ignores SIGINT would pass that on: give the server Python's default handler
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler),
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], 60)
        assert ready, "the server printed nothing within 60 s"
        line = process.stdout.readline()
        assert line.startswith("serving ") and "/index.html" in line, line
        url = line.split(" at ")[1].split()[0]
        assert _get(url)[2] == b"<html>page</html>"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
        assert "stopped" in process.stdout.read()
    finally:
        process.kill()


def _raw_status(url: str, target: bytes) -> bytes:
    """The status line the server answers a raw ``GET target`` with (what urllib would refuse to send)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(b"GET " + target + b" HTTP/1.0\r\n\r\n")
        return connection.makefile("rb").readline()


def test_links_out_of_the_folders_are_not_followed(served, tmp_path):
    url, page = served
    models = tmp_path / "elsewhere" / "models"
    (page / "root").symlink_to("/")
    (models / "root").symlink_to("/")
    (page / "secret.js").symlink_to(tmp_path / "secret.txt")
    (models / "secret.onnx").symlink_to(tmp_path / "secret.txt")
    (page / "again.html").symlink_to(page / "index.html")  # a link that stays inside is served
    for path in ("/root/etc/passwd", "/models/root/etc/passwd", "/secret.js", "/models/secret.onnx"):
        status, _, body = _get(url + path)
        assert status == 404 and body == b"", path
    assert _get(f"{url}/again.html")[2] == b"<html>page</html>"


def test_dotfiles_are_not_served(served, tmp_path):
    url, page = served
    models = tmp_path / "elsewhere" / "models"
    (page / ".env").write_text("TOKEN=x")
    (page / ".git").mkdir()
    (page / ".git" / "config").write_text("[core]")
    (models / ".hidden.onnx").write_bytes(b"hidden")
    for path in ("/.env", "/.git/config", "/%2egit/config", "/models/.hidden.onnx", "/x/../.env"):
        assert _get(url + path)[0] == 404, path


@pytest.mark.parametrize("target", [b"/%00", b"/index.html%00.js", b"/models/%00", b"/%ff%fe", b"/a\\..\\x"])
def test_nul_bytes_and_undecodable_paths_get_a_status(served, target):
    url, _ = served
    assert _raw_status(url, target).split()[1] in (b"400", b"404")


@pytest.mark.parametrize(
    "graph", ["../secret.txt", "/etc/passwd", ".hidden.onnx", "sub/sam.onnx", "a\\b.onnx", "x\nonnx"]
)
def test_a_manifest_naming_a_file_outside_the_models_folder_is_refused(tmp_path, graph):
    page = _page(tmp_path)
    manifest = page / "models" / "models.json"
    manifest.write_text(
        json.dumps({"encoder": "encoder.onnx", "adapters": [{"name": "x", "decoder": graph}]})
    )
    with pytest.raises(WebPageError, match="models.json names .*not a file name inside") as info:
        check_page(page)
    assert "\n" not in str(info.value)


def test_a_manifest_naming_a_link_out_of_the_models_folder_is_refused(tmp_path):
    page = _page(tmp_path)
    (tmp_path / "outside.onnx").write_bytes(b"outside")
    (page / "models" / "sam.onnx").unlink()
    (page / "models" / "sam.onnx").symlink_to(tmp_path / "outside.onnx")
    with pytest.raises(WebPageError, match=r"sam.onnx \(named in .*not a file inside"):
        check_page(page)


def test_a_deeply_nested_manifest_is_one_line(tmp_path):
    page = _page(tmp_path)
    (page / "models" / "models.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(WebPageError, match="models.json is nested too deeply") as info:
        check_page(page)
    assert "\n" not in str(info.value)


def _serve_error(argv: list[str], capsys) -> str:
    """The one error line of ``samplm serve-web ...`` (exit status 2)."""
    assert main(["serve-web", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("samplm: error:") and "\n" not in err, err
    return err


@pytest.mark.parametrize("port", ["70000", "-1", "65536", "80.5", "http"])
def test_a_port_out_of_range_is_one_line_naming_port(tmp_path, capsys, port):
    assert "--port" in _serve_error(["--page", str(_page(tmp_path)), f"--port={port}"], capsys)


@pytest.mark.parametrize("host", ["no-such-host.invalid", "x" * 70])
def test_a_host_that_does_not_resolve_is_one_line_naming_host(tmp_path, capsys, host):
    assert "--host" in _serve_error(["--page", str(_page(tmp_path)), "--host", host, "--port", "0"], capsys)


def test_a_port_in_use_is_one_line_naming_it(tmp_path, capsys):
    page = _page(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        err = _serve_error(["--page", str(page), "--port", str(port)], capsys)
    assert f"--port {port} is in use" in err
