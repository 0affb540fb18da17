"""Fit a detector on a subset's normal images, score its test images, write the same result files
as the MLLM engine (CSV in the template format + JSONL), and the anomaly maps beside them.

Few-shot uses exactly the references the MLLM prompts use (the first k sorted normal-train
images); full-shot uses the whole normal-train folder.
"""

from __future__ import annotations

import io
import json
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .backbone import make_backbone
from .features import FeatureExtractor, resolve_device
from .padim import Padim
from .patchcore import PatchCore
from .reverse_distillation import ReverseDistillation
from mmad import datasets
from mmad.errors import ConfigError, DataError
from mmad.jobs import result_paths
from mmad.results import atomic_write_text, write_result_csv

METHODS = ("patchcore", "padim", "rd")


@dataclass
class DetectorSettings:
    method: str = "patchcore"
    device: str = "auto"
    image_size: int = 224
    batch_size: int = 16
    seed: int = 0
    coreset_ratio: float | None = None  # None: 1.0 few-shot (keep every patch), 0.1 full-shot
    padim_dims: int = 100
    epochs: int = 30  # Reverse Distillation's student training
    backbone: str = "efficientnet_lite0"
    weights: Path | None = None  # a local state dict; required for the ResNet backbones


@dataclass
class SubsetTiming:
    label: str
    train_images: int
    test_images: int
    fit_s: float
    score_s: float
    device: str
    peak_memory_mb: float


@dataclass
class DetectorReport:
    csv_paths: list[Path] = field(default_factory=list)
    timings: list[SubsetTiming] = field(default_factory=list)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def save_maps(path: Path, paths: list[str], maps: np.ndarray, image_size: int) -> None:
    """Patch-grid anomaly maps as float16 in one compressed .npz per subset (atomic)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, paths=np.asarray(paths), maps=maps.astype(np.float16),
                        image_size=np.asarray(image_size))
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(path)


def make_detector(settings: DetectorSettings, few_shot: bool, backbone):
    """(detector, backbone stages it reads, the stage whose grid the features are aligned to)."""
    if settings.method == "patchcore":
        ratio = settings.coreset_ratio if settings.coreset_ratio is not None else (1.0 if few_shot else 0.1)
        return PatchCore(coreset_ratio=ratio, seed=settings.seed), backbone.patchcore_stages, None
    if settings.method == "padim":
        return Padim(dims=settings.padim_dims, seed=settings.seed), backbone.padim_stages, backbone.padim_grid
    if settings.method == "rd":  # the teacher's three finest stages; maps on the middle one's grid
        return (ReverseDistillation(epochs=settings.epochs, batch_size=settings.batch_size, seed=settings.seed),
                backbone.padim_stages, None)
    raise ValueError(f"unknown method {settings.method!r}; expected one of {', '.join(METHODS)}")


def run_detector(subsets: list[datasets.Subset], settings: DetectorSettings, *, out_dir: Path, run_name: str,
                 refs: int | None = 3, on_subset: Callable[[SubsetTiming], None] | None = None) -> DetectorReport:
    """`refs` = k for few-shot (the MLLM references), None for full-shot (every normal image)."""
    torch.manual_seed(settings.seed)
    device = resolve_device(settings.device)
    few_shot = refs is not None
    if few_shot and refs < 1:
        raise ConfigError("a conventional detector needs at least one normal reference image (--refs >= 1)")
    loaded = []
    for subset in subsets:  # validate everything before any work
        template = datasets.load_subset(subset)
        train = datasets.reference_images(subset, refs) if few_shot else datasets.list_images(subset.reference_dir)
        if not train:
            raise DataError(f"{subset.label}: no normal training images in {subset.reference_dir}")
        loaded.append((subset, template, train))
    report = DetectorReport()
    backbone = make_backbone(settings.backbone, settings.weights)
    extractor = None
    for subset, template, train in loaded:
        detector, stages, grid = make_detector(settings, few_shot, backbone)
        raw = settings.method == "rd"
        if extractor is None or extractor.stages != stages or extractor.raw != raw:
            extractor = FeatureExtractor(stages, device, settings.image_size, model=backbone, grid_stage=grid, raw=raw)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        detector.fit(extractor.batches(train, settings.batch_size))
        fitted = time.perf_counter()
        queries = [subset.test_root / rel for rel in template.paths]
        scores, maps = [], []
        for features in extractor.batches(queries, settings.batch_size):
            batch_scores, batch_maps = detector.score(features)
            scores.append(batch_scores.double().cpu().numpy())
            maps.append(batch_maps.float().cpu().numpy())
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        done = time.perf_counter()
        all_scores = np.concatenate(scores)
        csv_path, jsonl_path = result_paths(out_dir, run_name, subset)
        write_result_csv(csv_path, zip(template.paths, template.severity.tolist(), all_scores.tolist()))
        records = [json.dumps({"dataset": subset.dataset, "subset": subset.subset, "path": rel,
                               "severity": float(sev), "score": float(score), "status": "ok",
                               "source": "local", "method": settings.method, "few_shot": few_shot})
                   for rel, sev, score in zip(template.paths, template.severity, all_scores)]
        atomic_write_text(jsonl_path, "\n".join(records) + "\n")
        save_maps(csv_path.with_suffix(".maps.npz"), list(template.paths), np.concatenate(maps), settings.image_size)
        timing = SubsetTiming(subset.label, len(train), len(queries), fitted - start, done - fitted,
                              str(device), _peak_memory_mb(device))
        report.csv_paths.append(csv_path)
        report.timings.append(timing)
        if on_subset:
            on_subset(timing)
    return report
