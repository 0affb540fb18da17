"""mmad's data layer as anomalib reads it: a dataset of anomalib `ImageItem`s and a Lightning
data module, built from the image lists mmad chose (few-shot: exactly the MLLM references;
full-shot: the normal train split; scoring: the template's test images).

Images are read by the built-in detectors' loader (`features.load_image`): the same square
resize, 16-bit images scaled to 8 bits as the MLLM path does, a `--corrupt` applied at the
file's own resolution. anomalib's pre-processor then only normalises.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from .anomalib_env import import_anomalib
from .features import load_image

import_anomalib()
from anomalib.data import ImageBatch, ImageItem  # noqa: E402
from lightning.pytorch import LightningDataModule  # noqa: E402


class ImageList(Dataset):
    """Images from a list of paths, as float [3, size, size] in 0..1 with label 0 (normal: anomalib
    models that look at labels, EfficientAd's map quantiles, read only normal ones)."""

    def __init__(self, paths: Sequence[Path], size: int, corrupt: str | None = None) -> None:
        self.paths = list(paths)
        self.size = size
        self.corrupt = corrupt

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> ImageItem:
        pixels = load_image(self.paths[index], self.size, self.corrupt)
        image = torch.from_numpy(pixels).permute(2, 0, 1).contiguous() / 255.0
        return ImageItem(image=image, gt_label=torch.tensor(0), image_path=str(self.paths[index]))


def image_loader(dataset: ImageList, batch_size: int, *, shuffle: bool = False, seed: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      collate_fn=ImageBatch.collate, num_workers=0)


class NormalImages(LightningDataModule):
    """The training images of one subset. Validation (only EfficientAd asks for it: its map
    quantiles) reads the same normal images in order: the test images are never seen in training."""

    name = "mmad"

    def __init__(self, train: Sequence[Path], size: int, train_batch_size: int, eval_batch_size: int, *,
                 category: str, seed: int) -> None:
        super().__init__()
        self.dataset = ImageList(train, size)
        self.train_batch_size = train_batch_size
        self.eval_batch_size = eval_batch_size
        self.category = category
        self.seed = seed

    def train_dataloader(self) -> DataLoader:
        return image_loader(self.dataset, self.train_batch_size, shuffle=True, seed=self.seed)

    def val_dataloader(self) -> DataLoader:
        return image_loader(self.dataset, self.eval_batch_size)
