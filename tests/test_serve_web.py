"""``samplm serve-web`` / :func:`samplm.export.web.serve_web`: the page (samplm's own, installed with the
package, or a ``--page`` folder), onnxruntime-web and the models are checked, then served on loopback
with the content types and headers onnxruntime-web needs; ``samplm web-setup`` installs onnxruntime-web."""

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

import samplm
from samplm.cli import main
from samplm.export.web import (
    NPM_FILES,
    ORT_SCRIPT,
    PAGE,
    PAGE_FILES,
    PageRequestHandler,
    WebPageError,
    check_page,
    default_runtime,
    serve_web,
)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """``samplm web-setup``'s default folder under ``tmp_path`` (empty): never this machine's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _runtime(folder: Path) -> Path:
    """A folder as ``samplm web-setup --dir folder`` leaves it (the script is a stand-in)."""
    (folder / ORT_SCRIPT).parent.mkdir(parents=True)
    (folder / ORT_SCRIPT).write_text("// ort from the runtime folder")
    return folder


def _models(folder: Path) -> Path:
    """A models folder as ``samplm export --web folder`` leaves it (graph files are stand-ins)."""
    folder.mkdir(parents=True)
    manifest = {"encoder": "encoder.onnx", "adapters": [{"name": "sam", "decoder": "sam.onnx"}]}
    (folder / "models.json").write_text(json.dumps(manifest))
    (folder / "encoder.onnx").write_bytes(b"encoder")
    (folder / "sam.onnx").write_bytes(b"decoder")
    return folder


def _page(root: Path, models: Path | None = None) -> Path:
    """A page folder as setup.sh and ``samplm export --web`` leave it (graph files are stand-ins: the
    server only sends bytes)."""
    page = root / "page"
    (page / ORT_SCRIPT).parent.mkdir(parents=True)
    (page / "index.html").write_text("<html>page</html>")
    (page / "app.js").write_text("// app")
    (page / ORT_SCRIPT).write_text("// ort")
    (page / ORT_SCRIPT).with_name("ort-wasm-simd-threaded.wasm").write_bytes(b"\0asm")
    _models(models or page / "models")
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
        (
            lambda p: (p / ORT_SCRIPT).unlink(),
            r"onnxruntime-web not found .*: install it with samplm web-setup$",
        ),
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


def _serve_until_interrupted(argv: list[str], env: dict[str, str] | None = None) -> bytes:
    """Run ``samplm serve-web ARGV --port 0`` in a process, GET the address it prints, stop it with
    Ctrl-C (status 0, "stopped"); the body it served."""
    process = subprocess.Popen(
        [sys.executable, "-m", "samplm.cli", "serve-web", *argv, "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        # a runner that ignores SIGINT would pass that on: give the server Python's default handler
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler),
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], 60)
        assert ready, "the server printed nothing within 60 s"
        line = process.stdout.readline()
        assert line.startswith("serving ") and "/index.html" in line, line
        url = line.split(" at ")[1].split()[0]
        body = _get(url)[2]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
        assert "stopped" in process.stdout.read()
        return body
    finally:
        process.kill()


def test_cli_serves_until_interrupted(tmp_path):
    assert _serve_until_interrupted(["--page", str(_page(tmp_path))]) == b"<html>page</html>"


def test_cli_serves_the_packaged_page_without_page(tmp_path):
    """Outside a checkout: the page comes from the installed package, onnxruntime-web from samplm
    web-setup's default folder, the models from --models."""
    _runtime(tmp_path / "cache" / "samplm" / "web")
    models = _models(tmp_path / "models")
    body = _serve_until_interrupted(["--models", str(models)], {"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert body == (PAGE / "index.html").read_bytes() and b"app.js" in body


def test_the_page_is_installed_with_the_package():
    """The page and the npm files ship as package data (pyproject's package-data), not from examples/."""
    folder = Path(samplm.__file__).resolve().parent / "export" / "web_page"
    assert folder == PAGE
    for name in (*PAGE_FILES, *NPM_FILES):
        assert (folder / name).is_file() and (folder / name).stat().st_size > 0, name
    assert "node_modules/onnxruntime-web/dist/ort.min.js" in (folder / "index.html").read_text()
    package = json.loads((folder / "package.json").read_text())
    lock = json.loads((folder / "package-lock.json").read_text())
    version = package["dependencies"]["onnxruntime-web"]
    assert lock["packages"]["node_modules/onnxruntime-web"]["version"] == version
    assert not (folder / "node_modules").exists() and not (folder / "models").exists()


def test_the_packaged_page_with_a_runtime_folder_elsewhere(tmp_path):
    runtime = _runtime(tmp_path / "ort")
    (runtime / "secret.txt").write_text("beside node_modules")
    server = serve_web(models=_models(tmp_path / "models"), runtime=runtime, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert _get(f"{url}/index.html")[2] == (PAGE / "index.html").read_bytes()
        assert _get(f"{url}/app.js")[2] == (PAGE / "app.js").read_bytes()
        assert _get(f"{url}/{ORT_SCRIPT}")[2] == b"// ort from the runtime folder"
        assert _get(f"{url}/models/sam.onnx")[2] == b"decoder"
        for path in ("/secret.txt", "/node_modules/../secret.txt", "/node_modules/%2e%2e/secret.txt"):
            assert _get(url + path)[0] == 404, path  # only node_modules of the runtime folder
    finally:
        server.shutdown()
        server.server_close()


def test_a_page_folder_with_its_own_onnxruntime_web_uses_it(tmp_path):
    page = _page(tmp_path)
    _runtime(tmp_path / "cache" / "samplm" / "web")
    server = serve_web(page, port=0)
    try:
        assert server.runtime == page.resolve() and server.page == page.resolve()
    finally:
        server.server_close()


def test_missing_onnxruntime_web_names_the_one_command(tmp_path, capsys):
    models = str(_models(tmp_path / "models"))
    err = _serve_error(["--models", models, "--port", "0"], capsys)
    assert err.endswith(": install it with samplm web-setup")
    assert str(default_runtime() / ORT_SCRIPT) in err
    elsewhere = tmp_path / "my ort"
    err = _serve_error(["--models", models, "--runtime", str(elsewhere), "--port", "0"], capsys)
    assert err.endswith(f"install it with samplm web-setup --dir '{elsewhere}'")


def test_the_packaged_page_needs_models(tmp_path, capsys):
    _runtime(tmp_path / "cache" / "samplm" / "web")
    err = _serve_error(["--port", "0"], capsys)
    assert "no models folder" in err and "samplm serve-web --models DIR" in err


def _fake_npm(bin_dir: Path, *, fail: bool = False) -> Path:
    """An ``npm`` (first on PATH) that records its arguments and, unless ``fail``, installs a stand-in
    script."""
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    install = f"mkdir -p {ORT_SCRIPT.parent} && echo '// ort' > {ORT_SCRIPT}"
    npm.write_text(f'#!/bin/sh\necho "$@" > npm-args\n{"exit 1" if fail else install}\n')
    npm.chmod(0o755)
    return bin_dir


def test_web_setup_installs_the_pinned_version_with_npm_ci(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", f"{_fake_npm(tmp_path / 'bin')}:/usr/bin:/bin")
    assert main(["web-setup"]) == 0, capsys.readouterr().err
    folder = default_runtime()
    for name in NPM_FILES:
        assert (folder / name).read_bytes() == (PAGE / name).read_bytes(), name
    assert (folder / "npm-args").read_text().split()[0] == "ci"  # exactly the locked versions
    assert (folder / ORT_SCRIPT).is_file()
    assert "samplm serve-web --models DIR" in capsys.readouterr().out
    assert check_page(None, _models(tmp_path / "models")) == tmp_path / "models"  # found without a flag
    assert main(["web-setup"]) == 0  # again: its own package.json is replaced


def test_web_setup_errors_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert main(["web-setup"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("samplm: error: npm not found") and "\n" not in err
    monkeypatch.setenv("PATH", f"{_fake_npm(tmp_path / 'bin', fail=True)}:/usr/bin:/bin")
    assert main(["web-setup", "--dir", str(tmp_path / "ort")]) == 2
    err = capsys.readouterr().err.strip()
    assert "npm ci in" in err and "exit status 1" in err and "\n" not in err
    project = tmp_path / "project"
    project.mkdir()
    (project / "package.json").write_text('{"name": "their-app"}')
    assert main(["web-setup", "--dir", str(project)]) == 2
    assert "belongs to another npm project" in capsys.readouterr().err
    assert (project / "package.json").read_text() == '{"name": "their-app"}'


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
