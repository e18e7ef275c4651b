"""Serving the example page (``examples/web``): a static folder on loopback, checked before it is served.

The page is plain files: ``index.html`` and ``app.js``, onnxruntime-web in ``node_modules`` (installed
by ``examples/web/setup.sh`` from the npm registry, never fetched from a CDN) and the exported graphs
in ``models/`` (written by ``samplm export --web``). :func:`serve_web` serves such a folder as
``python -m http.server`` would, with what onnxruntime-web needs on top:

- WebAssembly is sent as ``application/wasm`` and modules as ``text/javascript``;
- cross-origin isolation headers (``Cross-Origin-Opener-Policy: same-origin`` and
  ``Cross-Origin-Embedder-Policy: require-corp``), so the browser allows the multi-threaded WebAssembly
  build;
- ``--models DIR`` serves a models folder kept elsewhere under ``/models/``.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import posixpath
import urllib.parse
from http import HTTPStatus
from pathlib import Path
from typing import Any

from .constants import WEB_MANIFEST_NAME, WEB_MODELS_DIR
from .errors import SamplmError

PAGE_FILES = ("index.html", "app.js")
ORT_SCRIPT = Path("node_modules/onnxruntime-web/dist/ort.min.js")
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
}
CONTENT_TYPES = {".wasm": "application/wasm", ".mjs": "text/javascript", ".js": "text/javascript"}


class WebPageError(SamplmError):
    """The page folder cannot be served: a file is missing (the message says which and how to make it)."""


def check_page(page: str | Path, models: str | Path | None = None) -> Path:
    """The models folder the page will load, after checking that everything the page needs is there.

    Args:
        page: the page folder (``examples/web``).
        models: the models folder, if not ``page/models``.

    Raises:
        WebPageError: the page files, onnxruntime-web, or the models' ``models.json`` (or a graph it
            names) are missing; the message names the file and the command that makes it.
    """
    page = Path(page)
    for name in PAGE_FILES:
        if not (page / name).is_file():
            raise WebPageError(f"{page / name} not found: point --page at the example page (examples/web)")
    if not (page / ORT_SCRIPT).is_file():
        raise WebPageError(
            f"{page / ORT_SCRIPT} not found: install onnxruntime-web with bash {page / 'setup.sh'}"
        )
    folder = Path(models) if models is not None else page / WEB_MODELS_DIR
    manifest = folder / WEB_MANIFEST_NAME
    if not manifest.is_file():
        raise WebPageError(
            f"{manifest} not found: write the page's models with samplm export --web {folder} "
            "--model-type samplm_lite [--adapter A]"
        )
    try:
        entries = json.loads(manifest.read_text())
        graphs = [entries["encoder"], *(a["decoder"] for a in entries["adapters"])]
        if not all(isinstance(g, str) and g for g in graphs):
            raise TypeError("graph names must be file names")
    except (ValueError, KeyError, TypeError) as exc:
        raise WebPageError(f"{manifest} is not a models.json written by samplm export --web: {exc}") from exc
    for graph in graphs:
        if not (folder / graph).is_file():
            raise WebPageError(f"{folder / graph} (named in {manifest}) not found: export the models again")
    return folder


class PageRequestHandler(http.server.SimpleHTTPRequestHandler):
    """``SimpleHTTPRequestHandler`` over the page folder, with ``/models/`` mapped to ``models`` and the
    headers and content types onnxruntime-web needs."""

    def __init__(self, *args: Any, models: Path, quiet: bool = True, **kwargs: Any) -> None:
        self.models = models
        self.quiet = quiet
        super().__init__(*args, **kwargs)

    def translate_path(self, path: str) -> str:
        route = posixpath.normpath(urllib.parse.unquote(path.split("?", 1)[0].split("#", 1)[0]))
        prefix = f"/{WEB_MODELS_DIR}"
        if route != prefix and not route.startswith(prefix + "/"):
            return super().translate_path(path)
        # the parent cleans the rest (separators, "..") under the page folder; re-rooted at ``models``
        rest = route[len(prefix) :] + ("/" if path.split("?", 1)[0].endswith("/") else "")
        inside = os.path.relpath(super().translate_path(rest or "/"), self.directory)
        return os.path.join(self.models, inside) + ("/" if rest.endswith("/") else "")

    def list_directory(self, path: str | os.PathLike[str]) -> None:
        """No folder listings: the page names every file it loads."""
        self.send_error(HTTPStatus.NOT_FOUND, "No listing")
        return None

    def guess_type(self, path: str | Path) -> str:
        return CONTENT_TYPES.get(Path(path).suffix, super().guess_type(path))

    def end_headers(self) -> None:
        for key, value in ISOLATION_HEADERS.items():
            self.send_header(key, value)
        self.send_header("Cache-Control", "no-cache")  # revalidated: re-exported models are picked up
        super().end_headers()

    def log_message(self, format: str, *args) -> None:
        if not self.quiet:
            super().log_message(format, *args)


def serve_web(
    page: str | Path,
    *,
    models: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    quiet: bool = True,
) -> http.server.ThreadingHTTPServer:
    """A server for the example page, bound but not yet serving (call ``serve_forever()``).

    Args:
        page: the page folder (``examples/web``), checked by :func:`check_page`.
        models: a models folder to serve as ``/models/`` instead of ``page/models``.
        host: address to listen on (default loopback only).
        port: TCP port (0: any free port; read it from ``server.server_address``).
        quiet: do not log each request.

    Raises:
        WebPageError: see :func:`check_page`.
        OSError: the port is taken.
    """
    folder = check_page(page, models)
    handler = functools.partial(
        PageRequestHandler, directory=str(Path(page).resolve()), models=folder.resolve(), quiet=quiet
    )
    return http.server.ThreadingHTTPServer((host, port), handler)
