"""Run by test_train.py under ``torchrun --nproc_per_node 2``: trains on the given task and saves
each process's final adapter weights to ``<out>/rank<R>.safetensors``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from samplm.base import build_small_vit_sam
from samplm.cache.embeddings import EmbeddingCache
from samplm.data import read_mask_folder
from samplm.train.settings import TrainConfig
from samplm.train.step_model import StepModel
from samplm.train.trainer import train
from samplm.train.training_set import TrainingSet


def main(data: Path, out: Path) -> None:
    torch.set_num_threads(1)
    sam = build_small_vit_sam(image_size=128, encoder_dim=32, encoder_depth=1, seed=0)
    dataset = read_mask_folder(data / "images", data / "masks")
    cache = EmbeddingCache.for_model(data / "cache", sam)  # built by the test beforehand
    train_set = TrainingSet(dataset, cache, sam, num_points=8, progress=False)
    seen: list[str] = []
    original = StepModel.forward

    def recording_forward(self, batch, cell):
        seen.extend(i for group in batch for i in group.instance_ids)
        return original(self, batch, cell)

    StepModel.forward = recording_forward
    config = TrainConfig(steps=3, batch_size=2, lr=1e-2, warmup_steps=1, pmm_points=8, checkpoint_every=100)
    result = train(sam, train_set, out / "run", config=config, progress=False)
    rank = os.environ.get("RANK", "0")
    state = {k: v.detach().contiguous() for k, v in result.last.state_dict().items()}
    save_file(state, str(out / f"rank{rank}.safetensors"))
    (out / f"rank{rank}.seen").write_text("\n".join(seen))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
