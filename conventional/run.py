"""Fit a detector on a subset's normal images, score its test images, write the same result files
as the MLLM engine (CSV in the template format + JSONL), and the anomaly maps beside them.

Few-shot uses exactly the references the MLLM prompts use (the first k sorted normal-train
images); full-shot uses the whole normal-train folder. A subset whose results are already in the
output folder (same settings, every row present) is skipped, so an interrupted baseline resumes.
A test image that cannot be decoded is recorded as that row's `error` (empty score), never scored.
A stop (`should_stop`, polled between batches and between the training steps inside a detector's
fit: RD's epochs, PatchCore's coreset selection) abandons the subset in progress: its files are
written only once it is complete, so an abandoned subset leaves nothing and is redone on rerun.
Few-shot runs also score up to CALIBRATION_MAX held-out normal training images (after the k
references, never fitted on) and keep their scores in the .maps.npz: the data a hybrid gate's
threshold is calibrated on (mmad.gate).
"""

from __future__ import annotations

import io
import json
import resource
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mmad.atomic import atomic_write_bytes, atomic_write_text
from mmad.data import datasets
from mmad.data.images import decode_check
from mmad.data.templates import write_result_csv
from mmad.engine.jobs import check_references, result_paths
from mmad.errors import ConfigError, DataError, StorageError, describe_os_error
from mmad.results.files import JsonlLog

from .backbone import make_backbone
from .features import FeatureExtractor, resolve_device
from .padim import Padim
from .patchcore import PatchCore
from .reverse_distillation import ReverseDistillation

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
    corrupt: str | None = None  # a corruption (mmad.corruptions) applied to the test images

    def as_settings(self, refs: int | None) -> dict:
        """What goes into run.json: everything that changes the scores."""
        return {"method": self.method, "refs": refs, "image_size": self.image_size, "seed": self.seed,
                "coreset_ratio": self.coreset_ratio, "padim_dims": self.padim_dims, "epochs": self.epochs,
                "backbone": self.backbone, "weights": str(self.weights) if self.weights else None,
                "corrupt": self.corrupt, "task": "score"}


@dataclass
class SubsetTiming:
    label: str
    train_images: int
    test_images: int
    fit_s: float
    score_s: float
    device: str
    peak_memory_mb: float
    skipped: bool = False  # results were already there
    broken: int = 0  # test images that could not be decoded


@dataclass
class DetectorReport:
    csv_paths: list[Path] = field(default_factory=list)
    timings: list[SubsetTiming] = field(default_factory=list)
    left: int = 0  # subsets not finished because of a stop (rerun to resume); 0 when the run is complete


class _Stopped(Exception):
    """should_stop() said yes: abandon the subset in progress (nothing of it has been written)."""


def _stop_check(should_stop: Callable[[], bool] | None) -> Callable[[], None]:
    """What a detector's fit calls between its own steps: raises _Stopped once `should_stop` says yes."""
    def check() -> None:
        if should_stop is not None and should_stop():
            raise _Stopped()
    return check


def _until_stopped(items: Iterable, should_stop: Callable[[], bool] | None) -> Iterator:
    """`items`, asking `should_stop` before each one (before a lazy batch is even computed)."""
    iterator = iter(items)
    check = _stop_check(should_stop)
    while True:
        check()
        try:
            item = next(iterator)
        except StopIteration:
            return
        yield item


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


CALIBRATION_MAX = 32  # held-out normal training images scored per few-shot subset (the first ones by name)


@dataclass
class Calibration:
    """Held-out normal training images (few-shot: the normal-train images after the k references,
    never used for fitting), scored like test images: what a hybrid gate's threshold is set from
    (mmad.gate). Full-shot fits on every normal image, so it has none."""

    names: list[str] = field(default_factory=list)  # file names in the subset's normal-train folder
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))  # image scores (= map maxima)
    map_mean: np.ndarray = field(default_factory=lambda: np.zeros(0))  # mean patch score per image
    map_p99: np.ndarray = field(default_factory=lambda: np.zeros(0))  # 99th percentile patch score per image


def save_maps(path: Path, paths: list[str], maps: np.ndarray, image_size: int, scores: np.ndarray | None = None,
              calibration: Calibration | None = None) -> None:
    """Patch-grid anomaly maps as float16 in one compressed .npz per subset (atomic), with the test
    images' scores (`scores`, NaN where an image failed) and the held-out normals' calibration data
    (`calibration_names`, `calibration_scores`, `calibration_map_mean`, `calibration_map_p99`;
    empty for full-shot)."""
    calibration = calibration or Calibration()
    buffer = io.BytesIO()
    np.savez_compressed(buffer, paths=np.asarray(paths), maps=maps.astype(np.float16),
                        image_size=np.asarray(image_size),
                        scores=np.asarray(scores if scores is not None else np.full(len(paths), np.nan), np.float64),
                        calibration_names=np.asarray(calibration.names, dtype=str),
                        calibration_scores=np.asarray(calibration.scores, np.float64),
                        calibration_map_mean=np.asarray(calibration.map_mean, np.float64),
                        calibration_map_p99=np.asarray(calibration.map_p99, np.float64))
    atomic_write_bytes(path, buffer.getvalue())


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


def already_done(csv_path: Path, jsonl_path: Path, paths: tuple[str, ...]) -> bool:
    """Every row of the subset has a final record and the maps (with the calibration data of
    mmad.gate) are there: nothing to redo."""
    maps = csv_path.with_suffix(".maps.npz")
    if not (csv_path.exists() and maps.exists()):
        return False
    try:
        with np.load(maps) as stored:
            if "calibration_scores" not in stored.files:
                return False  # maps written before calibration was saved: score the subset again
    except (OSError, ValueError):
        return False
    recorded = {r.get("path") for r in JsonlLog.read(jsonl_path) if r.get("status") in ("ok", "error")}
    return recorded >= set(paths)


def score_held_out(detector, extractor, subset: datasets.Subset, train: list[Path], batch_size: int,
                   should_stop: Callable[[], bool] | None = None) -> Calibration:
    """Score the first CALIBRATION_MAX normal-train images that were not fitted on (images that do
    not decode are skipped); `should_stop` is asked between batches."""
    used = {p.resolve() for p in train}
    held_out = [p for p in datasets.list_images(subset.reference_dir) if p.resolve() not in used]
    held_out = [p for p in held_out[:CALIBRATION_MAX] if decode_check(p) is None]
    calibration = Calibration(names=[p.name for p in held_out])
    scores, means, p99s = [], [], []
    for begin in _until_stopped(range(0, len(held_out), batch_size), should_stop):
        chunk = held_out[begin:begin + batch_size]
        batch_scores, batch_maps = detector.score(next(extractor.batches(chunk, len(chunk))))
        flat = batch_maps.float().cpu().numpy().reshape(len(chunk), -1)
        scores.extend(batch_scores.double().cpu().numpy().tolist())
        means.extend(flat.mean(axis=1).tolist())
        p99s.extend(np.percentile(flat, 99, axis=1).tolist())
    calibration.scores, calibration.map_mean, calibration.map_p99 = (np.asarray(v, np.float64)
                                                                     for v in (scores, means, p99s))
    return calibration


def run_detector(subsets: list[datasets.Subset], settings: DetectorSettings, *, out_dir: Path, run_name: str,
                 refs: int | None = 3, on_subset: Callable[[SubsetTiming], None] | None = None,
                 on_progress: Callable[[str, int, int], None] | None = None, resume: bool = False,
                 should_stop: Callable[[], bool] | None = None,
                 on_start: Callable[[int, int], None] | None = None) -> DetectorReport:
    """`refs` = k for few-shot (the MLLM references), None for full-shot (every normal image).
    `on_progress(label, done, total)` is called after each scored batch. `resume`: skip subsets
    whose results are complete in `out_dir` (the caller has checked that run.json matches);
    `on_start(to_do, already_done)` says how many subsets that leaves, before any work.
    `should_stop()` is asked before each subset, between batches (fit, scoring, held-out normals)
    and between the steps of a detector's own training loop (`fit(check_stop=...)`); once it says
    yes the subset in progress is abandoned unwritten and the report's `left` counts the subsets
    not finished."""
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
        check_references(set(train))
        csv_path, jsonl_path = result_paths(out_dir, run_name, subset)
        done = resume and already_done(csv_path, jsonl_path, template.paths)
        loaded.append((subset, template, train, csv_path, jsonl_path, done))
    if on_start:
        finished = sum(entry[-1] for entry in loaded)
        on_start(len(loaded) - finished, finished)
    report = DetectorReport()
    models = _Models(settings, few_shot, device)
    try:
        for subset, template, train, csv_path, jsonl_path, done in loaded:
            if done:
                broken = sum(1 for r in JsonlLog.read(jsonl_path) if r.get("status") == "error")
                timing = SubsetTiming(subset.label, len(train), len(template), 0.0, 0.0, str(device), 0.0,
                                      skipped=True, broken=broken)
            else:
                _stop_check(should_stop)()
                timing = _fit_score_write(models, subset, template, train, csv_path, jsonl_path,
                                          on_progress=on_progress, should_stop=should_stop)
            report.csv_paths.append(csv_path)
            report.timings.append(timing)
            if on_subset:
                on_subset(timing)
    except _Stopped:
        pass  # the subset in progress is abandoned unwritten; the finished ones are kept
    report.left = len(loaded) - len(report.timings)
    return report


class _Models:
    """The backbone (loaded once per run) and a feature extractor reused while the stages match."""

    def __init__(self, settings: DetectorSettings, few_shot: bool, device: torch.device) -> None:
        self.settings, self.few_shot, self.device = settings, few_shot, device
        self._backbone = None
        self._extractor = None

    def for_subset(self):
        """A fresh detector for one subset, and the extractor its features come from."""
        settings = self.settings
        self._backbone = self._backbone or make_backbone(settings.backbone, settings.weights)
        detector, stages, grid = make_detector(settings, self.few_shot, self._backbone)
        raw = settings.method == "rd"
        extractor = self._extractor
        if extractor is None or extractor.stages != stages or extractor.raw != raw:
            extractor = self._extractor = FeatureExtractor(stages, self.device, settings.image_size,
                                                           model=self._backbone, grid_stage=grid, raw=raw)
        return detector, extractor


def _fit_score_write(models: _Models, subset: datasets.Subset, template, train: list[Path], csv_path: Path,
                     jsonl_path: Path, *, on_progress, should_stop) -> SubsetTiming:
    """Fit on `train`, score every decodable test image, write the subset's three files (only once
    all of it is done: a stop raises _Stopped before anything is written)."""
    settings, device = models.settings, models.device
    detector, extractor = models.for_subset()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    detector.fit(_until_stopped(extractor.batches(train, settings.batch_size), should_stop),
                 check_stop=_stop_check(should_stop))
    fitted = time.perf_counter()
    queries = [subset.test_root / rel for rel in template.paths]
    with ThreadPoolExecutor(max_workers=4) as pool:
        problems = list(pool.map(decode_check, queries))
    good = [i for i, problem in enumerate(problems) if problem is None]
    scores, maps = _score_queries(detector, extractor, queries, good, settings, should_stop,
                                  lambda done: on_progress and on_progress(subset.label, done, len(good)))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    finished = time.perf_counter()
    calibration = Calibration()
    if models.few_shot:
        calibration = score_held_out(detector, extractor, subset, train, settings.batch_size, should_stop)
    _write_results(subset, template, scores, maps, problems, settings, models.few_shot, calibration,
                   csv_path, jsonl_path)
    return SubsetTiming(subset.label, len(train), len(queries), fitted - start, finished - fitted,
                        str(device), _peak_memory_mb(device), broken=len(queries) - len(good))


def _score_queries(detector, extractor, queries: list[Path], good: list[int], settings: DetectorSettings,
                   should_stop, progressed: Callable[[int], object]) -> tuple[np.ndarray, np.ndarray]:
    """Scores (NaN for images that do not decode) and anomaly maps of the test images, in batches."""
    scores = np.full(len(queries), np.nan)
    maps = None
    done = 0
    for begin in _until_stopped(range(0, len(good), settings.batch_size), should_stop):
        chunk = good[begin:begin + settings.batch_size]
        features = next(extractor.batches([queries[i] for i in chunk], len(chunk), settings.corrupt))
        batch_scores, batch_maps = detector.score(features)
        batch_maps = batch_maps.float().cpu().numpy()
        if maps is None:
            maps = np.full((len(queries),) + batch_maps.shape[1:], np.nan, dtype=np.float32)
        scores[chunk] = batch_scores.double().cpu().numpy()
        maps[chunk] = batch_maps
        done += len(chunk)
        progressed(done)
    return scores, maps if maps is not None else np.zeros((len(queries), 1, 1), dtype=np.float32)


def _write_results(subset: datasets.Subset, template, scores: np.ndarray, maps: np.ndarray, problems: list,
                   settings: DetectorSettings, few_shot: bool, calibration: Calibration, csv_path: Path,
                   jsonl_path: Path) -> None:
    """The subset's CSV, JSONL and maps, each written atomically; a full or read-only disk is one line."""
    try:
        write_result_csv(csv_path, zip(template.paths, template.severity.tolist(),
                                       [None if np.isnan(s) else float(s) for s in scores]))
        records = []
        for rel, sev, score, problem in zip(template.paths, template.severity, scores, problems):
            record = {"dataset": subset.dataset, "subset": subset.subset, "path": rel, "severity": float(sev),
                      "score": None if problem else float(score), "status": "error" if problem else "ok",
                      "source": "local", "method": settings.method, "few_shot": few_shot}
            if problem:
                record.update(error=f"cannot decode {subset.test_root / rel}: {problem}",
                              cause="image: cannot be decoded")
            records.append(json.dumps(record))
        atomic_write_text(jsonl_path, "\n".join(records) + "\n")
        save_maps(csv_path.with_suffix(".maps.npz"), list(template.paths), maps, settings.image_size, scores,
                  calibration)
    except OSError as exc:  # full or read-only disk: one line, and no half-written file
        where = exc.filename or csv_path.parent
        raise StorageError(f"cannot write the results of {subset.label}: {describe_os_error(where, exc)}") from None
