"""Run-to-run noise in a test and an interval: a difference between two single runs varies with
the images (a U-statistic variance, `mmad.metrics.paired_tests`) and with the run (repeats of the same
settings, whose SD is estimated with few degrees of freedom).

numpy/scipy only; imports nothing of ours. Every quantile and tail goes through `t_sf` / `t_ppf`
with the repeats' degrees of freedom: with two or three repeats the run SD is itself very
uncertain (t = 12.7 at df 1, 4.3 at df 2, against the normal 1.96).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike


def t_sf(x: ArrayLike, df: float) -> np.ndarray:
    """Upper tail of Student's t with `df` degrees of freedom (normal for df = inf)."""
    from scipy import stats as scipy_stats  # imported on use: scipy.stats costs ~1 s at start-up
    return scipy_stats.norm.sf(x) if math.isinf(df) else scipy_stats.t.sf(x, df)


def t_ppf(q: float, df: float) -> float:
    """Quantile of Student's t (normal for df = inf)."""
    from scipy import stats as scipy_stats
    return float(scipy_stats.norm.ppf(q) if math.isinf(df) else scipy_stats.t.ppf(q, df))


def noise_df(image_variance: ArrayLike, run_variance: ArrayLike, df: float) -> np.ndarray:
    """Welch-Satterthwaite degrees of freedom of image_variance + run_variance, the image part
    known (its df is the number of images) and the run part estimated from repeats with `df`."""
    total = np.asarray(image_variance, dtype=float) + np.asarray(run_variance, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.asarray(run_variance) > 0, total ** 2 * df / np.asarray(run_variance, dtype=float) ** 2,
                        np.inf)


def noisy_p(diff: ArrayLike, image_variance: ArrayLike, run_variance: ArrayLike, df: float) -> np.ndarray:
    """p of a difference between two single runs when repeats measured the run-to-run noise.

    The larger of two p-values (an intersection-union test, so never above the nominal level):
    the images and the run noise together (diff / sqrt(image + run variance) against t with the
    Welch-Satterthwaite df), and the run noise alone (diff / sqrt(run variance) against t with the
    repeats' df): a difference the run-to-run noise explains is never significant."""
    diff = np.abs(np.asarray(diff, dtype=float))
    image_variance = np.asarray(image_variance, dtype=float)
    run_variance = np.asarray(run_variance, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        combined = 2 * _t_sf_each(diff / np.sqrt(image_variance + run_variance),
                                  noise_df(image_variance, run_variance, df))
        alone = np.where(run_variance > 0, 2 * t_sf(diff / np.sqrt(run_variance), df), 0.0)
    p = np.maximum(combined, alone)
    return np.where(diff == 0, 1.0, p)


def _t_sf_each(x: np.ndarray, df: np.ndarray) -> np.ndarray:
    x, df = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(df, dtype=float))
    out = np.empty(x.shape)
    for value in np.unique(df):
        where = df == value
        out[where] = t_sf(x[where], float(value))
    return out


def noise_band(run_variance: float, df: float, confidence: float = 0.95) -> float:
    """Half-width of the band two single runs of the same settings differ within: t(df) quantile
    x sqrt(run variance of the difference)."""
    return t_ppf((1 + confidence) / 2, df) * math.sqrt(run_variance) if run_variance >= 0 else math.nan


def noisy_interval(diff: float, low: float, high: float, run_variance: float, df: float,
                   confidence: float = 0.95) -> tuple[float, float]:
    """An image-level interval [low, high] widened by run-to-run noise: each half-width, read as
    z x SE, becomes t(df_eff) x sqrt(SE^2 + run variance), one Welch-Satterthwaite df for both
    sides; the longer side stays the longer."""
    z = t_ppf((1 + confidence) / 2, math.inf)
    image_variances = [((diff - low) / z) ** 2, ((high - diff) / z) ** 2]
    df_eff = float(noise_df(sum(image_variances) / 2, run_variance, df))  # one df for both sides
    t = t_ppf((1 + confidence) / 2, df_eff)
    return (diff - t * math.sqrt(image_variances[0] + run_variance),
            diff + t * math.sqrt(image_variances[1] + run_variance))
