"""PatchCore's full-shot coreset before and after: the one-step-at-a-time k-center greedy (one pass
over every patch per pick) against the pooled greedy of mmad_conventional.patchcore (several
picks per pass). Prints, per data set, the coreset time, the fit speed (features + coreset, in
training images/s), the scores' AUROC and C-index with each memory bank, and how many picks agree.

    python benchmarks/bench_coreset.py [--train 200] [--per-level 25] [--sets demo,harder] [--skip-before]

demo: the offline demo texture `brick` (`mmad data synth`) at 224 px, 10 % coreset.
harder: the `gravel` texture, its test images under Gaussian noise (severity 2): lower AUROC, so
a coreset that covers worse would show. The load average is printed: on a shared machine the
wall times move with it (the process's CPU seconds less so), the comparison of quality does not.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

SETS = {"demo": ("brick", None), "harder": ("gravel", "gaussian_noise:2")}


def stepwise_greedy(patches, count: int, *, projection_dim: int = 128, seed: int = 0):
    """The greedy as it was (before): one matrix-vector product over all n patches per pick."""
    import torch
    n, dims = patches.shape
    generator = torch.Generator(device="cpu").manual_seed(seed)
    projected = patches @ torch.randn(dims, projection_dim, generator=generator).to(patches.dtype)
    projected = projected.contiguous()
    norms = (projected * projected).sum(dim=1)
    chosen = torch.empty(count, dtype=torch.long)
    index = int(torch.randint(n, (1,), generator=generator))
    nearest = torch.full((n,), float("inf"), dtype=projected.dtype)
    for i in range(count):
        chosen[i] = index
        torch.minimum(nearest, norms - 2 * (projected @ projected[index]) + norms[index], out=nearest)
        index = int(torch.argmax(nearest))
    return chosen


def run_set(name: str, root: Path, train_count: int, per_level: int, ratio: float, skip_before: bool) -> None:
    import numpy as np
    import torch

    from mmad import metrics
    from mmad.data import datasets
    from mmad.data.synth import synthesize
    from mmad_conventional.backbone import efficientnet_lite0
    from mmad_conventional.features import FeatureExtractor
    from mmad_conventional.patchcore import flatten_patches, greedy_coreset, nearest_distance
    texture, corrupt = SETS[name]
    synthesize(root, train=train_count, per_level=per_level, textures=(texture,))
    subset = datasets.resolve(root, "synth", texture)[0]
    template = datasets.load_subset(subset)
    model = efficientnet_lite0()
    extractor = FeatureExtractor(model.patchcore_stages, torch.device("cpu"), 224, model=model)
    start, cpu = time.perf_counter(), time.process_time()
    train = torch.cat(list(extractor.batches(datasets.list_images(subset.reference_dir), 16)))
    features_s, features_cpu = time.perf_counter() - start, time.process_time() - cpu
    test = torch.cat(list(extractor.batches([subset.test_root / p for p in template.paths], 16, corrupt)))
    patches = flatten_patches(train).contiguous()
    count = max(1, round(patches.shape[0] * ratio))
    print(f"{name}: synth/{texture}{' + ' + corrupt if corrupt else ''}, {train_count} training images "
          f"({patches.shape[0]:,} patches -> {count:,}), {len(template)} test images; features "
          f"{features_s:.1f} s ({features_cpu:.1f} CPU s, {train_count / features_s:.1f} img/s)")
    picks = {}
    methods = (("before", stepwise_greedy), ("after", greedy_coreset))
    for label, select in methods[1:] if skip_before else methods:
        load = os.getloadavg()[0]
        start, cpu = time.perf_counter(), time.process_time()
        picks[label] = select(patches, count)
        coreset_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu
        bank = patches[picks[label]]
        scores = np.array([nearest_distance(flatten_patches(test[i:i + 1]), bank).max().item()
                           for i in range(len(test))])
        levels = metrics.severity_levels(template.severity)
        print(f"  {label:6s}: coreset {coreset_s:7.1f} s ({cpu_s:7.1f} CPU s), fit "
              f"{train_count / (features_s + coreset_s):5.2f} img/s; "
              f"AUROC {metrics.auroc(levels, scores):.4f}, C-index {metrics.c_index(levels, scores):.4f} "
              f"(load average {load:.1f})")
        picks[label + "_scores"] = (metrics.auroc(levels, scores), metrics.c_index(levels, scores))
    if skip_before:
        return
    same = len(set(picks["before"].tolist()) & set(picks["after"].tolist())) / count
    (a0, c0), (a1, c1) = picks["before_scores"], picks["after_scores"]
    print(f"  delta : AUROC {a1 - a0:+.4f}, C-index {c1 - c0:+.4f}; {same:.2%} of the picks are the same patches")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=200, help="normal training images (default 200)")
    parser.add_argument("--per-level", type=int, default=25, help="test images per severity level (default 25)")
    parser.add_argument("--sets", default="demo,harder", help="demo, harder or both (default)")
    parser.add_argument("--coreset-ratio", type=float, default=0.1)
    parser.add_argument("--skip-before", action="store_true", help="time the pooled greedy only (minutes less)")
    args = parser.parse_args()
    import torch
    print(f"CPU, {torch.get_num_threads()} threads")
    for name in args.sets.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            run_set(name, Path(tmp), args.train, args.per_level, args.coreset_ratio, args.skip_before)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
