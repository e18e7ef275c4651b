"""``samplm serve-web``: serve samplm's browser page and its models on this machine; ``samplm web-setup``:
install the onnxruntime-web it loads."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from ..export.web import default_runtime
from ..utils.checks import Limit, shown
from .options import convert

_PORT = Limit(int, 0, 65535)


def port(text: str) -> int:
    """``--port``: an integer in [0, 65535] (argparse names the flag in its one-line error)."""
    number = convert(int, text)
    if not isinstance(number, int) or not _PORT.contains(number):
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 65535], got {shown(text)}")
    return number


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``samplm serve-web [--page] [--models] [--runtime] [--host] [--port] [--log-requests]`` (no
    ``--config``)."""
    serve = sub.add_parser(
        "serve-web",
        help="serve the browser page with exported models on this machine",
        description="Serve samplm's browser page (installed with the package), onnxruntime-web (from "
        "samplm web-setup) and the models written by samplm export --web DIR on loopback, with the "
        "headers onnxruntime-web's threads need. Ctrl-C stops it.",
    )
    serve.add_argument(
        "--page", help="serve this page folder (index.html, app.js) instead of samplm's own page"
    )
    serve.add_argument(
        "--models",
        help="models folder written by samplm export --web (required unless --page DIR holds models/)",
    )
    serve.add_argument(
        "--runtime",
        help="folder samplm web-setup --dir installed onnxruntime-web into (default: PAGE when it holds "
        f"node_modules, else {_home(default_runtime())})",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=port, default=8000, help="TCP port (default 8000; 0: any free port)")
    serve.add_argument("--log-requests", action="store_true", help="print one line per request")
    return serve


def add_setup_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``samplm web-setup [--dir DIR]`` (no ``--config``)."""
    setup = sub.add_parser(
        "web-setup",
        help="install onnxruntime-web (npm) for samplm serve-web",
        description="Install the onnxruntime-web version samplm's page pins from the npm registry (npm "
        "ci; needs Node.js and npm) into a folder of yours; samplm serve-web loads it from there. "
        "Run once per samplm version.",
    )
    setup.add_argument(
        "--dir",
        help=f"folder to install into (default {_home(default_runtime())}; another one is passed to "
        "samplm serve-web --runtime)",
    )
    return setup


def _home(path: Path) -> str:
    """``path`` with the home folder written ``~`` (for help texts)."""
    try:
        return str(Path("~") / path.relative_to(Path.home()))
    except ValueError:
        return str(path)


def run(args: argparse.Namespace) -> int:
    """``samplm serve-web``: check the page, onnxruntime-web and the models, then serve until Ctrl-C."""
    from ..export.web import serve_web

    server = serve_web(
        args.page,
        models=args.models,
        runtime=args.runtime,
        host=args.host,
        port=args.port,
        quiet=not args.log_requests,
    )
    host, bound = server.server_address[:2]
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "") else host  # an address a browser here opens
    url = f"http://{shown_host}:{bound}/index.html"
    print(f"serving {server.page} at {url} (models: {server.models}; Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    finally:
        server.server_close()
    return 0


def run_setup(args: argparse.Namespace) -> int:
    """``samplm web-setup``: onnxruntime-web into ``--dir`` (default the folder serve-web looks in)."""
    from ..export.web import install_runtime

    folder = install_runtime(args.dir)
    hint = "" if args.dir is None else f" --runtime {shlex.quote(str(folder))}"
    print(f"installed onnxruntime-web into {folder}; serve the page: samplm serve-web{hint} --models DIR")
    return 0
