"""PatchCore (Roth et al., 2022): a memory bank of normal patch features; a test patch's anomaly
is its distance to the nearest bank entry, and an image's score is its largest patch anomaly.

Pure torch, no training glue: `fit` takes feature maps of normal images, `score` feature maps of
test images. Scores are raw distances — never clamped or normalised into ties.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


def flatten_patches(features: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B*H*W, C]."""
    return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])


def greedy_coreset(patches: torch.Tensor, count: int, *, projection_dim: int = 128, seed: int = 0,
                   check_stop: Callable[[], None] | None = None, pool: int = 512,
                   block: int = 16384) -> torch.Tensor:
    """Indices of `count` patches chosen by k-center greedy on a random projection.

    Each greedy step adds the patch farthest from everything chosen so far, so the bank covers the
    normal feature space with few entries. The projection and the first pick are seeded.

    Done one step at a time, every step is a pass over all n patches (memory-bound: a 200-image
    full-shot fit spent minutes here). Instead each pass takes the `pool` patches farthest from
    the chosen ones, runs the greedy steps among them (their distances to each other are a small
    matrix) for as long as the best of them is still farther than the farthest patch outside the
    pool, then updates all n distances with those picks in one matrix product. Distances only
    shrink, so no patch outside the pool could have been picked instead: this is the same coreset
    as the one-step-at-a-time greedy (up to float rounding in exact ties), with a few dozen passes
    instead of thousands. `check_stop()` is called before every pick and may raise to abandon the
    selection (a stop during a long fit).
    """
    n, dims = patches.shape
    if count >= n:
        return torch.arange(n, device=patches.device)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    if dims > projection_dim:
        projection = torch.randn(dims, projection_dim, generator=generator).to(patches.device, patches.dtype)
        projected = patches @ projection
    else:
        projected = patches
    projected = projected.contiguous()
    norms = (projected * projected).sum(dim=1)  # squared distances as |x|^2 + |c|^2 - 2 x.c
    nearest = torch.full((n,), float("inf"), dtype=projected.dtype, device=projected.device)
    chosen = torch.empty(count, dtype=torch.long, device=patches.device)
    first = int(torch.randint(n, (1,), generator=generator))
    if check_stop is not None:
        check_stop()
    chosen[0] = first
    _shrink(nearest, projected, norms, chosen[:1], block)
    done, pool = 1, min(pool, n - 1)
    while done < count:
        values, candidates = torch.topk(nearest, pool + 1)
        outside = values[pool]  # no patch outside the pool is farther than this
        pool_points, pool_norms = projected[candidates[:pool]], norms[candidates[:pool]]
        among = torch.addmm(pool_norms[None], pool_points, pool_points.T, alpha=-2).add_(pool_norms[:, None])
        remaining = values[:pool].clone()
        picks: list[int] = []
        while done + len(picks) < count:
            best = int(torch.argmax(remaining))
            if picks and remaining[best] <= outside:
                break  # from here exact greedy could pick a patch outside the pool
            if check_stop is not None:
                check_stop()
            picks.append(best)
            torch.minimum(remaining, among[best], out=remaining)
            remaining[best] = -float("inf")
        new = candidates[torch.tensor(picks, device=candidates.device)]
        chosen[done:done + len(picks)] = new
        done += len(picks)
        _shrink(nearest, projected, norms, new, block)
    return chosen


def _shrink(nearest: torch.Tensor, projected: torch.Tensor, norms: torch.Tensor, centers: torch.Tensor,
            block: int) -> None:
    """nearest = min(nearest, squared distance to any of `centers`), in blocks of rows."""
    center_points = projected[centers].T.contiguous()
    center_norms = norms[centers][None]
    for start in range(0, projected.shape[0], block):
        rows = slice(start, start + block)
        distance = torch.addmm(center_norms, projected[rows], center_points, alpha=-2).amin(dim=1).add_(norms[rows])
        torch.minimum(nearest[rows], distance, out=nearest[rows])


def nearest_distance(queries: torch.Tensor, bank: torch.Tensor, *, query_chunk: int = 2048,
                     bank_chunk: int = 16384) -> torch.Tensor:
    """Euclidean distance from each query row to its nearest bank row, in bounded-memory chunks.

    Peak extra memory is query_chunk x bank_chunk floats (128 MiB at the defaults), whatever the
    bank size, so a full MVTec-size bank never runs out of memory.
    """
    result = torch.empty(queries.shape[0], dtype=queries.dtype, device=queries.device)
    for q0 in range(0, queries.shape[0], query_chunk):
        q = queries[q0:q0 + query_chunk]
        best = torch.full((q.shape[0],), float("inf"), dtype=queries.dtype, device=queries.device)
        for b0 in range(0, bank.shape[0], bank_chunk):
            best = torch.minimum(best, torch.cdist(q, bank[b0:b0 + bank_chunk]).amin(dim=1))
        result[q0:q0 + query_chunk] = best
    return result


class PatchCore:
    """Memory bank of normal patches; nearest-neighbour distance as the anomaly."""

    def __init__(self, *, coreset_ratio: float = 0.1, projection_dim: int = 128, seed: int = 0) -> None:
        if not 0 < coreset_ratio <= 1:
            raise ValueError("coreset_ratio must be in (0, 1]")
        self.coreset_ratio = coreset_ratio
        self.projection_dim = projection_dim
        self.seed = seed
        self.memory: torch.Tensor | None = None

    def fit(self, feature_batches: Iterable[torch.Tensor], *,
            check_stop: Callable[[], None] | None = None) -> PatchCore:
        """`check_stop()` is asked at every coreset step and may raise to abandon the fit."""
        patches = torch.cat([flatten_patches(f) for f in feature_batches])
        count = max(1, round(patches.shape[0] * self.coreset_ratio))
        keep = greedy_coreset(patches, count, projection_dim=self.projection_dim, seed=self.seed,
                              check_stop=check_stop)
        self.memory = patches[keep].contiguous()
        return self

    def score(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(image scores [B], patch anomaly maps [B, H, W])."""
        if self.memory is None:
            raise RuntimeError("fit() first")
        b, _, h, w = features.shape
        maps = nearest_distance(flatten_patches(features), self.memory).reshape(b, h, w)
        return maps.amax(dim=(1, 2)), maps
