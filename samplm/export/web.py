"""samplm's browser page: installed with the package, served on loopback after it is checked.

The page is plain files in three folders:

- the page itself, ``index.html`` and ``app.js``, shipped in the package (:data:`PAGE`,
  ``samplm/export/web_page``); ``--page DIR`` serves another folder instead;
- onnxruntime-web in ``node_modules``, never shipped nor fetched from a CDN: ``samplm web-setup``
  (:func:`install_runtime`) installs the version the page's ``package.json`` pins, from the npm
  registry, into a folder of the user's (:func:`default_runtime`, ``~/.cache/samplm/web``, or
  ``--dir DIR``); a ``--page`` folder with its own ``node_modules/onnxruntime-web`` uses that;
- the exported graphs, ``models/`` (written by ``samplm export --web DIR``, served with ``--models DIR``).

:func:`serve_web` serves them as one site, as ``python -m http.server`` would a folder, with what
onnxruntime-web needs on top:

- WebAssembly is sent as ``application/wasm`` and modules as ``text/javascript``;
- cross-origin isolation headers (``Cross-Origin-Opener-Policy: same-origin`` and
  ``Cross-Origin-Embedder-Policy: require-corp``), so the browser allows the multi-threaded WebAssembly
  build;
- ``/node_modules/`` comes from the onnxruntime-web folder and ``/models/`` from the models folder.

It serves nothing else: only regular files whose resolved path (links followed) lies inside their folder
(the page's, the onnxruntime-web folder for ``/node_modules/...``, the models folder for
``/models/...``), never a path with a part starting with ``.`` (dotfiles such as ``.git`` or ``.env``),
no folder listings; anything else, a NUL byte or an undecodable path included, is answered 404.
"""

from __future__ import annotations

import errno
import functools
import http.server
import json
import os
import posixpath
import shlex
import shutil
import socket
import subprocess
import urllib.parse
from http import HTTPStatus
from pathlib import Path
from typing import Any

from ..constants import WEB_MANIFEST_NAME, WEB_MODELS_DIR
from ..errors import ConfigError, SamplmError
from ..utils.checks import first_line, shown

#: samplm's page, installed with the package (``--page`` serves another folder).
PAGE = Path(__file__).resolve().with_name("web_page")
PAGE_FILES = ("index.html", "app.js")
#: What ``samplm web-setup`` copies into its folder before ``npm ci``: the pinned onnxruntime-web.
NPM_FILES = ("package.json", "package-lock.json")
NODE_MODULES = "node_modules"
ORT_SCRIPT = Path(NODE_MODULES, "onnxruntime-web/dist/ort.min.js")
#: The command that installs onnxruntime-web into :func:`default_runtime`.
SETUP_COMMAND = "samplm web-setup"
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
}
CONTENT_TYPES = {".wasm": "application/wasm", ".mjs": "text/javascript", ".js": "text/javascript"}
#: Characters no part of a served path (and no graph named in ``models.json``) may hold.
UNSAFE_CHARACTERS = frozenset(["\\", "\x7f", *map(chr, range(32))])


class WebPageError(SamplmError):
    """The page folder cannot be served: a file is missing (the message says which and how to make it)."""


def default_runtime() -> Path:
    """Where ``samplm web-setup`` installs onnxruntime-web unless told otherwise:
    ``$XDG_CACHE_HOME/samplm/web`` (``~/.cache/samplm/web``)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "samplm" / "web"


def setup_command(runtime: str | Path | None = None) -> str:
    """The one command that installs onnxruntime-web into ``runtime`` (default :func:`default_runtime`)."""
    if runtime is None or Path(runtime).resolve() == default_runtime().resolve():
        return SETUP_COMMAND
    return f"{SETUP_COMMAND} --dir {shlex.quote(str(runtime))}"


def runtime_folder(page: str | Path | None = None, runtime: str | Path | None = None) -> Path:
    """The folder whose ``node_modules`` is served: ``runtime`` if given, else a ``--page`` folder that
    holds onnxruntime-web itself, else :func:`default_runtime`."""
    if runtime is not None:
        return Path(runtime)
    if page is not None and (Path(page) / ORT_SCRIPT).is_file():
        return Path(page)
    return default_runtime()


def check_page(
    page: str | Path | None = None, models: str | Path | None = None, runtime: str | Path | None = None
) -> Path:
    """The models folder the page will load, after checking that everything the page needs is there.

    Args:
        page: the page folder (default: samplm's own, :data:`PAGE`).
        models: the models folder (default ``page/models``; required with samplm's own page).
        runtime: the folder onnxruntime-web was installed into (see :func:`runtime_folder`).

    Raises:
        WebPageError: the page files, onnxruntime-web, or the models' ``models.json`` (or a graph it
            names) are missing; the message names the file and the command that makes it.
    """
    packaged = page is None
    page = PAGE if packaged else Path(page)
    for name in PAGE_FILES:
        if not (page / name).is_file():
            raise WebPageError(
                f"{page / name} not found: point --page at a folder holding {' and '.join(PAGE_FILES)}, "
                "or leave --page out to serve samplm's page"
            )
    folder = runtime_folder(None if packaged else page, runtime)
    if not (folder / ORT_SCRIPT).is_file():
        raise WebPageError(
            f"onnxruntime-web not found ({folder / ORT_SCRIPT}): install it with {setup_command(folder)}"
        )
    if models is None and packaged:
        raise WebPageError(
            "no models folder: write one with samplm export --web DIR --model-type samplm_lite "
            "[--adapter A], then serve it with samplm serve-web --models DIR"
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


def install_runtime(folder: str | Path | None = None) -> Path:
    """``samplm web-setup``: onnxruntime-web, the version the page's ``package-lock.json`` pins, from the
    npm registry into ``folder/node_modules`` (default :func:`default_runtime`) with ``npm ci``.

    Returns:
        The folder (what ``samplm serve-web --runtime`` takes; the default is found without it).

    Raises:
        WebPageError: npm is not installed, ``folder`` holds another project's ``package.json``, or npm
            failed (its own messages are printed above the error).
    """
    folder = Path(folder) if folder is not None else default_runtime()
    npm = shutil.which("npm")
    if npm is None:
        raise WebPageError(
            "npm not found: install Node.js with npm (Debian / Ubuntu: apt-get install -y npm), then run "
            f"{setup_command(folder)} again"
        )
    if folder.exists() and not folder.is_dir():
        raise WebPageError(f"{folder} is a file; give a folder to {SETUP_COMMAND} --dir")
    ours = json.loads((PAGE / "package.json").read_text(encoding="utf-8"))["name"]
    if _package_name(folder / "package.json") not in (None, ours):
        raise WebPageError(
            f"{folder / 'package.json'} belongs to another npm project; give {SETUP_COMMAND} an empty "
            "folder (--dir DIR)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    for name in NPM_FILES:
        shutil.copyfile(PAGE / name, folder / name)
    command = [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"]
    result = subprocess.run(command, cwd=folder, check=False)
    if result.returncode != 0 or not (folder / ORT_SCRIPT).is_file():
        raise WebPageError(
            f"npm ci in {folder} failed (exit status {result.returncode}; npm's messages are above): "
            "check that the npm registry can be reached, then run the command again"
        )
    return folder


def _package_name(file: Path) -> str | None:
    """The ``name`` in a ``package.json`` (``""`` when unreadable), ``None`` when there is none."""
    if not file.exists():
        return None
    try:
        return str(json.loads(file.read_text(encoding="utf-8")).get("name", ""))
    except (OSError, ValueError, AttributeError):
        return ""


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
    """``SimpleHTTPRequestHandler`` over the page folder, with ``/models/`` mapped to ``models``,
    ``/node_modules/`` to ``runtime/node_modules`` and the headers and content types onnxruntime-web
    needs."""

    def __init__(
        self, *args: Any, models: Path, runtime: Path | None = None, quiet: bool = True, **kwargs: Any
    ) -> None:
        self.models = models
        self.runtime = runtime
        self.quiet = quiet
        super().__init__(*args, **kwargs)

    def translate_path(self, path: str) -> str:
        """The resolved file a request names (``/models/...`` in the models folder, ``/node_modules/...``
        in the onnxruntime-web folder), or ``""``, which the parent answers with 404, when :func:`_route`
        refuses the path or it is not a regular file inside its folder."""
        parts = _route(path)
        if parts is None:
            return ""
        if parts[:1] == [WEB_MODELS_DIR]:
            folder, parts = self.models, parts[1:]
        elif parts[:1] == [NODE_MODULES] and self.runtime is not None:
            folder, parts = self.runtime / NODE_MODULES, parts[1:]
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
    page: str | Path | None = None,
    *,
    models: str | Path | None = None,
    runtime: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    quiet: bool = True,
) -> http.server.ThreadingHTTPServer:
    """A server for the page, bound but not yet serving (call ``serve_forever()``).

    Args:
        page: the page folder (default: samplm's own, :data:`PAGE`), checked by :func:`check_page`.
        models: the models folder (``samplm export --web DIR``) to serve as ``/models/`` (default
            ``page/models``; required with samplm's own page).
        runtime: the folder ``samplm web-setup`` installed onnxruntime-web into (see
            :func:`runtime_folder`), served as ``/node_modules/``.
        host: address to listen on (default loopback only).
        port: TCP port (0: any free port; read it from ``server.server_address``).
        quiet: do not log each request.

    Returns:
        The server; its ``page``, ``models`` and ``runtime`` attributes are the folders it serves.

    Raises:
        WebPageError: see :func:`check_page`.
        ConfigError: the host does not resolve, the port is taken, or the address cannot be listened on
            (the message names ``--host`` or ``--port``).
    """
    folder = check_page(page, models, runtime)
    served = (PAGE if page is None else Path(page)).resolve()
    onnxruntime = runtime_folder(None if page is None else page, runtime).resolve()
    handler = functools.partial(
        PageRequestHandler, directory=str(served), models=folder.resolve(), runtime=onnxruntime, quiet=quiet
    )
    server = _listen(host, port, handler)
    server.page, server.models, server.runtime = served, folder.resolve(), onnxruntime
    return server


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
