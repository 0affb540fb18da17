"""Fit a detector on a subset's normal images, score its test images, write the same result files
as the MLLM engine (CSV in the template format + JSONL), and the anomaly maps beside them.

Few-shot uses exactly the references the MLLM prompts use (the first k sorted normal-train
images); full-shot uses the whole normal-train folder. A subset whose results are already in the
output folder (same settings, every row present) is skipped, so an interrupted baseline resumes.
A test image that cannot be decoded is recorded as that row's `error` (empty score), never scored.
A stop (`should_stop`, polled between batches and between the training steps inside a detector's
fit: RD's epochs, PatchCore's coreset selection, every batch of an anomalib model's training)
abandons the subset in progress: its files are written only once it is complete, so an abandoned
subset leaves nothing and is redone on rerun. A score that is not a finite number is recorded as
that row's error, never written as a number.
`method` is a built-in (METHODS) or `anomalib:<Model>` (mmad_conventional.anomalib_models):
both fit and score through the same steps here, so resume, stops and files are the same.
Few-shot runs also score up to CALIBRATION_MAX held-out normal training images (after the k
references, never fitted on) and keep their scores in the .maps.npz: the data a hybrid gate's
threshold is calibrated on (mmad.gate).
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mmad.data import datasets
from mmad.data.images import decode_check
from mmad.engine.jobs import check_references, result_paths
from mmad.errors import ConfigError, DataError
from mmad.results.files import JsonlLog

from . import anomalib_models
from .backbone import BACKBONES, make_backbone, random_backbone
from .features import FeatureExtractor, resolve_device
from .padim import Padim
from .patchcore import PatchCore
from .result_files import CALIBRATION_MAX, Calibration, RowError, already_done, save_maps, write_results  # noqa: F401  (save_maps, CALIBRATION_MAX: part of this module's interface)
from .reverse_distillation import ReverseDistillation

METHODS = ("patchcore", "padim", "rd")
NON_FINITE = "detector: non-finite score"  # the JSONL cause of a row whose score was NaN or infinite


DEFAULT_BACKBONE = "efficientnet_lite0"
DEFAULT_EPOCHS = 30


@dataclass
class DetectorSettings:
    method: str = "patchcore"  # a built-in (METHODS) or anomalib:<Model>
    device: str = "auto"
    image_size: int = 224
    batch_size: int = 16
    seed: int = 0
    coreset_ratio: float | None = None  # None: 1.0 few-shot (keep every patch), 0.1 full-shot
    padim_dims: int = 100
    epochs: int | None = None  # training epochs (RD, anomalib's trained models); None: DEFAULT_EPOCHS
    backbone: str | None = None  # None: Lite0 (bundled weights), or an anomalib model's own default
    weights: Path | None = None  # a local state dict; required for the ResNet backbones
    corrupt: str | None = None  # a corruption (mmad.corruptions) applied to the test images
    random_weights: bool = False  # run untrained backbone weights (tests); refused without it where no file is
    model_args: dict = field(default_factory=dict)  # anomalib models' own __init__ arguments

    @property
    def anomalib(self) -> bool:
        return anomalib_models.is_anomalib(self.method)

    def anomalib_plan(self) -> anomalib_models.AnomalibPlan:
        return anomalib_models.plan(self.method, backbone=self.backbone, weights=self.weights,
                                    random_weights=self.random_weights, epochs=self.epochs or DEFAULT_EPOCHS,
                                    epochs_given=self.epochs is not None, coreset_ratio=self.coreset_ratio,
                                    model_args=self.model_args, image_size=self.image_size)

    def check(self) -> None:
        """Everything that can be refused before any work (one line each); for anomalib models this
        imports anomalib and checks the model's arguments."""
        if self.anomalib:
            from .anomalib_detector import check_model_args
            check_model_args(self.anomalib_plan())
            return
        if self.method not in METHODS:
            raise ConfigError(f"unknown detector {self.method!r}; expected one of {', '.join(METHODS)} "
                              f"or anomalib:<Model>")
        if self.model_args:
            raise ConfigError(f"--model-arg is for anomalib models; --provider {self.method} takes none")
        if (self.backbone or DEFAULT_BACKBONE) not in BACKBONES:
            raise ConfigError(f"--backbone {self.backbone} is for anomalib models; --provider {self.method} takes "
                              f"{', '.join(BACKBONES)}")

    def as_settings(self, refs: int | None) -> dict:
        """What goes into run.json: everything that changes the scores."""
        if self.anomalib:
            plan = self.anomalib_plan()
            return {"method": self.method, "refs": refs, "image_size": self.image_size, "seed": self.seed,
                    "batch_size": self.batch_size, "epochs": plan.epochs, "backbone": plan.backbone,
                    "weights": str(self.weights) if self.weights else None,
                    "weights_sha256": anomalib_models.file_digest(self.weights),
                    "random_weights": self.random_weights, "corrupt": self.corrupt, "task": "score",
                    "anomalib": plan.settings()}
        settings = {"method": self.method, "refs": refs, "image_size": self.image_size, "seed": self.seed,
                    "coreset_ratio": self.coreset_ratio, "padim_dims": self.padim_dims,
                    "epochs": self.epochs or DEFAULT_EPOCHS, "backbone": self.backbone or DEFAULT_BACKBONE,
                    "weights": str(self.weights) if self.weights else None, "corrupt": self.corrupt, "task": "score"}
        if self.random_weights:
            settings["random_weights"] = True
        return settings


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
    unscored: int = 0  # test images the detector gave a non-finite score


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
    return _checked(items, _stop_check(should_stop))


def _checked(items: Iterable, check: Callable[[], None]) -> Iterator:
    """`items`, calling `check` (which raises to stop) before each one."""
    iterator = iter(items)
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


def make_detector(settings: DetectorSettings, few_shot: bool, backbone):
    """(detector, backbone stages it reads, the stage whose grid the features are aligned to)."""
    if settings.method == "patchcore":
        ratio = settings.coreset_ratio if settings.coreset_ratio is not None else (1.0 if few_shot else 0.1)
        return PatchCore(coreset_ratio=ratio, seed=settings.seed), backbone.patchcore_stages, None
    if settings.method == "padim":
        return Padim(dims=settings.padim_dims, seed=settings.seed), backbone.padim_stages, backbone.padim_grid
    if settings.method == "rd":  # the teacher's three finest stages; maps on the middle one's grid
        return (ReverseDistillation(epochs=settings.epochs or DEFAULT_EPOCHS, batch_size=settings.batch_size,
                                    seed=settings.seed), backbone.padim_stages, None)
    raise ValueError(f"unknown method {settings.method!r}; expected one of {', '.join(METHODS)}")


class BuiltinScorer:
    """A built-in detector and the feature extractor it reads, behind the steps every detector
    takes here: fit(train images), score(a batch of images), close()."""

    def __init__(self, detector, extractor: FeatureExtractor, batch_size: int) -> None:
        self.detector, self.extractor, self.batch_size = detector, extractor, batch_size

    def fit(self, train: list[Path], check_stop: Callable[[], None], on_epoch=None) -> None:
        self.detector.fit(_checked(self.extractor.batches(train, self.batch_size), check_stop), check_stop=check_stop)

    def score(self, paths: list[Path], corrupt: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(image scores [B], anomaly maps [B, h, w]) of one batch."""
        scores, maps = self.detector.score(next(self.extractor.batches(paths, len(paths), corrupt)))
        return scores.double().cpu().numpy(), maps.float().cpu().numpy()

    def close(self) -> None:
        pass


def score_held_out(scorer, subset: datasets.Subset, train: list[Path], batch_size: int,
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
        batch_scores, batch_maps = scorer.score(chunk)
        flat = batch_maps.reshape(len(chunk), -1)
        scores.extend(batch_scores.tolist())
        means.extend(flat.mean(axis=1).tolist())
        p99s.extend(np.percentile(flat, 99, axis=1).tolist())
    calibration.scores, calibration.map_mean, calibration.map_p99 = (np.asarray(v, np.float64)
                                                                     for v in (scores, means, p99s))
    return calibration


def run_detector(subsets: list[datasets.Subset], settings: DetectorSettings, *, out_dir: Path, run_name: str,
                 refs: int | None = 3, on_subset: Callable[[SubsetTiming], None] | None = None,
                 on_progress: Callable[..., None] | None = None, resume: bool = False,
                 should_stop: Callable[[], bool] | None = None,
                 on_start: Callable[[int, int], None] | None = None) -> DetectorReport:
    """`refs` = k for few-shot (the MLLM references), None for full-shot (every normal image).
    `on_progress(label, done, total)` is called after each scored batch, and
    `on_progress(label, epoch, epochs, "training")` after each training epoch of an anomalib model.
    `resume`: skip subsets whose results are complete in `out_dir` (the caller has checked that
    run.json matches); `on_start(to_do, already_done)` says how many subsets that leaves, before
    any work. `should_stop()` is asked before each subset, between batches (fit, scoring, held-out
    normals) and between the steps of a detector's own training loop; once it says yes the subset
    in progress is abandoned unwritten and the report's `left` counts the subsets not finished."""
    torch.manual_seed(settings.seed)
    device = resolve_device(settings.device)
    settings.check()
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
                causes = [r.get("cause") for r in JsonlLog.read(jsonl_path) if r.get("status") == "error"]
                unscored = causes.count(NON_FINITE)
                timing = SubsetTiming(subset.label, len(train), len(template), 0.0, 0.0, str(device), 0.0,
                                      skipped=True, broken=len(causes) - unscored, unscored=unscored)
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
    """The backbone (loaded once per run) and a feature extractor reused while the stages match;
    for anomalib models, the run's plan (a model is built per subset)."""

    def __init__(self, settings: DetectorSettings, few_shot: bool, device: torch.device) -> None:
        self.settings, self.few_shot, self.device = settings, few_shot, device
        self.plan = settings.anomalib_plan() if settings.anomalib else None
        self._backbone = None
        self._extractor = None

    def for_subset(self, label: str):
        """A fresh scorer (BuiltinScorer or AnomalibDetector) for one subset."""
        settings = self.settings
        if self.plan is not None:
            from .anomalib_detector import AnomalibDetector
            return AnomalibDetector(self.plan, image_size=settings.image_size, batch_size=settings.batch_size,
                                    seed=settings.seed, device=self.device, label=label)
        if self._backbone is None:
            name = settings.backbone or DEFAULT_BACKBONE
            self._backbone = (random_backbone(name) if settings.random_weights
                              else make_backbone(name, settings.weights))
        detector, stages, grid = make_detector(settings, self.few_shot, self._backbone)
        raw = settings.method == "rd"
        extractor = self._extractor
        if extractor is None or extractor.stages != stages or extractor.raw != raw:
            extractor = self._extractor = FeatureExtractor(stages, self.device, settings.image_size,
                                                           model=self._backbone, grid_stage=grid, raw=raw)
        return BuiltinScorer(detector, extractor, settings.batch_size)


def _fit_score_write(models: _Models, subset: datasets.Subset, template, train: list[Path], csv_path: Path,
                     jsonl_path: Path, *, on_progress, should_stop) -> SubsetTiming:
    """Fit on `train`, score every decodable test image, write the subset's three files (only once
    all of it is done: a stop raises _Stopped before anything is written)."""
    settings, device = models.settings, models.device
    scorer = models.for_subset(subset.label)
    try:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        scorer.fit(train, _stop_check(should_stop),
                   on_epoch=lambda epoch, epochs: on_progress and on_progress(subset.label, epoch, epochs, "training"))
        fitted = time.perf_counter()
        queries = [subset.test_root / rel for rel in template.paths]
        with ThreadPoolExecutor(max_workers=4) as pool:
            problems = list(pool.map(decode_check, queries))
        good = [i for i, problem in enumerate(problems) if problem is None]
        scores, maps = _score_queries(scorer, queries, good, settings, should_stop,
                                      lambda done: on_progress and on_progress(subset.label, done, len(good)))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        finished = time.perf_counter()
        calibration = Calibration()
        if models.few_shot:
            calibration = score_held_out(scorer, subset, train, settings.batch_size, should_stop)
    finally:
        scorer.close()
    errors = [RowError(f"cannot decode {query}: {problem}", "image: cannot be decoded") if problem else None
              for query, problem in zip(queries, problems)]
    unscored = 0
    for i in good:
        if not np.isfinite(scores[i]):
            errors[i] = RowError(f"{settings.method} gave {queries[i]} a non-finite score ({scores[i]})",
                                 NON_FINITE)
            unscored += 1
    write_results(subset, template, scores, maps, errors, method=settings.method, image_size=settings.image_size,
                  few_shot=models.few_shot, calibration=calibration, csv_path=csv_path, jsonl_path=jsonl_path)
    return SubsetTiming(subset.label, len(train), len(queries), fitted - start, finished - fitted,
                        str(device), _peak_memory_mb(device), broken=len(queries) - len(good), unscored=unscored)


def _score_queries(scorer, queries: list[Path], good: list[int], settings: DetectorSettings,
                   should_stop, progressed: Callable[[int], object]) -> tuple[np.ndarray, np.ndarray]:
    """Scores (NaN for images that do not decode) and anomaly maps of the test images, in batches."""
    scores = np.full(len(queries), np.nan)
    maps = None
    done = 0
    for begin in _until_stopped(range(0, len(good), settings.batch_size), should_stop):
        chunk = good[begin:begin + settings.batch_size]
        batch_scores, batch_maps = scorer.score([queries[i] for i in chunk], settings.corrupt)
        if maps is None:
            maps = np.full((len(queries),) + batch_maps.shape[1:], np.nan, dtype=np.float32)
        scores[chunk] = batch_scores
        maps[chunk] = batch_maps
        done += len(chunk)
        progressed(done)
    return scores, maps if maps is not None else np.zeros((len(queries), 1, 1), dtype=np.float32)
