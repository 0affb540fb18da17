"""PaDiM (Defard et al., 2021): a Gaussian per patch position over normal images; a test patch's
anomaly is its Mahalanobis distance to its position's Gaussian, an image's score the largest.

Statistics are accumulated in float64 batch by batch (sum and sum of outer products), so fitting
never holds all training features at once. A random, seeded subset of channels keeps the
per-position covariance small; `eps * I` keeps it invertible with few images.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


class Padim:
    def __init__(self, *, dims: int = 100, eps: float = 0.01, seed: int = 0) -> None:
        self.dims = dims
        self.eps = eps
        self.seed = seed
        self.channels: torch.Tensor | None = None
        self.mean: torch.Tensor | None = None  # [P, d]
        self.inv_cov: torch.Tensor | None = None  # [P, d, d]

    def _select(self, features: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, P, d] with the chosen channels."""
        if self.channels is None:
            c = features.shape[1]
            generator = torch.Generator(device="cpu").manual_seed(self.seed)
            self.channels = torch.randperm(c, generator=generator)[:min(self.dims, c)].sort().values
        chosen = features[:, self.channels.to(features.device)]
        return chosen.flatten(2).transpose(1, 2)

    def fit(self, feature_batches: Iterable[torch.Tensor], *,
            check_stop: Callable[[], None] | None = None) -> Padim:
        """One pass over the batches; `check_stop()` (the same hook as the other detectors') is
        asked before each and may raise to abandon the fit."""
        total = None
        outer = None
        count = 0
        for features in feature_batches:
            if check_stop is not None:
                check_stop()
            x = self._select(features).double()
            batch_sum = x.sum(0)
            batch_outer = torch.einsum("bpd,bpe->pde", x, x)
            total = batch_sum if total is None else total + batch_sum
            outer = batch_outer if outer is None else outer + batch_outer
            count += x.shape[0]
        if not count:
            raise ValueError("PaDiM needs at least one normal image")
        mean = total / count
        cov = (outer - count * torch.einsum("pd,pe->pde", mean, mean)) / max(count - 1, 1)
        cov = cov + self.eps * torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
        self.mean = mean
        self.inv_cov = torch.linalg.inv(cov)
        return self

    def score(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(image scores [B], Mahalanobis maps [B, H, W])."""
        if self.mean is None:
            raise RuntimeError("fit() first")
        b, _, h, w = features.shape
        delta = self._select(features).double() - self.mean
        squared = torch.einsum("bpd,pde,bpe->bp", delta, self.inv_cov, delta).clamp_min(0)
        maps = squared.sqrt().reshape(b, h, w).float()
        return maps.amax(dim=(1, 2)), maps
