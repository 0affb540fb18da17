"""Calibration and power of `mmad compare`'s verdicts on simulated comparisons (the figures of
docs/compare.md).

  - size: correlated null pairs (one model, one prompt word changed; A-B correlation 0.9 within a
    level) on grids shaped like the issue's examples: false positives of the primary verdict and
    of any verdict of the fixed sequence, per metric, at 5 %;
  - power against DeLong: AUROC gain 0.02 over 15 subsets x 80 images and 0.01 over 5 x 500; the
    verdict (primary question of the procedure) against DeLong's classic paired test pooled with
    the same weights, both at their own size;
  - null grids of 10 variants against one base: family-wise error of every printed verdict;
  - interval coverage on correlated null pairs (paired, and an unpaired resample for contrast),
    bootstrap variance against the sampling variance with n - 1 and n draws on levels of 6;
  - run-to-run noise: null pairs with a run-level effect and two repeats each (df 2).

    python benchmarks/bench_compare_calibration.py [--replicates 1000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scipy import stats as scipy_stats  # noqa: E402

from mmad.comparison.scopes import fixed_effects  # noqa: E402
from mmad.metrics import multiplicity, noise_rules, paired_tests, stats  # noqa: E402
from tests.simulated_pairs import correlated_runs  # noqa: E402

BASE_SIGNAL = 0.6


def signal_for_gain(sizes: tuple[int, ...], gain: float, rng: np.random.Generator) -> float:
    """The other run's signal whose expected AUROC is `gain` above the base's (secant search on
    20,000 simulated subsets)."""
    def mean_gain(signal: float) -> float:
        levels, (a, b) = correlated_runs(rng, sizes, 20000, signals=(BASE_SIGNAL, signal))
        return float(np.mean(paired_tests.metric_influences(levels, b)["auroc"].estimate
                             - paired_tests.metric_influences(levels, a)["auroc"].estimate))
    low, high = BASE_SIGNAL, BASE_SIGNAL + 0.3
    g_low, g_high = 0.0, mean_gain(high)
    for _ in range(6):
        guess = low + (gain - g_low) * (high - low) / (g_high - g_low)
        value = mean_gain(guess)
        if abs(value - gain) < gain / 50:
            return guess
        low, g_low = (guess, value) if value < gain else (low, g_low)
        high, g_high = (guess, value) if value >= gain else (high, g_high)
    return guess


def verdict_and_delong(subsets: int, sizes: tuple[int, ...], rows: int, signal: float,
                       rng: np.random.Generator) -> dict[str, float]:
    """Share of replicates where the primary AUROC verdict (and DeLong pooled alike) fire."""
    diffs, variances, delong_variances = [], [], []
    for _ in range(subsets):
        levels, (a, b) = correlated_runs(rng, sizes, rows, signals=(BASE_SIGNAL, signal))
        test = paired_tests.paired_tests(levels, a, b)["auroc"]
        classic = paired_tests.delong_paired(levels > 0, a, b)
        diffs.append(test.diff)
        variances.append(test.variance)
        delong_variances.append(classic.variance)
    weights = np.full(subsets, 1 / subsets)
    d, v = fixed_effects(weights, np.stack(diffs, 1), np.stack(variances, 1))
    _, dv = fixed_effects(weights, np.stack(diffs, 1), np.stack(delong_variances, 1))
    return {"verdict": float(np.mean(paired_tests.z_test(d, v).p < 0.05)),
            "delong": float(np.mean(paired_tests.z_test(d, dv).p < 0.05))}


def null_sizes(rows: int, rng: np.random.Generator) -> None:
    grids = {"15 subsets x 80 (3 datasets)": (3, 5, (20, 20, 20, 20), False),
             "4 subsets x 120, MLLM scores (2 datasets)": (2, 2, (30, 30, 30, 30), True),
             "6 subsets x 26, levels of 6-8 (2 datasets)": (2, 3, (8, 6, 6, 6), False),
             "5 subsets x 500 (1 dataset)": (1, 5, (125, 125, 125, 125), False)}
    for name, (datasets, per, sizes, mllm) in grids.items():
        names = [f"d{d}" for d in range(datasets) for _ in range(per)]
        tests = [paired_tests.paired_tests(*_levels_and(rng, sizes, rows, mllm)) for _ in names]
        figures = []
        for metric in paired_tests.METRICS:
            d = np.stack([t[metric].diff for t in tests], 1)
            v = np.stack([t[metric].variance for t in tests], 1)
            sequence = []
            counts = np.array([names.count(n) for n in names], dtype=float)
            if datasets > 1:
                sequence.append(paired_tests.z_test(*fixed_effects(1 / (datasets * counts), d, v)).p)
            for dataset in sorted(set(names)):
                members = np.array([n == dataset for n in names])
                sequence.append(paired_tests.z_test(*fixed_effects(members / members.sum(), d, v)).p)
            sequence += [t[metric].p for t in tests]
            rejected = multiplicity.fixed_sequence(np.stack(sequence, 1)) <= 0.05
            figures.append(f"{metric} {100 * rejected[:, 0].mean():.1f} % / {100 * rejected.any(axis=1).mean():.1f} %")
        print(f"  {name}: primary / any verdict: {'; '.join(figures)}")


def _levels_and(rng, sizes, rows, mllm):
    levels, (a, b) = correlated_runs(rng, sizes, rows, mllm=mllm)
    return levels, a, b


def null_grid_of_variants(rows: int, rng: np.random.Generator, variants: int = 10, subsets: int = 3) -> None:
    tests = []
    for _ in range(subsets):
        levels, runs = correlated_runs(rng, (20, 20, 20, 20), rows, signals=(BASE_SIGNAL,) * (variants + 1))
        tests.append([paired_tests.paired_tests(levels, runs[0], runs[v + 1]) for v in range(variants)])
    weights, transitions = multiplicity.chain_graph([1 + subsets] * variants)
    figures = []
    for metric in paired_tests.METRICS:
        chains, raw = [], []
        for v in range(variants):
            d = np.stack([tests[s][v][metric].diff for s in range(subsets)], 1)
            var = np.stack([tests[s][v][metric].variance for s in range(subsets)], 1)
            dataset = paired_tests.z_test(*fixed_effects(np.full(subsets, 1 / subsets), d, var)).p
            chains.append(np.stack([dataset, *(tests[s][v][metric].p for s in range(subsets))], 1))
            raw.append(dataset)
        p = np.concatenate(chains, axis=1)
        family = np.mean([multiplicity.graphical_rejections(row, weights, transitions, 0.05).any() for row in p])
        uncorrected = np.mean(np.min(np.stack(raw, 1), axis=1) < 0.05)
        figures.append(f"{metric} {100 * family:.1f} % (uncorrected {100 * uncorrected:.1f} %)")
    print(f"  {variants} null variants x {subsets} subsets x 80 images: family-wise error {'; '.join(figures)}")


def coverage(grids: int, sizes: tuple[int, ...], rng: np.random.Generator, unpaired: bool = False) -> dict:
    """Share of percentile intervals (2,000 paired resamples) covering 0 on correlated null pairs."""
    hits = dict.fromkeys(paired_tests.METRICS, 0)
    for g in range(grids):
        levels, (a, b) = correlated_runs(rng, sizes, 1)
        if unpaired:
            runs = {name: stats.resample_run(levels, x[0], stats.resample_counts(levels, 2000, [g, i]))
                    for i, (name, x) in enumerate((("a", a), ("b", b)))}
        else:
            runs = stats.bootstrap_runs(levels, {"a": a[0], "b": b[0]}, n_boot=2000, seed=g)
        for m in hits:
            low, high = stats.percentile_interval(runs["b"].resampled[m] - runs["a"].resampled[m])
            hits[m] += low <= 0 <= high
    return {m: hits[m] / grids for m in hits}


def bootstrap_variance(rows: int, rng: np.random.Generator) -> None:
    """Mean bootstrap variance / sampling variance on levels of 6 images (runs independent given
    the level), with n - 1 draws (the code) and with n; and the tests' U-statistic variance."""
    levels, (a, b) = correlated_runs(rng, (6, 6, 6, 6), 20000, shared=0.0, noise=1.0)
    truth = paired_tests.paired_tests(levels, a, b)
    for label, draws in (("n - 1 draws", paired_tests.draws_per_stratum), ("n draws", lambda size: size)):
        original, paired_tests.draws_per_stratum = paired_tests.draws_per_stratum, draws
        try:
            boot = {m: [] for m in paired_tests.METRICS}
            for r in range(rows):
                for m, d in stats.paired_bootstrap(levels, a[r], b[r], n_boot=500, seed=r).items():
                    boot[m].append(np.nanvar(d.diff_resampled, ddof=1))
        finally:
            paired_tests.draws_per_stratum = original
        print(f"  {label}: " + "; ".join(f"{m} {np.mean(boot[m]) / np.nanvar(truth[m].diff):.3f}"
                                          for m in paired_tests.METRICS))
    print("  U-statistic variance (the tests): " + "; ".join(
        f"{m} {np.nanmean(truth[m].variance) / np.nanvar(truth[m].diff):.3f}" for m in paired_tests.METRICS))


def run_noise(rows: int, rng: np.random.Generator, strictness: float = 0.5) -> None:
    """False positives and coverage with a run-level effect, 2 repeats of each run (df 2)."""
    levels = np.repeat(np.arange(4), 15)
    effect = rng.normal(0, 1, (2, rows, 2))
    difficulty = rng.normal(0, 1, (rows, 1, levels.size))
    a, b = (levels * BASE_SIGNAL * (1 + strictness * effect[k][:, :, None]) + difficulty
            + rng.normal(0, 1 / 3, (rows, 2, levels.size)) for k in (0, 1))
    tests = paired_tests.paired_tests(levels, a[:, 0], b[:, 0])
    values = [paired_tests.metric_influences(levels, x) for x in (a, b)]
    z = scipy_stats.norm.ppf(0.975)
    for m in paired_tests.METRICS:
        d, v = tests[m].diff, tests[m].variance
        run_variance = 2 * np.stack([x[m].estimate for x in values]).var(axis=2, ddof=1).mean(axis=0)
        figures = [f"image-only test {100 * np.mean(paired_tests.z_test(d, v).p < 0.05):.1f} %"]
        for label, quantile in (("t(df)", noise_rules.t_ppf), ("normal", None)):
            if quantile is None:  # the mutant: the SD of 2 repeats treated as known
                saved = noise_rules.t_sf, noise_rules.t_ppf
                noise_rules.t_sf = lambda x, df: scipy_stats.norm.sf(x)
                noise_rules.t_ppf = lambda q, df: float(scipy_stats.norm.ppf(q))
            p = noise_rules.noisy_p(d, v, run_variance, 2)
            cover = np.mean([lo <= 0 <= hi for lo, hi in (noise_rules.noisy_interval(
                d[r], d[r] - z * np.sqrt(v[r]), d[r] + z * np.sqrt(v[r]), run_variance[r], 2) for r in range(rows))])
            if quantile is None:
                noise_rules.t_sf, noise_rules.t_ppf = saved
            figures.append(f"{label}: false positives {100 * np.mean(p < 0.05):.1f} %, coverage {100 * cover:.1f} %")
        print(f"  {m}: " + "; ".join(figures))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replicates", type=int, default=1000)
    args = parser.parse_args()
    rng = np.random.default_rng(2024)
    start = time.perf_counter()
    print(f"Size at 5 % on correlated null pairs ({args.replicates * 2:,} replicates each):")
    null_sizes(args.replicates * 2, rng)
    print(f"Power of the primary AUROC verdict against DeLong's paired test ({args.replicates:,} replicates):")
    for subsets, sizes, gain in ((15, (20, 20, 20, 20), 0.02), (5, (125, 125, 125, 125), 0.01),
                                 (3, (20, 20, 20, 20), 0.05)):
        signal = signal_for_gain(sizes, gain, rng)
        power = verdict_and_delong(subsets, sizes, args.replicates, signal, rng)
        size = verdict_and_delong(subsets, sizes, args.replicates, BASE_SIGNAL, rng)
        print(f"  dAUROC {gain:.2f} over {subsets} x {sum(sizes)}: verdict {100 * power['verdict']:.1f} %, "
              f"DeLong {100 * power['delong']:.1f} % (size at the null: verdict {100 * size['verdict']:.1f} %, "
              f"DeLong {100 * size['delong']:.1f} %)")
    print("Null grids:")
    null_grid_of_variants(args.replicates, rng)
    print(f"Coverage of the 95 % interval on correlated null pairs ({args.replicates // 2} pairs, 2,000 resamples):")
    for sizes in ((20, 20, 20, 20), (8, 6, 6, 6)):
        paired = coverage(args.replicates // 2, sizes, rng)
        unpaired = coverage(args.replicates // 4, sizes, rng, unpaired=True)
        print(f"  {sum(sizes)} images: paired " + "; ".join(f"{m} {100 * c:.1f} %" for m, c in paired.items())
              + " (unpaired resample: " + "; ".join(f"{100 * c:.1f} %" for c in unpaired.values()) + ")")
    print("Bootstrap variance / sampling variance, levels of 6 images:")
    bootstrap_variance(args.replicates // 3, rng)
    print(f"Run-level effect, 2 repeats per run (df 2), {args.replicates * 2:,} null pairs:")
    run_noise(args.replicates * 2, rng)
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
