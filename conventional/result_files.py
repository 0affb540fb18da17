"""A detector subset's files: the result CSV and JSONL (the MLLM engine's formats) and the
`.maps.npz` beside them, each written atomically; and whether a subset is already complete."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmad.atomic import atomic_write_bytes, atomic_write_text
from mmad.data import datasets
from mmad.data.templates import write_result_csv
from mmad.errors import StorageError, describe_os_error
from mmad.results.files import JsonlLog

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


@dataclass(frozen=True)
class RowError:
    """Why a test row has no score: its JSONL `error` and `cause`."""

    error: str
    cause: str


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


def write_results(subset: datasets.Subset, template, scores: np.ndarray, maps: np.ndarray,
                  errors: list[RowError | None], *, method: str, image_size: int, few_shot: bool,
                  calibration: Calibration, csv_path: Path, jsonl_path: Path) -> None:
    """The subset's CSV, JSONL and maps, each written atomically; a full or read-only disk is one line.
    A row with an error has no score (empty in the CSV, null in the JSONL, NaN in the maps file)."""
    scores = np.where([e is None for e in errors], scores, np.nan)
    try:
        write_result_csv(csv_path, zip(template.paths, template.severity.tolist(),
                                       [None if np.isnan(s) else float(s) for s in scores]))
        records = []
        for rel, sev, score, error in zip(template.paths, template.severity, scores, errors):
            record = {"dataset": subset.dataset, "subset": subset.subset, "path": rel, "severity": float(sev),
                      "score": None if error else float(score), "status": "error" if error else "ok",
                      "source": "local", "method": method, "few_shot": few_shot}
            if error:
                record.update(error=error.error, cause=error.cause)
            records.append(json.dumps(record))
        atomic_write_text(jsonl_path, "\n".join(records) + "\n")
        save_maps(csv_path.with_suffix(".maps.npz"), list(template.paths), maps, image_size, scores, calibration)
    except OSError as exc:  # full or read-only disk: one line, and no half-written file
        where = exc.filename or csv_path.parent
        raise StorageError(f"cannot write the results of {subset.label}: {describe_os_error(where, exc)}") from None
