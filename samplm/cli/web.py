"""``samplm serve-web``: serve the example page (``examples/web``) and its models on this machine."""

from __future__ import annotations

import argparse
from pathlib import Path

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
    """``samplm serve-web [--page] [--models] [--host] [--port] [--log-requests]`` (no ``--config``)."""
    serve = sub.add_parser(
        "serve-web",
        help="serve the example page (examples/web) with its models on this machine",
        description="Serve the example page (index.html, app.js, onnxruntime-web from setup.sh, models "
        "from samplm export --web) on loopback, with the headers onnxruntime-web's threads need. "
        "Ctrl-C stops it.",
    )
    serve.add_argument("--page", default="examples/web", help="the page folder (default examples/web)")
    serve.add_argument("--models", help="models folder written by samplm export --web (default PAGE/models)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=port, default=8000, help="TCP port (default 8000; 0: any free port)")
    serve.add_argument("--log-requests", action="store_true", help="print one line per request")
    return serve


def run(args: argparse.Namespace) -> int:
    """``samplm serve-web``: check the page folder, then serve it until Ctrl-C."""
    from ..export.web import serve_web

    server = serve_web(
        args.page, models=args.models, host=args.host, port=args.port, quiet=not args.log_requests
    )
    host, bound = server.server_address[:2]
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "") else host  # an address a browser here opens
    url = f"http://{shown_host}:{bound}/index.html"
    print(f"serving {Path(args.page).resolve()} at {url} (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    finally:
        server.server_close()
    return 0
