"""The ``samplm`` command: ``embed``, ``train``, ``eval``, ``demo``, ``segment``, ``fit-prototype``,
``export``, ``push``, ``serve-web`` and ``web-setup``.

One module per command (``train.py``, ``eval.py``, ...), each with ``add_parser`` and ``run``. Their
options are the fields of settings dataclasses (:class:`~samplm.train.settings.TrainConfig`,
:class:`~samplm.eval.settings.EvalSettings`, :class:`~samplm.demo.DemoSettings`,
:class:`~samplm.segment.settings.SegmentSettings`, :class:`~samplm.export.settings.ExportSettings`, ...):
:mod:`.options` makes a flag and a config-file key of each field. Every command but ``push``,
``serve-web`` and ``web-setup`` takes ``--config FILE`` (YAML or JSON) with any of its options (long
names with ``_`` for ``-``); flags given on the command line override the file. Which SAM to build and
which embedding cache to use is decided by :mod:`samplm.workspace`; the commands only parse arguments
and call the library.

Every command that takes ``--config`` also takes ``--threads N`` (at most N CPU threads in any stage;
default ``auto``, see :mod:`samplm.utils.threads`); ``embed``, ``train``, ``eval`` and ``demo`` print one
line to stderr when the machine is oversubscribed, once the data and the SAM are loaded
(:meth:`~samplm.workspace.Workspace.hint_if_busy`).

Input errors print one line (``samplm: error: ...``) and exit with status 2: argument errors, option
values out of range (checked before any data is read, for flags and config-file values alike), missing
files, unreadable checkpoints, invalid data. ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import SamplmError
from ..utils.checks import printable
from ..utils.ranks import leave_process_group
from ..utils.threads import thread_limit, torch_threads
from ..version import __version__
from . import demo, embed, export, hub, prototype, segment, train, web
from . import eval as evaluate
from .options import Parser, UsageError, merged_options, share_config

# Commands that read --config: run(options) with the merged, checked options.
_COMMANDS: dict[str, Callable[[dict[str, Any]], int]] = {
    "embed": embed.run,
    "train": train.run,
    "eval": evaluate.run,
    "demo": demo.run,
    "segment": segment.run,
    "fit-prototype": prototype.run,
    "export": export.run,
}
# Commands that take their parsed arguments as they are (no --config file).
_PLAIN_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "push": hub.run,
    "serve-web": web.run,
    "web-setup": web.run_setup,
}


def build_parser() -> argparse.ArgumentParser:
    """The ``samplm`` parser. Each subcommand taking ``--config`` records the keys its file may hold
    (``config_keys``, with their flags in ``config_actions`` and ranges in ``config_limits``): a file may
    be shared by ``embed``, ``train`` and ``eval``."""
    parser = Parser(
        prog="samplm",
        description="Customize a frozen Segment Anything Model to your task with prompt-learning adapters.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    jobs = [embed.add_parser(sub), train.add_parser(sub), evaluate.add_parser(sub)]
    share_config(jobs)
    single = [module.add_parser(sub) for module in (demo, segment, export, prototype)]
    for command in single:
        share_config([command])
    plain = [hub.add_parser(sub), web.add_parser(sub), web.add_setup_parser(sub)]
    for command in (*jobs, *single, *plain):  # --debug also after the command: samplm train ... --debug
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``samplm`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    Input errors print one line ``samplm: error: ...`` and return 2 (with ``--debug``: raised, with
    their traceback); Ctrl-C returns 130.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        print(f"samplm: error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command in _PLAIN_COMMANDS:
            return _PLAIN_COMMANDS[args.command](args)
        return _run_command(args.command, merged_options(args))
    except (SamplmError, OSError, ValueError, KeyError) as exc:
        if args.debug:
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"samplm: error: {_escaped_lines(message)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("samplm: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    finally:
        leave_process_group()  # a sharded command's ranks each close their group before exiting


def _run_command(command: str, options: dict[str, Any]) -> int:
    """``command`` with its options under ``--threads``: a cap on torch's threads for the whole command,
    which the per-stage choice never exceeds."""
    with torch_threads(thread_limit(options.get("threads"))):
        return _COMMANDS[command](options)


def _escaped_lines(message: object) -> str:
    """An error message for the terminal: each of its lines through :func:`printable` (an ESC or other
    control character in a name read from a file is shown escaped, never sent to the terminal)."""
    return "\n".join(printable(line) for line in str(message).splitlines())
