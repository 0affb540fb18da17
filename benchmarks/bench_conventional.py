"""PatchCore / PaDiM / Reverse Distillation (30 epochs) speed and memory: images/s and peak memory for fit and for score, on CPU and,
whenever one is available, on a CUDA GPU (the device is printed with every figure).

    python benchmarks/bench_conventional.py [--train 200] [--test 100] [--devices cpu,cuda]

Data: the offline demo textures (`mmad data synth`) at MVTec-like sizes (200 normal training
images, 224 px).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path


def one(device: str, method: str, root: str, train: int, test: int, coreset: float) -> None:
    """Runs in a child process so each figure's peak memory is its own."""
    import torch

    from mmad.data import datasets
    from mmad_conventional.run import DetectorSettings, run_detector
    subsets = datasets.resolve(Path(root), "synth", "brick")
    settings = DetectorSettings(method=method, device=device, coreset_ratio=coreset if method == "patchcore" else None)
    report = run_detector(subsets, settings, out_dir=Path(root) / f"out-{method}-{device}", run_name="bench",
                          refs=None)
    t = report.timings[0]
    name = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"  {method:9s} on {name}: fit {t.train_images} images {t.train_images / t.fit_s:7.1f} img/s "
          f"({t.fit_s:.1f} s), score {t.test_images} images {t.test_images / t.score_s:7.1f} img/s; "
          f"peak {'GPU' if device == 'cuda' else 'process RSS'} memory {t.peak_memory_mb:,.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=int, default=200)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--devices", default="cpu,cuda")
    parser.add_argument("--coreset-ratio", type=float, default=0.1)
    parser.add_argument("--methods", default="patchcore,padim,rd")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        device, method, root, train, test, coreset = args.child
        one(device, method, root, int(train), int(test), float(coreset))
        return
    import torch

    from mmad.data.synth import synthesize
    devices = [d for d in args.devices.split(",") if d != "cuda" or torch.cuda.is_available()]
    if "cuda" in args.devices and "cuda" not in devices:
        print("(no CUDA GPU here: CPU figures only)")
    with tempfile.TemporaryDirectory() as tmp:
        synthesize(Path(tmp), train=args.train, per_level=args.test // 4, textures=("brick",))
        print(f"full-shot fit on {args.train} normal images, score {args.test // 4 * 4} test images, 224 px, "
              f"PatchCore coreset {args.coreset_ratio:.0%}")
        for device in devices:
            for method in args.methods.split(","):
                subprocess.run([sys.executable, __file__, "--child", device, method, tmp, str(args.train),
                                str(args.test), str(args.coreset_ratio)], check=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
