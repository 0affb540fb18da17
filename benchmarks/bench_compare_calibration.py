"""Calibration and power of `mmad compare`'s verdicts on simulated comparisons (the figures of
docs/compare.md).

  - size: correlated null pairs (one model, one prompt word changed; A-B correlation 0.9 within a
    level) on grids shaped like the issue's examples: false positives of the primary verdict and
    of any verdict of the fixed sequence, per metric, at 5 %;
  - power against DeLong: AUROC gain 0.02 over 15 subsets x 80 images and 0.01 over 5 x 500; the
    verdict (primary question of the procedure) against DeLong's classic paired test pooled with
    the same weights, both at their own size;
  - null grids of 10 variants against one base: family-wise error of every printed verdict.

    python benchmarks/bench_compare_calibration.py [--replicates 1000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmad import multiplicity, paired_tests  # noqa: E402
from mmad.compare_scopes import fixed_effects  # noqa: E402
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
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
