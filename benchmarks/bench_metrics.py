"""AUROC + C-index + Kendall tau-b on n rows: mmad's metrics core vs lifelines + scipy + sklearn.

Prints both timings and the speed ratio (target: >= 10x). The reference stack needs
`pip install -e '.[test]'` (lifelines, scikit-learn).

    python benchmarks/bench_metrics.py [--n 1000000] [--levels 5] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mmad import metrics


def best_of(repeat: int, func):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--levels", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from lifelines.utils import concordance_index
    from scipy.stats import kendalltau
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    levels = rng.integers(0, args.levels, args.n)
    scores = np.round(levels * 12 + rng.normal(0, 20, args.n))  # integer scores: many ties, like MLLM output

    ours_s, ours = best_of(args.repeat, lambda: metrics.summarize(levels, scores))
    ref_s, ref = best_of(1, lambda: (roc_auc_score(levels > 0, scores), concordance_index(levels, scores),
                                     kendalltau(levels, scores).statistic))
    assert abs(ours.auroc - ref[0]) < 1e-9 and abs(ours.c_index - ref[1]) < 1e-9 and abs(ours.kendall_tau_b - ref[2]) < 1e-9
    print(f"n={args.n:,} levels={args.levels}")
    print(f"mmad metrics core          : {ours_s:.3f} s  (AUROC {ours.auroc:.6f}, C {ours.c_index:.6f}, tau-b {ours.kendall_tau_b:.6f})")
    print(f"lifelines + scipy + sklearn: {ref_s:.3f} s  (same values to 1e-9)")
    print(f"speed ratio                : {ref_s / ours_s:.1f}x  (target >= 10x)")


if __name__ == "__main__":
    main()
