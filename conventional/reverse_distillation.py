"""Reverse Distillation (Deng & Li, 2022): a frozen teacher encoder, a one-class bottleneck that
squeezes its multi-scale features into one embedding, and a student decoder trained on normal
images to rebuild the teacher's features from that embedding. Where the student fails to rebuild
them (1 - cosine similarity), the image is unlike the normal ones.

The teacher is frozen, so its features are computed once per image and the student trains on
them directly: training costs only the small bottleneck + decoder. Training runs for many epochs
inside `fit`, so `fit` takes `check_stop`, called before every step: a stop (Ctrl-C, SIGTERM)
raised from it ends the fit at once instead of after the last epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn
from torch.nn import functional as F


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 2, stride=2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, padding=1))


class Bottleneck(nn.Module):
    """One-class embedding: every teacher scale brought to the coarsest grid, fused, halved once more."""

    def __init__(self, channels: Sequence[int], width: int = 96, embedding: int = 256) -> None:
        super().__init__()
        coarsest = len(channels) - 1
        self.reduce = nn.ModuleList()
        for index, c in enumerate(channels):
            steps = coarsest - index
            layers = [_block(c if s == 0 else width, width, stride=2) for s in range(steps)] or [_block(c, width)]
            self.reduce.append(nn.Sequential(*layers))
        self.fuse = _block(width * len(channels), embedding, stride=2)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        size = features[-1].shape[-2:]
        reduced = []
        for reduce, feature in zip(self.reduce, features):
            x = reduce(feature)
            reduced.append(x if x.shape[-2:] == size else
                           F.interpolate(x, size=size, mode="bilinear", align_corners=False))
        return self.fuse(torch.cat(reduced, dim=1))


class StudentDecoder(nn.Module):
    """Mirrors the teacher from the coarsest scale up, returning maps shaped like the teacher's."""

    def __init__(self, channels: Sequence[int], embedding: int = 256) -> None:
        super().__init__()
        stages, cin = [], embedding
        for c in reversed(channels):
            stages.append(_up(cin, c))
            cin = c
        self.stages = nn.ModuleList(stages)

    def forward(self, embedding: torch.Tensor, sizes: Sequence[torch.Size]) -> list[torch.Tensor]:
        outputs, x = [], embedding
        for stage, size in zip(self.stages, reversed(sizes)):
            x = stage(x)
            if x.shape[-2:] != size:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            outputs.append(x)
        return outputs[::-1]


def distance_maps(teacher: Sequence[torch.Tensor], student: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """1 - cosine similarity per position and scale, [B, H_s, W_s] each."""
    return [1 - F.cosine_similarity(t, s, dim=1) for t, s in zip(teacher, student)]


class ReverseDistillation:
    def __init__(self, *, epochs: int = 30, batch_size: int = 16, learning_rate: float = 0.005, seed: int = 0,
                 grid_index: int = 1) -> None:
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.seed = seed
        self.grid_index = grid_index  # anomaly maps on this teacher scale's grid (stride 8 by default)
        self.bottleneck: Bottleneck | None = None
        self.decoder: StudentDecoder | None = None
        self.losses: list[float] = []

    def fit(self, feature_batches: Iterable[Sequence[torch.Tensor]], *,
            check_stop: Callable[[], None] | None = None) -> ReverseDistillation:
        """Train the student on the normal images' teacher features; `check_stop()` is called before
        every training step and may raise to abandon the fit (the model is then unusable)."""
        batches = [list(b) for b in feature_batches]
        teacher = [torch.cat([b[i] for b in batches]) for i in range(len(batches[0]))]
        channels = [t.shape[1] for t in teacher]
        torch.manual_seed(self.seed)
        device = teacher[0].device
        self.bottleneck = Bottleneck(channels).to(device)
        self.decoder = StudentDecoder(channels).to(device)
        parameters = list(self.bottleneck.parameters()) + list(self.decoder.parameters())
        optimizer = torch.optim.Adam(parameters, lr=self.learning_rate, betas=(0.5, 0.999))
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        count = teacher[0].shape[0]
        sizes = [t.shape[-2:] for t in teacher]
        self.bottleneck.train()
        self.decoder.train()
        for _ in range(self.epochs):
            order = torch.randperm(count, generator=generator)
            total = 0.0
            for start in range(0, count, self.batch_size):
                if check_stop is not None:
                    check_stop()
                pick = order[start:start + self.batch_size].to(device)
                if pick.numel() < 2 and count >= 2:  # batch norm needs two samples
                    pick = order[-2:].to(device)
                target = [t[pick] for t in teacher]
                rebuilt = self.decoder(self.bottleneck(target), sizes)
                loss = sum(d.mean() for d in distance_maps(target, rebuilt))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * pick.numel()
            self.losses.append(total / count)
        self.bottleneck.eval()
        self.decoder.eval()
        return self

    @torch.no_grad()
    def score(self, features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(image scores [B], summed multi-scale maps on the grid scale [B, H, W])."""
        if self.decoder is None:
            raise RuntimeError("fit() first")
        sizes = [f.shape[-2:] for f in features]
        rebuilt = self.decoder(self.bottleneck(features), sizes)
        grid = sizes[self.grid_index]
        maps = sum(F.interpolate(d[:, None], size=grid, mode="bilinear", align_corners=False)[:, 0]
                   for d in distance_maps(features, rebuilt))
        return maps.amax(dim=(1, 2)), maps
