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

It serves nothing else: only regular files whose resolved path (links followed) lies inside their folder
(the page's, or the models folder for ``/models/...``), never a path with a part starting with ``.``
(dotfiles such as ``.git`` or ``.env``), no folder listings; anything else, a NUL byte or an undecodable
path included, is answered 404.
"""

from __future__ import annotations

import errno
import functools
import http.server
import json
import os
import posixpath
import socket
import urllib.parse
from http import HTTPStatus
from pathlib import Path
from typing import Any

from ..constants import WEB_MANIFEST_NAME, WEB_MODELS_DIR
from ..errors import ConfigError, SamplmError
from ..utils.checks import first_line, shown

PAGE_FILES = ("index.html", "app.js")
ORT_SCRIPT = Path("node_modules/onnxruntime-web/dist/ort.min.js")
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
}
CONTENT_TYPES = {".wasm": "application/wasm", ".mjs": "text/javascript", ".js": "text/javascript"}
#: Characters no part of a served path (and no graph named in ``models.json``) may hold.
UNSAFE_CHARACTERS = frozenset(["\\", "\x7f", *map(chr, range(32))])


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
    for graph in _graph_names(manifest):
        if not _safe_part(graph):
            raise WebPageError(
                f"{manifest} names {shown(graph)}, which is not a file name inside {folder} (no folders, "
                "no leading '.', no backslashes or control characters): export the models again"
            )
        if _file_inside(folder.resolve(), [graph]) is None:
            raise WebPageError(
                f"{folder / graph} (named in {manifest}) not found or not a file inside {folder}: "
                "export the models again"
            )
    return folder


def _graph_names(manifest: Path) -> list[Any]:
    """The encoder and decoder names ``models.json`` holds (their values unchecked)."""
    try:
        entries = json.loads(manifest.read_text(encoding="utf-8"))
        graphs = [entries["encoder"], *(a["decoder"] for a in entries["adapters"])]
        if not all(isinstance(g, str) and g for g in graphs):
            raise TypeError("graph names must be file names")
    except RecursionError:
        raise WebPageError(
            f"{manifest} is nested too deeply to be a models.json: export the models again"
        ) from None
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise WebPageError(
            f"{manifest} is not a models.json written by samplm export --web: {first_line(exc)}"
        ) from exc
    return graphs


def _safe_part(name: str) -> bool:
    """Whether ``name`` is one plain file or folder name: not empty, not starting with ``.``, without
    ``/``, backslashes or control characters."""
    return bool(name) and not name.startswith(".") and "/" not in name and not UNSAFE_CHARACTERS & set(name)


def _file_inside(folder: Path, parts: list[str]) -> Path | None:
    """``folder/parts`` with links resolved, if that is a regular file inside ``folder`` (resolved)."""
    try:
        file = folder.joinpath(*parts).resolve(strict=True)
        return file if file.is_relative_to(folder) and file.is_file() else None
    except (OSError, RuntimeError, ValueError):  # missing, a link loop, a name the system refuses
        return None


def _route(path: str) -> list[str] | None:
    """The parts of a request's path: query and fragment dropped, percent-decoded (UTF-8), ``.`` and
    ``..`` applied as in a URL, a final ``/`` read as ``index.html``. ``None`` when the path cannot be
    decoded or a part is not :func:`_safe_part` (dotfiles, NUL bytes, backslashes)."""
    raw = path.split("?", 1)[0].split("#", 1)[0]
    try:
        text = urllib.parse.unquote(raw, errors="strict")
    except UnicodeDecodeError:
        return None
    parts = [part for part in posixpath.normpath("/" + text).split("/") if part]
    if raw.endswith("/"):
        parts.append("index.html")
    return parts if all(map(_safe_part, parts)) else None


class PageRequestHandler(http.server.SimpleHTTPRequestHandler):
    """``SimpleHTTPRequestHandler`` over the page folder, with ``/models/`` mapped to ``models`` and the
    headers and content types onnxruntime-web needs."""

    def __init__(self, *args: Any, models: Path, quiet: bool = True, **kwargs: Any) -> None:
        self.models = models
        self.quiet = quiet
        super().__init__(*args, **kwargs)

    def translate_path(self, path: str) -> str:
        """The resolved file a request names (``/models/...`` in the models folder), or ``""``, which
        the parent answers with 404, when :func:`_route` refuses the path or it is not a regular file
        inside its folder."""
        parts = _route(path)
        if parts is None:
            return ""
        if parts[:1] == [WEB_MODELS_DIR]:
            folder, parts = self.models, parts[1:]
        else:
            folder = Path(self.directory)
        file = _file_inside(folder, parts)
        return "" if file is None else str(file)

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
        ConfigError: the host does not resolve, the port is taken, or the address cannot be listened on
            (the message names ``--host`` or ``--port``).
    """
    folder = check_page(page, models)
    handler = functools.partial(
        PageRequestHandler, directory=str(Path(page).resolve()), models=folder.resolve(), quiet=quiet
    )
    return _listen(host, port, handler)


def _listen(host: str, port: int, handler: Any) -> http.server.ThreadingHTTPServer:
    """A server bound to ``(host, port)``; binding errors as one-line :class:`ConfigError` s."""
    try:
        return http.server.ThreadingHTTPServer((host, port), handler)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(
            "--host", f"{shown(host)} is not an address of this machine ({first_line(exc)}); use 127.0.0.1"
        ) from exc
    except OverflowError as exc:
        raise ConfigError("--port", f"must be an integer in [0, 65535], got {shown(port)}") from exc
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                "--port", f"{port} is in use on {host}; choose another port (0: any free port)"
            ) from exc
        raise ConfigError(
            "--host / --port", f"cannot listen on {host}:{port} ({exc.strerror or first_line(exc)})"
        ) from exc
