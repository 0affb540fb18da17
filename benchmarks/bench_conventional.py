"""Conventional detectors' speed and memory: mmad's PatchCore, PaDiM and Reverse Distillation and
anomalib's models (`anomalib:<Model>`, when the `[anomalib]` extra is installed), full-shot on the
same data: training images/s (fit), test images/s (score) and peak memory, per model.

    python benchmarks/bench_conventional.py [--device cpu|cuda] [--train 200] [--test 100] [--epochs 1]
                                            [--methods patchcore,padim,rd,anomalib:Cflow,...]

--device cuda runs every model on the GPU and then on the CPU, and prints the GPU/CPU ratio;
without a CUDA GPU it stops at once with one line (exit 2). Peak memory is the GPU's
(torch.cuda.max_memory_allocated) on CUDA and the process's resident set on CPU; every model
runs in its own process so each peak is its own.

Data: the offline demo texture `brick` (`mmad data synth`), 224 px (EfficientAd: 256, its
minimum). Trained models train for --epochs (default 1: fit img/s is then one pass over the
training images, the figure that scales to any number of epochs); PatchCore keeps 10 % of the
patches (mmad's pooled greedy; anomalib's own greedy for anomalib:Patchcore). anomalib models
whose backbone has no bundled weights (Fastflow, ReverseDistillation: ResNet-18 / Wide-ResNet-50)
and EfficientAd's teacher run untrained weights: the same work, so the same timings.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

BUILTINS = ("patchcore", "padim", "rd")
ANOMALIB = ("Patchcore", "Padim", "Dfm", "Cflow", "Fastflow", "Stfpm", "ReverseDistillation", "Draem", "Ganomaly",
            "EfficientAd")
TRAINED = {"rd", "anomalib:Cflow", "anomalib:Fastflow", "anomalib:Stfpm", "anomalib:ReverseDistillation",
           "anomalib:Draem", "anomalib:Ganomaly", "anomalib:EfficientAd"}
UNBUNDLED = {"anomalib:Fastflow", "anomalib:ReverseDistillation", "anomalib:EfficientAd"}


def settings_for(method: str, device: str, root: Path, epochs: int):
    """The DetectorSettings one model runs with here."""
    from mmad_conventional.run import DetectorSettings
    options: dict = {"method": method, "device": device}
    if method in TRAINED:
        options["epochs"] = epochs
    if method in UNBUNDLED:
        options["random_weights"] = True
    if method == "anomalib:EfficientAd":
        options["image_size"] = 256
        options["model_args"] = {"imagenet_dir": str(root / "penalty")}
    return DetectorSettings(**options)


def one(job: dict) -> None:
    """Runs in a child process: one model on one device; prints one JSON line."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from mmad.data import datasets
    from mmad_conventional.run import run_detector
    root = Path(job["root"])
    settings = settings_for(job["method"], job["device"], root, job["epochs"])
    subsets = datasets.resolve(root, "synth", "brick")
    out = root / f"out-{job['method'].replace(':', '-')}-{job['device']}"
    report = run_detector(subsets, settings, out_dir=out, run_name="bench", refs=None)
    timing = report.timings[0]
    passes = job["epochs"] if job["method"] in TRAINED else 1
    print(json.dumps({"method": job["method"], "device": job["device"],
                      "name": torch.cuda.get_device_name(0) if job["device"] == "cuda"
                      else f"CPU ({torch.get_num_threads()} threads)",
                      "fit": timing.train_images * passes / timing.fit_s, "fit_s": timing.fit_s,
                      "score": timing.test_images / timing.score_s, "peak_mb": timing.peak_memory_mb}))


def run_one(method: str, device: str, root: Path, epochs: int) -> dict | None:
    job = {"method": method, "device": device, "root": str(root), "epochs": epochs}
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}, no output"])[-1]
        print(f"  {method:28s} on {device}: failed ({last})")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def show(result: dict) -> None:
    memory = "GPU" if result["device"] == "cuda" else "process RSS"
    print(f"  {result['method']:28s} on {result['name']}: fit {result['fit']:7.2f} img/s ({result['fit_s']:6.1f} s), "
          f"score {result['score']:7.2f} img/s; peak {memory} memory {result['peak_mb']:,.0f} MiB", flush=True)


def methods_wanted(text: str | None) -> list[str]:
    if text:
        return text.split(",")
    extra = [f"anomalib:{name}" for name in ANOMALIB] if importlib.util.find_spec("anomalib") else []
    if not extra:
        print("(anomalib not installed: pip install -e '.[anomalib]' for its models; built-ins only)")
    return [*BUILTINS, *extra]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cuda: every model on the GPU, then on the CPU for the ratio (default cpu)")
    parser.add_argument("--train", type=int, default=200, help="normal training images (default 200)")
    parser.add_argument("--test", type=int, default=100, help="test images (default 100)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of the trained models (default 1)")
    parser.add_argument("--methods", help="comma-separated (default: the built-ins and every anomalib model)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        one(json.loads(args.child))
        return
    import torch
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda was asked for but no CUDA GPU is available (torch "
              f"{torch.__version__}); run without it for CPU figures", file=sys.stderr)
        sys.exit(2)
    from mmad.data.synth import synthesize
    methods = methods_wanted(args.methods)
    devices = ["cuda", "cpu"] if args.device == "cuda" else ["cpu"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        synthesize(root, train=args.train, per_level=max(1, args.test // 4), textures=("brick",))
        penalty = root / "penalty" / "images"  # EfficientAd's ImageNet stand-in: the same kind of images
        penalty.mkdir(parents=True)
        for image in sorted((root / "Industry" / "synth" / "brick" / "train" / "good").iterdir())[:50]:
            (penalty / image.name).symlink_to(image)
        print(f"full-shot fit on {args.train} normal images ({args.epochs} epoch(s) for trained models), score "
              f"{max(1, args.test // 4) * 4} test images, 224 px (EfficientAd 256); load average "
              f"{os.getloadavg()[0]:.1f}")
        results: dict[tuple[str, str], dict] = {}
        for device in devices:
            for method in methods:
                result = run_one(method, device, root, args.epochs)
                if result is not None:
                    results[(method, device)] = result
                    show(result)
        if args.device == "cuda":
            print("GPU / CPU:")
            for method in methods:
                gpu, cpu = results.get((method, "cuda")), results.get((method, "cpu"))
                if gpu and cpu:
                    print(f"  {method:28s} fit x{gpu['fit'] / cpu['fit']:6.1f}, score x{gpu['score'] / cpu['score']:6.1f}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
