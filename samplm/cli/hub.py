"""``samplm push``: upload an adapter directory to the Hugging Face Hub."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``samplm push ADAPTER REPO_ID [--token] [--private] [--revision]`` (no ``--config``)."""
    push = sub.add_parser("push", help="upload an adapter directory to the Hugging Face Hub")
    push.add_argument("adapter", help="adapter directory (validated before upload)")
    push.add_argument("repo_id", help="Hub repository, e.g. my-org/nose")
    push.add_argument("--token", help="Hub token (default: the stored huggingface_hub token)")
    push.add_argument("--private", action="store_true", help="create the repository as private")
    push.add_argument("--revision", help="branch to commit to (default main)")
    return push


def run(args: argparse.Namespace) -> int:
    """``samplm push``: load (and so verify) the adapter directory, then upload it through
    :meth:`PromptAdapter.push_to_hub` (its prototype too, when the folder has one)."""
    from ..adapter.prompt_adapter import PromptAdapter

    adapter = PromptAdapter.load(Path(args.adapter))  # validate before uploading anything
    url = adapter.push_to_hub(
        args.repo_id,
        token=args.token,
        private=args.private or None,
        revision=args.revision,
        commit_message=f"Upload samplm adapter {adapter.task!r}",
    )
    print(url)
    return 0
