"""Patch features from a frozen backbone: two stages, locally averaged, aligned, concatenated.

As in PatchCore, each stage's map is smoothed with a 3x3 average (so a patch sees its
neighbourhood), the deeper map is upsampled to the shallower one's grid, and channels are joined.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from mmad.data.images import to_8bit
from mmad.errors import ConfigError

from .backbone import efficientnet_lite0


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present; asking for CUDA without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is available (use --device auto or cpu)")
    return torch.device(name)


def load_image(path: Path, size: int, corrupt: str | None = None) -> np.ndarray:
    """One RGB image at size x size as float32 0..255; high-bit-depth images are scaled to 8 bits
    as the MLLM path does; a corruption (mmad.corruptions) is applied at the file's own resolution."""
    raw = Path(path).read_bytes()
    with Image.open(io.BytesIO(raw)) as image:
        image.load()
        image = to_8bit(image)
        if corrupt is not None:
            from mmad.data.corruptions import corrupt as apply
            image = apply(image.convert("RGB"), corrupt, raw)
        return np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)


def load_images(paths: Sequence[Path], size: int, corrupt: str | None = None) -> torch.Tensor:
    """RGB images resized to size x size, as a float tensor [B, 3, size, size] in 0..255."""
    arrays = [load_image(path, size, corrupt) for path in paths]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


class FeatureExtractor:
    """Frozen backbone -> [B, C, H, W] patch features on the grid of `grid_stage` (default: the first)."""

    def __init__(self, stages: Sequence[int], device: torch.device, image_size: int = 224,
                 model: torch.nn.Module | None = None, grid_stage: int | None = None, raw: bool = False) -> None:
        self.stages = tuple(stages)
        self.raw = raw  # return the chosen stages' maps as they are (Reverse Distillation's teacher)
        self.grid_stage = grid_stage if grid_stage is not None else self.stages[0]
        self.device = device
        self.image_size = image_size
        self.model = (model or efficientnet_lite0()).to(device).eval()

    @torch.no_grad()
    def __call__(self, pixels: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        maps = self.model.features(self.model.normalize(pixels.to(self.device)))
        if self.raw:
            return [maps[i] for i in self.stages]
        chosen = [F.avg_pool2d(maps[i], 3, stride=1, padding=1) for i in self.stages]
        size = maps[self.grid_stage].shape[-2:]
        aligned = []
        for m in chosen:
            if m.shape[-2] > size[0]:
                m = F.adaptive_avg_pool2d(m, size)  # finer maps are averaged down to the grid
            elif m.shape[-2] < size[0]:
                m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
            aligned.append(m)
        return torch.cat(aligned, dim=1)

    def batches(self, paths: Sequence[Path], batch_size: int, corrupt: str | None = None) -> Iterator[torch.Tensor]:
        """Features for `paths`, batch by batch (images are read per batch, never all at once)."""
        for start in range(0, len(paths), batch_size):
            yield self(load_images(paths[start:start + batch_size], self.image_size, corrupt))
