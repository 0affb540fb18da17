"""Simulated score vectors for calibration tests and benchmarks: runs of one model that share each
image's difficulty (the same image is hard for every prompt) and differ by their own noise.

With difficulty SD 1 and noise SD 1/3 two runs correlate at 0.9 within a severity level, as two
prompts one word apart do. Rows are independent replicates (new images each), columns images.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def correlated_runs(rng: np.random.Generator, sizes: Sequence[int], rows: int, *, shared: float = 1.0,
                    noise: float = 1 / 3, signals: Sequence[float] = (0.6, 0.6), mllm: bool = False
                    ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Levels (images) and one rows x images score matrix per signal: signal x level + difficulty
    + own noise; MLLM-like scores are 0-100 in steps of 5 (many ties)."""
    levels = np.repeat(np.arange(len(sizes)), sizes)
    difficulty = rng.normal(0, shared, (rows, levels.size))
    runs = [levels * s + difficulty + rng.normal(0, noise, (rows, levels.size)) for s in signals]
    if mllm:
        runs = [np.clip(np.round((r * 12 + 20) / 5) * 5, 0, 100) for r in runs]
    return levels, runs
