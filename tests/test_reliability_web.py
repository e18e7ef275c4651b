"""Task names, the web bundle and ``samplm serve-web``: user text never becomes a path.

Deterministic checks of task names (adapter configs, adapter files, ``samplm train --task``), then
property tests (hypothesis): arbitrary task strings and page labels, arbitrary request paths against a
running server on 127.0.0.1, arbitrary ``models.json`` content.
"""

from __future__ import annotations

import json
import socket
import threading
import urllib.parse
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from samplm import AdapterConfig, PromptAdapter
from samplm.adapter.config import MAX_TASK_LENGTH
from samplm.cli import main
from samplm.errors import AdapterFormatError, ConfigError
from samplm.export.onnx import write_web_bundle
from samplm.export.web import ORT_SCRIPT, WebPageError, check_page, serve_web

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

UNSAFE_TASKS = [
    "",
    "../x",
    "../../x",
    "/etc/passwd",
    "a/b",
    "a\\b",
    ".hidden",
    "..",
    "-rf",
    " padded",
    "padded ",
    "new\nline",
    "nul\0",
    "tab\there",
    "é",
    "x" * (MAX_TASK_LENGTH + 1),
]
SAFE_TASKS = ["nose", "license plate", "banner+plate", "v1.2", "_private", "x" * MAX_TASK_LENGTH]


# ---------------------------------------------------------------------------------- task names
@pytest.mark.parametrize("task", UNSAFE_TASKS)
def test_unsafe_task_names_are_refused_in_one_line(task):
    with pytest.raises(ConfigError, match="^task must be 1 to") as info:
        AdapterConfig(task=task)
    assert "\n" not in str(info.value) and "choose a name" in str(info.value)
    with pytest.raises(AdapterFormatError, match="task must be"):
        PromptAdapter.from_config({"task": task})


@pytest.mark.parametrize("task", SAFE_TASKS)
def test_safe_task_names_are_accepted(task):
    assert AdapterConfig(task=task).task == task


def test_an_adapter_file_with_an_unsafe_task_does_not_load(tmp_path):
    """A downloaded adapter's config is user text too: its task is checked when it is loaded."""
    PromptAdapter(AdapterConfig(task="nose")).save_pretrained(tmp_path / "nose")
    config = tmp_path / "nose" / "adapter_config.json"
    config.write_text(config.read_text().replace('"task": "nose"', '"task": "../../x"'))
    with pytest.raises(AdapterFormatError, match="adapter_config.json: task must be") as info:
        PromptAdapter.load(tmp_path / "nose")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        (["--task", "../../x"], "--task must be"),
        (["--task", "/abs/x"], "--task must be"),
        (["--category", "a/b"], "--task (default: the --category names"),
    ],
)
def test_train_refuses_an_unsafe_task_before_reading_data(tmp_path, capsys, extra, flag):
    argv = ["train", "--data", str(tmp_path / "missing.json"), "--format", "coco"]
    argv += ["--model-type", "samplm_tiny", "--out", str(tmp_path / "run"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"samplm: error: {flag}") and "\n" not in err, err
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------- web bundle
@pytest.fixture(scope="module")
def stub_exports():
    """``write_web_bundle`` with the graph writers replaced by one-line files: only the bundle's names
    (and the adapter checks that run before anything is written) are under test here."""

    def write(sam, out, **kwargs):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text("graph")
        return Path(out)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("samplm.export.onnx.export_onnx", write)
        patch.setattr("samplm.export.onnx.export_encoder_onnx", write)
        yield


TEXT = st.one_of(
    st.text(max_size=120),
    st.sampled_from([*UNSAFE_TASKS, *SAFE_TASKS, "encoder", "sam", "models.json", "SAM (no adapter)"]),
)


@SETTINGS
@given(task=TEXT, label=TEXT)
def test_any_task_or_label_is_refused_or_stays_a_label(sam, stub_exports, tmp_path_factory, task, label):
    assume(label != "plain")  # the other entry's label
    try:
        adapter = PromptAdapter(AdapterConfig(task=task))
    except ConfigError as exc:
        assert "\n" not in str(exc)
        adapter = PromptAdapter(AdapterConfig(task="safe"))
    root = tmp_path_factory.mktemp("bundle")
    folder = root / "a" / "models"
    try:
        write_web_bundle(sam, {"plain": None, label: adapter}, folder)
    except ConfigError as exc:  # an empty label
        assert "\n" not in str(exc) and label == ""
        return
    files = {str(p.relative_to(root)) for p in root.rglob("*")}
    expected = {"encoder.onnx", "sam.onnx", "adapter-1.onnx", "models.json"}
    assert files == {"a", "a/models"} | {f"a/models/{name}" for name in expected}
    entries = json.loads((folder / "models.json").read_text())["adapters"]
    assert [(e["name"], e["decoder"]) for e in entries] == [("plain", "sam.onnx"), (label, "adapter-1.onnx")]


# ---------------------------------------------------------------------------------- serve-web
def _page(root: Path) -> tuple[Path, Path]:
    """A page and a models folder elsewhere, with dotfiles, links out of both folders and a secret."""
    page, models = root / "page", root / "models"
    (page / ORT_SCRIPT).parent.mkdir(parents=True)
    models.mkdir()
    files = {
        page / "index.html": "page",
        page / "app.js": "app",
        page / ORT_SCRIPT: "ort",
        models / "encoder.onnx": "encoder",
        models / "sam.onnx": "decoder",
        models / "models.json": json.dumps(
            {"encoder": "encoder.onnx", "adapters": [{"name": "sam", "decoder": "sam.onnx"}]}
        ),
    }
    for path, text in files.items():
        path.write_text(text)
    (root / "secret.txt").write_text("SECRET outside")
    for folder in (page, models):
        (folder / ".env").write_text("SECRET dotfile")
        (folder / ".git").mkdir()
        (folder / ".git" / "config").write_text("SECRET git")
        (folder / "root").symlink_to("/")
        (folder / "secret.txt").symlink_to(root / "secret.txt")
    return page, models


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``(host, port, bodies the server may send)`` of a running server on loopback."""
    page, models = _page(tmp_path_factory.mktemp("site"))
    httpd = serve_web(page, models=models, port=0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    allowed = {p.read_bytes() for folder in (page, models) for p in folder.rglob("*") if p.is_file()}
    allowed = {body for body in allowed if not body.startswith(b"SECRET")}
    yield "127.0.0.1", httpd.server_address[1], allowed
    httpd.shutdown()
    httpd.server_close()


def _request(host: str, port: int, target: str) -> tuple[bytes, bytes]:
    """``(status line, body)`` of ``GET target`` sent as it is."""
    with socket.create_connection((host, port), timeout=10) as connection:
        connection.sendall(f"GET {target} HTTP/1.0\r\n\r\n".encode("latin-1"))
        reply = connection.makefile("rb").read()
    head, _, body = reply.partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0], body


PARTS = st.sampled_from(
    [
        "..",
        "",
        ".",
        "models",
        "root",
        "etc",
        "passwd",
        "secret.txt",
        ".env",
        ".git",
        "config",
        "%2e%2e",
        "%2e",
        "%2f",
        "%00",
        "%ff",
        "%c0%ae",
        "\\",
        "..\\..",
        "index.html",
        "sam.onnx",
        "models.json",
        "node_modules",
        "onnxruntime-web",
        "dist",
        "ort.min.js",
        "%6dodels",
        "?q=1",
        "#frag",
        "//",
    ]
)
PATHS = st.one_of(
    st.lists(PARTS, max_size=8).map("/".join),
    st.text(max_size=40),
    st.lists(st.one_of(PARTS, st.text(max_size=6)), max_size=6).map("/".join),
)


@SETTINGS
@given(PATHS)
def test_any_request_path_gets_a_status_and_only_files_of_the_folders(server, path):
    host, port, allowed = server
    target = "/" + urllib.parse.quote(path, safe="/%.\\?#")
    status, body = _request(host, port, target)
    assert status.startswith(b"HTTP/1.") and status.split()[1] in (b"200", b"400", b"404"), (target, status)
    if status.split()[1] == b"200":
        assert body in allowed, (target, body[:40])


# ---------------------------------------------------------------------------------- models.json
GRAPH_NAMES = st.one_of(
    st.sampled_from(["encoder.onnx", "sam.onnx", "../secret.txt", "/etc/passwd", ".env", "root/etc/passwd"]),
    st.sampled_from(["sub/sam.onnx", "a\\b", "secret.txt", "root", "", "sam.onnx/", "models.json", "%2e%2e"]),
    st.text(max_size=12),
    st.integers(),
    st.none(),
)
JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5), GRAPH_NAMES),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
MANIFESTS = st.one_of(
    st.fixed_dictionaries(
        {
            "encoder": GRAPH_NAMES,
            "adapters": st.lists(
                st.fixed_dictionaries({"name": st.text(max_size=5), "decoder": GRAPH_NAMES}), max_size=3
            ),
        }
    ).map(json.dumps),
    JSON.map(json.dumps),
    st.text(max_size=60),
)


@SETTINGS
@given(MANIFESTS)
def test_any_models_json_is_refused_in_one_line_or_names_only_files_inside(tmp_path_factory, manifest):
    page, models = _page(tmp_path_factory.mktemp("manifest"))
    (models / "models.json").write_text(manifest)
    try:
        assert check_page(page, models) == models
    except WebPageError as exc:
        assert "\n" not in str(exc) and "models.json" in str(exc)
        return
    data = json.loads(manifest)
    for graph in [data["encoder"], *(a["decoder"] for a in data["adapters"])]:
        file = (models / graph).resolve()
        assert file.parent == models.resolve() and file.is_file() and not graph.startswith("."), graph
