"""Resolve an adapter name to local files: a path, a Hugging Face Hub repo, or a short name.

Resolution order for ``PromptAdapter.load(name)``:

1. ``name`` is an existing local directory (holding ``adapter_config.json`` and
   ``adapter_model.safetensors``) or an existing ``.safetensors`` file.
2. ``name`` looks like ``org/repo`` or ``org/repo@revision``: both files are fetched with
   ``huggingface_hub.hf_hub_download`` (its cache, token, ``HF_HUB_OFFLINE`` and revision pinning apply).
3. ``name`` is a bare short name such as ``"nose"``: first ``<adapters_dir>/nose/`` (default
   ``$SAMPLM_ADAPTERS_DIR`` or ``~/.cache/samplm/adapters``), then the Hub repo
   ``<namespace>/nose`` (default namespace ``$SAMPLM_HUB_NAMESPACE`` or ``samplm``).

If nothing resolves, :class:`~samplm.errors.AdapterNotFoundError` lists every place tried and why.

An unreachable Hub (connection refused, DNS failure, no answer within ``$HF_HUB_ETAG_TIMEOUT`` seconds,
default 10) fails fast: one ``HEAD`` without retries (``get_hf_file_metadata``, as ``hf_hub_download``
itself first tries), then only the local Hub cache is used, and the error says so with a hint. Without
this, ``hf_hub_download`` retries a file that is not cached with exponential backoff (about 23 s).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import constants as hf_constants
from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from ..constants import (
    CONFIG_NAME,
    DEFAULT_ADAPTERS_DIR,
    DEFAULT_HUB_NAMESPACE,
    ENV_ADAPTERS_DIR,
    ENV_HF_ENDPOINT,
    ENV_HF_OFFLINE,
    ENV_HUB_NAMESPACE,
    LIBRARY_NAME,
    MODEL_CARD_NAME,
    PROTOTYPE_NAME,
    WEIGHTS_NAME,
)
from ..errors import AdapterNameError, AdapterNotFoundError, HubUnreachableError
from ..utils.checks import first_line, shown

# Hub ids: ``org/repo`` (each part at most 96 characters, as the Hub allows) and short names. Matched
# with ``fullmatch`` and ASCII classes: no trailing newline, no other whitespace, no ``..``.
_REPO_RE = re.compile(
    r"(?P<repo>[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96})(?:@(?P<rev>.*))?", re.ASCII | re.DOTALL
)
_SHORT_RE = re.compile(r"[A-Za-z0-9][\w.-]{0,95}", re.ASCII)
# A branch, tag or commit: ``/``-separated parts of word characters, ``.`` and ``-``.
_REVISION_RE = re.compile(r"[\w.-]+(?:/[\w.-]+)*", re.ASCII)
#: Longest name ``resolve_adapter`` looks up (longer ones cannot be paths on common file systems).
MAX_NAME_LENGTH = 4096
MAX_REVISION_LENGTH = 255
_TRUE = {"1", "true", "yes", "on"}
ENV_HF_ETAG_TIMEOUT = "HF_HUB_ETAG_TIMEOUT"
UNREACHABLE_HINT = (
    "The Hub could not be reached: give the adapter's local path (a directory or a .safetensors file), "
    "or set HF_HUB_OFFLINE=1 to use only the local Hub cache without trying the network."
)


@dataclass(frozen=True)
class ResolvedAdapter:
    """Local files of an adapter and where they came from.

    Attributes:
        weights: path of the ``.safetensors`` file.
        config: path of ``adapter_config.json``, or ``None`` when the config is embedded in the
            safetensors header (a lone ``.safetensors`` file).
        source: human-readable origin (``"local directory ..."``, ``"hub org/repo@rev"``).
        prototype: path of the optional ``prototype.safetensors`` beside the weights, if there is one.
    """

    weights: Path
    config: Path | None
    source: str
    prototype: Path | None = None


def default_namespace(namespace: str | None = None) -> str:
    """Hub namespace for short names: argument, else ``$SAMPLM_HUB_NAMESPACE``, else ``samplm``."""
    return namespace or os.environ.get(ENV_HUB_NAMESPACE) or DEFAULT_HUB_NAMESPACE


def default_adapters_dir(adapters_dir: str | os.PathLike[str] | None = None) -> Path:
    """Local directory for short names: argument, else ``$SAMPLM_ADAPTERS_DIR``, else the default."""
    chosen = adapters_dir or os.environ.get(ENV_ADAPTERS_DIR) or DEFAULT_ADAPTERS_DIR
    return Path(chosen).expanduser()


def hub_endpoint(endpoint: str | None = None) -> str | None:
    """Hub endpoint: argument, else ``$HF_ENDPOINT`` read now, else huggingface_hub's default."""
    return endpoint or os.environ.get(ENV_HF_ENDPOINT) or None


def offline_mode(local_files_only: bool | None = None) -> bool:
    """``local_files_only`` if given, else whether ``$HF_HUB_OFFLINE`` is set to a true value now."""
    if local_files_only is not None:
        return local_files_only
    return os.environ.get(ENV_HF_OFFLINE, "").strip().lower() in _TRUE


def parse_repo_id(name: str) -> tuple[str, str | None] | None:
    """``"org/repo@rev"`` -> ``("org/repo", "rev")``; ``None`` if ``name`` is not a repo id.

    Raises:
        AdapterNameError: ``name`` is a repo id with a malformed revision (see :func:`check_revision`).
    """
    match = _REPO_RE.fullmatch(name)
    if match is None or ".." in match["repo"]:
        return None
    return match["repo"], check_revision(match["rev"])


def check_revision(revision: str | None) -> str | None:
    """``revision`` if it is a plausible branch, tag or commit name (``None`` passes).

    Parts separated by single ``/`` (as in branch names like ``feature/x``), made of letters, digits,
    ``_``, ``.`` and ``-``; no ``..``, no whitespace or control characters, at most 255 characters.

    Raises:
        AdapterNameError: otherwise (nothing is sent to the Hub).
    """
    if revision is None:
        return None
    text = revision if isinstance(revision, str) else repr(revision)
    if len(text) <= MAX_REVISION_LENGTH and _REVISION_RE.fullmatch(text) and ".." not in text:
        return revision
    raise AdapterNameError(
        f"revision {shown(text)} is not a valid branch, tag or commit name: use letters, digits, '_', "
        f"'.', '-' and single '/' between parts, no '..' or whitespace, at most {MAX_REVISION_LENGTH} "
        "characters"
    )


def _checked_name(text: str) -> str:
    """``text`` unless it is longer than any name or path can be (:class:`AdapterNameError`)."""
    if len(text) > MAX_NAME_LENGTH:
        raise AdapterNameError(
            f"adapter name {shown(text)} is {len(text)} characters long; names and paths are at most "
            f"{MAX_NAME_LENGTH}"
        )
    return text


def resolve_adapter(
    name: str | os.PathLike[str],
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool | None = None,
    namespace: str | None = None,
    adapters_dir: str | os.PathLike[str] | None = None,
    endpoint: str | None = None,
) -> ResolvedAdapter:
    """Find an adapter's files; see the module docstring for the order.

    Args:
        name: local path, ``org/repo[@revision]``, or short name.
        revision: Hub revision (branch, tag or commit); overrides an ``@revision`` suffix.
        token: Hub token (``None``: huggingface_hub's stored token, ``False``: anonymous).
        cache_dir: huggingface_hub cache directory.
        local_files_only: only use the Hub cache (default: ``$HF_HUB_OFFLINE``).
        namespace: Hub namespace for short names.
        adapters_dir: local directory for short names.
        endpoint: Hub endpoint (default: ``$HF_ENDPOINT``, read at call time).

    Raises:
        AdapterNotFoundError: nothing resolved; ``.tried`` lists each attempt with its reason.
    """
    text = _checked_name(os.fspath(name))
    check_revision(revision)
    tried: list[str] = []
    hints: list[str] = []

    local = _local_candidate(Path(text).expanduser(), tried)
    if local is not None:
        return local

    repo = parse_repo_id(text)
    hub_kwargs = {
        "token": token,
        "cache_dir": cache_dir,
        "local_files_only": offline_mode(local_files_only),
        "endpoint": hub_endpoint(endpoint),
    }
    if repo is not None:
        repo_id, suffix_rev = repo
        found = _hub_candidate(repo_id, revision or suffix_rev, tried, hints, **hub_kwargs)
        if found is not None:
            return found
    elif _SHORT_RE.fullmatch(text):
        local = _local_candidate(default_adapters_dir(adapters_dir) / text, tried)
        if local is not None:
            return local
        repo_id = f"{default_namespace(namespace)}/{text}"
        found = _hub_candidate(repo_id, revision, tried, hints, **hub_kwargs)
        if found is not None:
            return found
    else:
        tried.append(
            f"{shown(text)} is neither an existing path, an 'org/repo[@revision]' id nor a short name"
        )
    raise AdapterNotFoundError(text if len(text) <= 200 else shown(text, 200), tried, hint=" ".join(hints))


def _local_candidate(path: Path, tried: list[str]) -> ResolvedAdapter | None:
    try:
        return _local_files(path, tried)
    except (OSError, ValueError) as exc:  # e.g. a name longer than the file system allows, a NUL byte
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        tried.append(f"local path {shown(str(path), 120)} (cannot be looked up: {reason})")
        return None


def _local_files(path: Path, tried: list[str]) -> ResolvedAdapter | None:
    if path.is_dir():
        weights, config = path / WEIGHTS_NAME, path / CONFIG_NAME
        missing = [p.name for p in (config, weights) if not p.is_file()]
        if not missing:
            prototype = path / PROTOTYPE_NAME if (path / PROTOTYPE_NAME).is_file() else None
            return ResolvedAdapter(weights, config, f"local directory {path}", prototype)
        tried.append(f"local directory {path} (missing {', '.join(missing)})")
    elif path.is_file():
        if path.suffix == ".safetensors":
            sibling = path.parent / CONFIG_NAME
            config = sibling if path.name == WEIGHTS_NAME and sibling.is_file() else None
            return ResolvedAdapter(weights=path, config=config, source=f"local file {path}")
        tried.append(f"local file {path} (not a .safetensors file)")
    else:
        tried.append(f"local path {path} (does not exist)")
    return None


def _hub_candidate(
    repo_id: str, revision: str | None, tried: list[str], hints: list[str], **kwargs
) -> ResolvedAdapter | None:
    label = f"hub {repo_id}" + (f"@{revision}" if revision else "")
    if kwargs.get("endpoint"):
        label += f" at {kwargs['endpoint']}"
    unreachable = None if kwargs["local_files_only"] else _hub_unreachable(repo_id, revision, **kwargs)
    if unreachable is not None:  # the cache only, as offline: hf_hub_download would retry for ~23 s
        kwargs = {**kwargs, "local_files_only": True}
    paths = {}
    for filename in (CONFIG_NAME, WEIGHTS_NAME):
        try:
            paths[filename] = Path(
                hf_hub_download(repo_id, filename, revision=revision, library_name=LIBRARY_NAME, **kwargs)
            )
        except LocalEntryNotFoundError as exc:
            if unreachable is not None:
                reason = f"cannot reach the Hub ({unreachable}) and not in the local Hub cache"
                hints.append(UNREACHABLE_HINT)
            elif kwargs["local_files_only"]:
                reason = "offline and not in the local Hub cache"
            else:
                reason = first_line(exc)
            tried.append(f"{label} ({filename}: {reason})")
            return None
        except (
            RepositoryNotFoundError,
            RevisionNotFoundError,
            EntryNotFoundError,
            HfHubHTTPError,
            OSError,
            ValueError,
        ) as exc:
            tried.append(f"{label} ({type(exc).__name__}: {first_line(exc)})")
            return None
    prototype = _optional_download(repo_id, PROTOTYPE_NAME, revision, **kwargs)
    return ResolvedAdapter(paths[WEIGHTS_NAME], paths[CONFIG_NAME], label, prototype)


def _hub_unreachable(repo_id: str, revision: str | None, **kwargs) -> str | None:
    """Why the Hub cannot be reached now (one ``HEAD`` of the config, no retries), or ``None`` when it
    answers (whatever it answers: ``hf_hub_download`` reports not-found and HTTP errors itself)."""
    url = hf_hub_url(repo_id, CONFIG_NAME, revision=revision, endpoint=kwargs["endpoint"])
    extra = {"endpoint": kwargs["endpoint"], "retry_on_errors": False}  # where this huggingface_hub has them
    accepted = _metadata_parameters()
    try:
        get_hf_file_metadata(
            url,
            token=kwargs["token"],
            timeout=etag_timeout(),
            library_name=LIBRARY_NAME,
            **{key: value for key, value in extra.items() if key in accepted},
        )
    except _unreachable_errors() as exc:
        return first_line(exc) or type(exc).__name__
    except Exception:  # reached: hf_hub_download meets and reports the same answer
        return None
    return None


def etag_timeout() -> float:
    """Seconds to wait for the Hub's answer to a file's ``HEAD``: ``$HF_HUB_ETAG_TIMEOUT`` read now, else
    huggingface_hub's (10)."""
    try:
        return float(os.environ.get(ENV_HF_ETAG_TIMEOUT, ""))
    except ValueError:
        return float(hf_constants.HF_HUB_ETAG_TIMEOUT)


@functools.cache
def _metadata_parameters() -> frozenset[str]:
    return frozenset(inspect.signature(get_hf_file_metadata).parameters)


@functools.cache
def _unreachable_errors() -> tuple[type[BaseException], ...]:
    """What the Hub client raises when no answer comes: its HTTP library's connection and timeout
    errors (httpx2/httpx for huggingface_hub >= 1, requests before), and offline mode set at import."""
    return (
        OfflineModeIsEnabled,
        *_http_library_errors(
            {
                "httpx2": ("NetworkError", "TimeoutException"),
                "httpx": ("NetworkError", "TimeoutException"),
                "requests": ("ConnectionError", "Timeout"),
            }
        ),
    )


def _http_library_errors(names: dict[str, tuple[str, ...]]) -> list[type[BaseException]]:
    """The error classes ``names`` lists per HTTP library module, for the modules that are installed."""
    errors: list[type[BaseException]] = []
    for module, wanted in names.items():
        try:
            imported = importlib.import_module(module)
        except ImportError:
            continue
        errors.extend(getattr(imported, name) for name in wanted if hasattr(imported, name))
    return errors


def _optional_download(repo_id: str, filename: str, revision: str | None, **kwargs) -> Path | None:
    """A file the repo may or may not hold (``None`` when it does not, or, with a warning, when it cannot
    be fetched now)."""
    try:
        path = hf_hub_download(repo_id, filename, revision=revision, library_name=LIBRARY_NAME, **kwargs)
    except (LocalEntryNotFoundError, EntryNotFoundError):
        return None  # the repo has none (or, offline, none was downloaded before)
    except (HfHubHTTPError, OSError, ValueError) as exc:
        warnings.warn(
            f"hub {repo_id}: could not download {filename} ({first_line(exc)}); going on without it",
            stacklevel=4,
        )
        return None
    return Path(path)


def upload_adapter_folder(
    folder: str | os.PathLike[str],
    repo_id: str,
    *,
    token: str | bool | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str = "Upload samplm adapter",
    endpoint: str | None = None,
) -> str:
    """Create ``repo_id`` if needed and upload an adapter directory's files in one commit.

    Only ``adapter_config.json``, ``adapter_model.safetensors``, ``README.md`` and, when present,
    ``prototype.safetensors`` are uploaded.
    Validate the directory first (``PromptAdapter.load(folder)``); this function only uploads.

    Returns:
        The URL of the commit.
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (folder / name).is_file()]
    if missing:
        raise AdapterNotFoundError(os.fspath(folder), [f"{folder} is missing {', '.join(missing)}"])
    if "@" in repo_id or parse_repo_id(repo_id) is None:
        raise ValueError(f"repo_id must look like 'org/name', got {shown(repo_id)}")
    check_revision(revision)
    url = hub_endpoint(endpoint)
    api = HfApi(endpoint=url, token=token, library_name=LIBRARY_NAME)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            revision=revision,
            commit_message=commit_message,
            allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, MODEL_CARD_NAME, PROTOTYPE_NAME],
        )
    except _network_errors() as exc:
        raise HubUnreachableError(
            f"uploading {folder} to {repo_id} at {url} failed: {first_line(exc)}; "
            "check the network, HF_ENDPOINT and the token"
        ) from exc
    return str(info.commit_url)


def _network_errors() -> tuple[type[BaseException], ...]:
    """What the Hub client raises when the Hub is unreachable or refuses (``OSError`` covers its HTTP
    errors; its HTTP library's transport errors are their own classes)."""
    return (
        OSError,
        *_http_library_errors(
            {"httpx2": ("HTTPError",), "httpx": ("HTTPError",), "requests": ("RequestException",)}
        ),
    )
