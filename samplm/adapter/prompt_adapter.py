"""``PromptAdapter``: the trainable part of a task (PLM, optionally PMM) and the one owner of its folder.

An adapter is a directory::

    adapter_config.json         # AdapterConfig (format, task, hyper-parameters, base fingerprint, ...)
    adapter_model.safetensors   # weights: "plm.*" (and "pmm.*"); the config is also in its header
    README.md                   # model card with YAML front matter
    prototype.safetensors       # optional: the task's TargetPrototype, for click-free segmentation

:class:`PromptAdapter` saves, loads (local, Hub or short name, through :mod:`samplm.adapter.hub`),
pushes and verifies all four files; no other module reads or writes them. Loading never unpickles
anything and is strict: any problem raises :class:`~samplm.errors.AdapterFormatError` (or
:class:`~samplm.errors.PrototypeError` for the prototype) naming the file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from ..base.bases import as_identity
from ..base.interface import SAM_FAMILY, family_name
from ..constants import (
    ADDED_IN_FORMAT,
    CONFIG_NAME,
    MODEL_CARD_NAME,
    SAFETENSORS_CONFIG_KEY,
    WEIGHTS_NAME,
)
from ..errors import AdapterCompatibilityError, AdapterFormatError, FingerprintMismatchWarning
from ..utils.checks import first_line, printable
from ..utils.files import atomic_write, atomic_write_text, sha256_file
from ..version import __version__
from .config import AdapterConfig, BaseModelInfo
from .hub import ResolvedAdapter, resolve_adapter, upload_adapter_folder
from .plm import PromptLearningModule
from .pmm import PointMatchingModule
from .prototype import TargetPrototype

#: Float dtypes an adapter's weights may be stored and loaded in.
WEIGHT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


class PromptAdapter(nn.Module):
    """A per-task Prompt Learning Module (and optional Point Matching Module) for a frozen SAM.

    ``PromptAdapter(config)`` builds a fresh adapter whose PLM is an exact identity (plain SAM);
    :meth:`load` / :meth:`from_pretrained` read a trained one.

    Args:
        config: hyper-parameters and metadata; defaults to the paper's PLM-only design.

    Attributes:
        prototype: the task's :class:`~samplm.adapter.prototype.TargetPrototype` (``prototype.safetensors``
            in the folder), or ``None``; saved and pushed with the adapter when set.
        source: where a loaded adapter came from (``"local directory ..."``, a Hub repo), else ``None``.
    """

    def __init__(self, config: AdapterConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else AdapterConfig()
        self.prototype: TargetPrototype | None = None
        self.source: str | None = None
        self.plm = PromptLearningModule(**dataclasses.asdict(self.config.plm))
        self.pmm: PointMatchingModule | None = (
            PointMatchingModule(**dataclasses.asdict(self.config.pmm))
            if self.config.pmm is not None
            else None
        )

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config: AdapterConfig | dict[str, Any] | str | os.PathLike[str]) -> PromptAdapter:
        """A fresh (untrained) adapter from an :class:`AdapterConfig`, a dict, or a JSON file.

        A dict may omit the ``format`` header; a file must be a complete ``adapter_config.json``.
        """
        if isinstance(config, AdapterConfig):
            return cls(config)
        if isinstance(config, dict):
            from ..constants import ADAPTER_FORMAT, ADAPTER_FORMAT_VERSION

            data = {"format": ADAPTER_FORMAT, "format_version": ADAPTER_FORMAT_VERSION, **config}
            return cls(AdapterConfig.from_dict(data))
        return cls(_read_config(Path(config)).config)

    @classmethod
    def load(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool | None = None,
        namespace: str | None = None,
        adapters_dir: str | os.PathLike[str] | None = None,
        endpoint: str | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> PromptAdapter:
        """Load a trained adapter from a local path, a Hub repo or a short name.

        Args:
            name_or_path: local directory or ``.safetensors`` file, ``"org/repo"`` /
                ``"org/repo@revision"``, or a short name such as ``"nose"`` (see :mod:`samplm.adapter.hub`).
            revision, token, cache_dir, local_files_only, endpoint: Hugging Face Hub options.
            namespace: Hub namespace for short names (default ``$SAMPLM_HUB_NAMESPACE`` or ``samplm``).
            adapters_dir: local directory for short names (default ``$SAMPLM_ADAPTERS_DIR``).
            device, dtype: where to put the weights (default: CPU, as stored).

        Raises:
            AdapterNotFoundError: nothing resolved (the message lists every place tried).
            AdapterFormatError: the files exist but are invalid (names the file and the problem).
        """
        resolved = resolve_adapter(
            name_or_path,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            namespace=namespace,
            adapters_dir=adapters_dir,
            endpoint=endpoint,
        )
        adapter = cls.from_files(resolved)
        return adapter.to(device=device, dtype=dtype) if device or dtype else adapter

    from_pretrained = load

    @classmethod
    def from_files(cls, resolved: ResolvedAdapter) -> PromptAdapter:
        """Build an adapter from resolved local files, validating everything (the weights against the
        config's SHA-256, the tensors against the config, the prototype's header and values)."""
        weights_path = resolved.weights
        read = _read_config(resolved.config) if resolved.config is not None else None
        if read is not None and read.config.weights_sha256 is not None:
            actual = sha256_file(weights_path)
            if actual != read.config.weights_sha256:
                raise AdapterFormatError(
                    weights_path,
                    f"SHA-256 {actual} does not match weights_sha256 {read.config.weights_sha256} "
                    f"recorded in {resolved.config}: the file is corrupted, truncated or was replaced",
                )
        tensors, header = _read_weights(weights_path)
        read = read or header
        if read is None:
            raise AdapterFormatError(
                weights_path, f"no {CONFIG_NAME} beside it and no samplm config in its safetensors header"
            )
        adapter = cls(read.config)
        tensors = with_older_format_defaults(tensors, adapter.state_dict(), read.format_version)
        _check_state_dict(adapter.state_dict(), tensors, weights_path)
        adapter.load_state_dict(tensors, strict=True)
        adapter.eval()
        adapter.source = resolved.source
        if resolved.prototype is not None:
            adapter.prototype = TargetPrototype.load(resolved.prototype)
        return adapter

    # ------------------------------------------------------------------ properties
    @property
    def task(self) -> str:
        return self.config.task

    def num_parameters(self, module: str | None = None) -> int:
        """Parameter count of the whole adapter, or of ``"plm"`` / ``"pmm"``."""
        target = self if module is None else getattr(self, module)
        return 0 if target is None else sum(p.numel() for p in target.parameters())

    # ------------------------------------------------------------------ base model
    def bind_base_model(
        self, sam: Any, *, model_type: str | None = None, checkpoint: str | None = None
    ) -> None:
        """Record the base this adapter is trained against (family and fingerprint) in the config.

        Args:
            sam: a ``segment_anything`` ``Sam``, a ``sam2`` model, or any base
                (:class:`~samplm.base.interface.BaseIdentity`, e.g. :class:`samplm.hf.SamAdapterModel`).
            model_type: the base's ``--model-type`` (kept if not given).
            checkpoint: the checkpoint's file name (kept if not given).
        """
        base = as_identity(sam)
        self.check_width(base)
        self.config.base_model = BaseModelInfo(
            model_type=model_type or self.config.base_model.model_type,
            fingerprint=base.fingerprint(),
            checkpoint=checkpoint or self.config.base_model.checkpoint,
            family=base.family,
        )

    def check_width(self, sam: Any) -> None:
        """Raise :class:`AdapterCompatibilityError` if the PLM width differs from the base's prompt width."""
        width = as_identity(sam).embed_dim
        if width != self.config.plm.embed_dim:
            raise AdapterCompatibilityError(
                f"adapter {self.task!r} has embed_dim {self.config.plm.embed_dim} but this SAM's "
                f"prompt encoder produces {width}-d tokens"
            )

    def check_family(self, sam: Any) -> None:
        """Raise :class:`AdapterCompatibilityError` (one line naming both) if the adapter was trained on
        another base family (a SAM 1 adapter on SAM 2.1, ...). Files without a family are SAM 1's; an
        adapter that records no base at all (a fresh one, never bound) runs on any family."""
        recorded = self.config.base_model
        if recorded.family is None and recorded.fingerprint is None and recorded.model_type is None:
            return
        trained, given = recorded.family or SAM_FAMILY, as_identity(sam).family
        if trained != given:
            raise AdapterCompatibilityError(
                f"adapter {self.task!r} was trained on a {family_name(trained)} base and cannot run on this "
                f"{family_name(given)} base; train one on it (samplm train --model-type ...)"
            )

    def check_compatible(self, sam: Any, *, strict: bool = False, fingerprint: str | None = None) -> bool:
        """Check that this adapter fits a base.

        Args:
            sam: the model the adapter will run with (as :meth:`bind_base_model`).
            strict: raise instead of warn when the fingerprint differs.
            fingerprint: the base's fingerprint if already computed.

        Returns:
            ``True`` if the recorded fingerprint matches; ``False`` if it differs (a
            :class:`FingerprintMismatchWarning` is issued) or none was recorded.

        Raises:
            AdapterCompatibilityError: another base family, wrong width, or a fingerprint mismatch with
                ``strict=True``.
        """
        base = as_identity(sam)
        self.check_family(base)
        self.check_width(base)
        expected = self.config.base_model.fingerprint
        if expected is None:
            return False
        actual = fingerprint or base.fingerprint()
        if actual == expected:
            return True
        message = (
            f"adapter {self.task!r} was trained against a SAM with fingerprint {printable(expected)} "
            f"({printable(self.config.base_model.model_type or 'unknown type')}), but this SAM's prompt "
            f"encoder + mask decoder hash to {actual}; results may be poor"
        )
        if strict:
            raise AdapterCompatibilityError(message)
        warnings.warn(message, FingerprintMismatchWarning, stacklevel=3)
        return False

    # ------------------------------------------------------------------ saving
    def save_pretrained(
        self, save_directory: str | os.PathLike[str], *, model_card: bool = True, repo_id: str | None = None
    ) -> Path:
        """Write ``adapter_config.json``, ``adapter_model.safetensors``, ``README.md`` and, when
        :attr:`prototype` is set, ``prototype.safetensors``, each atomically.

        Weights are stored as float32 on CPU. Each file is written to a temporary name and renamed,
        so an interrupted save never leaves a half-written file under the final name. Without a
        prototype, a ``prototype.safetensors`` already in the directory is left as it is.

        Returns:
            The directory.
        """
        directory = Path(save_directory)
        if directory.exists() and not directory.is_dir():
            raise NotADirectoryError(f"{directory} exists and is not a directory")
        config = dataclasses.replace(self.config, samplm_version=__version__, weights_sha256=None)
        state = {
            key: value.detach().to(device="cpu", dtype=torch.float32).contiguous()
            for key, value in self.state_dict().items()
        }
        header = {SAFETENSORS_CONFIG_KEY: config.to_json()}
        weights = atomic_write(
            directory / WEIGHTS_NAME, lambda tmp: save_file(state, str(tmp), metadata=header)
        )
        config.weights_sha256 = sha256_file(weights)
        atomic_write_text(directory / CONFIG_NAME, config.to_json())
        if model_card:
            from .model_card import render_model_card

            card = render_model_card(config, self.num_parameters(), repo_id=repo_id)
            atomic_write_text(directory / MODEL_CARD_NAME, card)
        if self.prototype is not None:
            self.prototype.save(directory)
        self.config = config
        return directory

    def push_to_hub(
        self,
        repo_id: str,
        *,
        token: str | bool | None = None,
        private: bool | None = None,
        revision: str | None = None,
        commit_message: str | None = None,
        endpoint: str | None = None,
    ) -> str:
        """Save to a temporary directory and upload its files (the prototype too, when set) to ``repo_id``
        (created if needed).

        Returns:
            The URL of the commit.
        """
        with tempfile.TemporaryDirectory(prefix="samplm-push-") as tmp:
            self.save_pretrained(tmp, repo_id=repo_id)
            return upload_adapter_folder(
                tmp,
                repo_id,
                token=token,
                private=private,
                revision=revision,
                commit_message=commit_message or f"Upload samplm adapter {self.task!r}",
                endpoint=endpoint,
            )

    def extra_repr(self) -> str:
        return f"task={self.task!r}, params={self.num_parameters():,}"


class _ReadConfig(NamedTuple):
    """A parsed adapter config and the format version its file was written in."""

    config: AdapterConfig
    format_version: int


def _parsed_config(data: Any, source: str | os.PathLike[str]) -> _ReadConfig:
    """Validate the JSON object ``data`` (:meth:`AdapterConfig.from_dict`) and keep its format version."""
    return _ReadConfig(AdapterConfig.from_dict(data, source=source), data["format_version"])


def _read_config(path: Path) -> _ReadConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise AdapterFormatError(path, "file does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise AdapterFormatError(path, f"cannot be read as UTF-8 text ({exc})") from exc
    return _parsed_config(_parse_json(text, path, "is"), path)


def _parse_json(text: str, source: str | os.PathLike[str], what: str) -> Any:
    """``json.loads`` whose failures (invalid or absurdly nested JSON) are :class:`AdapterFormatError`."""
    try:
        return json.loads(text)
    except ValueError as exc:  # invalid JSON, or an integer too long to convert (over 4300 digits)
        raise AdapterFormatError(source, f"{what} not valid JSON ({first_line(exc)})") from exc
    except RecursionError as exc:
        raise AdapterFormatError(source, f"{what} nested too deeply to be an adapter config") from exc


def _read_weights(path: Path) -> tuple[dict[str, Tensor], _ReadConfig | None]:
    """Read every tensor and the embedded config of a safetensors file (no pickle involved)."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise AdapterFormatError(path, f"is not a readable safetensors file ({exc})") from exc
    embedded = metadata.get(SAFETENSORS_CONFIG_KEY)
    if embedded is None:
        return tensors, None
    data = _parse_json(embedded, path, "embedded samplm config is")
    return tensors, _parsed_config(data, f"{path} (header)")


def with_older_format_defaults(
    found: dict[str, Tensor], fresh: dict[str, Tensor], version: int
) -> dict[str, Tensor]:
    """``found`` (weights of a format ``version`` file) completed with the weights that later versions
    added (:data:`ADDED_IN_FORMAT`), as the fresh adapter ``fresh`` holds them (plain SAM's behaviour).
    A file of the current version must hold every weight itself."""
    added = [key for v, keys in ADDED_IN_FORMAT.items() if v > version for key in keys]
    absent = [key for key in added if key in fresh and key not in found]
    return {**found, **{key: fresh[key].clone() for key in absent}}


def _check_state_dict(expected: dict[str, Tensor], found: dict[str, Tensor], path: Path) -> None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        raise AdapterFormatError(path, "weights do not match the config: " + "; ".join(parts))
    for key, tensor in found.items():
        want = expected[key]
        if tuple(tensor.shape) != tuple(want.shape):
            raise AdapterFormatError(
                path, f"tensor {key!r} has shape {tuple(tensor.shape)}, expected {tuple(want.shape)}"
            )
        if not tensor.is_floating_point():
            raise AdapterFormatError(path, f"tensor {key!r} has non-float dtype {tensor.dtype}")
    check_finite(found, path)


def check_finite(tensors: dict[str, Tensor], source: str | os.PathLike[str]) -> None:
    """Raise :class:`AdapterFormatError` naming ``source`` and the first tensor holding NaN or inf, or of a
    float dtype samplm does not load (float8 and other formats ``isfinite`` does not implement)."""
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and tensor.dtype not in WEIGHT_DTYPES:
            raise AdapterFormatError(
                source,
                f"tensor {key!r} has dtype {tensor.dtype}, which samplm does not load; save the adapter "
                "in float32 (or float16, bfloat16, float64)",
            )
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise AdapterFormatError(source, f"tensor {key!r} contains NaN or infinite values")
