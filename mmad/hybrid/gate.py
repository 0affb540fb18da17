"""A conventional detector's run used as a gate: its saved maps and scores, the threshold rule,
and one decision per image.

A detector run (`mmad score --provider patchcore|padim|rd`) leaves per subset a
`<run>_<dataset>_<subset>.maps.npz` with the test images' patch-grid maps (`maps`), their image
scores (`scores`, the map maxima) and, for few-shot runs, the scores of held-out normal training
images never fitted on (`calibration_scores`).

Threshold rule (per subset): **t = the largest image score among the held-out normals**, unless
`--gate-threshold` gives one value for every subset. An image whose detector score is below t is
called normal; at or above t, anomalous. If the held-out normals and a new normal image are
exchangeable, the new one lands at or above the largest of M held-out scores with probability at
most 1 / (M + 1) (1/18 with synth's 17 held-out images): the false-alarm rate the rule controls.
Full-shot runs fit on every normal image, so they hold none out: give `--gate-threshold`.

A decision is keyed by everything it depends on (the detector run's name and settings, the
digest of its maps file, the threshold, the image, and the request it replaces), so a changed
threshold or a re-run detector never reuses a stale decision.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from mmad.data import datasets
from mmad.errors import ConfigError, DataError
from mmad.reading import read_bytes
from mmad.results.runinfo import read_run_info

MAPS_SUFFIX = ".maps.npz"
GATE_KEY_VERSION = 1


@dataclass(frozen=True)
class SubsetMaps:
    """One subset's saved detector output."""

    label: str
    source: Path
    sha256: str  # of the .npz file: changes when the detector run is redone
    paths: tuple[str, ...]
    scores: np.ndarray  # image scores, NaN where the detector failed on the image
    maps: np.ndarray  # [N, h, w] float16 patch grids
    image_size: int
    calibration_scores: np.ndarray  # held-out normals' image scores (empty: none held out)

    @cached_property
    def _rows(self) -> dict[str, int]:
        return {path: row for row, path in enumerate(self.paths)}

    def row(self, path: str) -> int | None:
        return self._rows.get(path)

    def map_digest(self, row: int) -> str:
        """Identity of one image's map (its float16 bytes and shape)."""
        grid = np.ascontiguousarray(self.maps[row])
        return hashlib.sha256(f"{grid.shape}|{grid.dtype}".encode() + grid.tobytes()).hexdigest()


def load_maps(path: Path, label: str) -> SubsetMaps:
    """Read a .maps.npz; maps saved before calibration data existed have no calibration scores."""
    try:
        raw = read_bytes(path)
        with np.load(io.BytesIO(raw)) as stored:
            files = set(stored.files)
            missing = {"paths", "maps"} - files
            if missing:
                raise DataError(f"{path}: not a detector maps file (missing {', '.join(sorted(missing))})")
            paths = tuple(str(p) for p in stored["paths"])
            maps = stored["maps"]
            scores = (np.asarray(stored["scores"], np.float64) if "scores" in files
                      else maps.reshape(len(paths), -1).astype(np.float64).max(axis=1))
            calibration = (np.asarray(stored["calibration_scores"], np.float64) if "calibration_scores" in files
                           else np.zeros(0))
            size = int(stored["image_size"]) if "image_size" in files else 0
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    except ValueError as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    if maps.ndim != 3 or maps.shape[0] != len(paths) or scores.shape != (len(paths),):
        raise DataError(f"{path}: maps {maps.shape} and scores {scores.shape} do not match {len(paths)} paths")
    return SubsetMaps(label, path, hashlib.sha256(raw).hexdigest(), paths, scores, maps, size, calibration)


@dataclass
class DetectorRun:
    """A detector's run folder; subsets' maps are loaded on first use."""

    folder: Path
    name: str
    settings: dict
    _loaded: dict = field(default_factory=dict, repr=False)

    def maps_path(self, subset: datasets.Subset) -> Path:
        stem = datasets.template_name(subset.dataset, subset.subset)[:-len("_template.csv")]
        exact = self.folder / f"{self.name}_{stem}{MAPS_SUFFIX}"
        if exact.is_file():
            return exact
        found = sorted(self.folder.glob(f"*_{stem}{MAPS_SUFFIX}"))
        if len(found) == 1:
            return found[0]
        if not found:
            raise ConfigError(f"detector run {self.folder} has no maps for {subset.label} (expected {exact.name}); "
                              f"score that subset with the detector first")
        raise ConfigError(f"detector run {self.folder} holds several maps for {subset.label}: "
                          f"{', '.join(p.name for p in found)}")

    def subset_maps(self, subset: datasets.Subset) -> SubsetMaps:
        if subset.label not in self._loaded:
            self._loaded[subset.label] = load_maps(self.maps_path(subset), subset.label)
        return self._loaded[subset.label]

    def identity(self) -> dict:
        return {"run": self.name, "settings": self.settings}


def open_detector_run(folder: str | Path) -> DetectorRun:
    """A detector run folder (with run.json of kind "detector", or at least .maps.npz files)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"detector run {folder} not found (run `mmad score --provider patchcore ...` first)")
    info = read_run_info(folder)
    if info is not None and info.get("kind") != "detector":
        kind = {"mllm": "score (MLLM)"}.get(str(info.get("kind")), str(info.get("kind")))
        raise ConfigError(f"{folder} is a {kind} run, not a detector run (`mmad runs` lists each run's kind)")
    if info is None and not any(folder.glob(f"*{MAPS_SUFFIX}")):
        raise ConfigError(f"{folder} holds no detector maps (*{MAPS_SUFFIX}); is it a detector run folder?")
    return DetectorRun(folder, str(info.get("run")) if info else folder.name, dict(info.get("settings", {})) if info else {})


@dataclass(frozen=True)
class Threshold:
    value: float
    rule: str  # "given" or "calibrated"
    held_out: int = 0  # calibrated: how many held-out normals

    def describe(self) -> str:
        if self.rule == "given":
            return f"{self.value:.6g} (--gate-threshold)"
        return f"{self.value:.6g} (max of {self.held_out} held-out normal image scores)"


def subset_threshold(maps: SubsetMaps, given: float | None, detector: DetectorRun) -> Threshold:
    """`given` when set, else the calibrated rule (the module docstring)."""
    if given is not None:
        return Threshold(float(given), "given")
    held_out = maps.calibration_scores[np.isfinite(maps.calibration_scores)]
    if held_out.size == 0:
        why = ("it is a full-shot run (every normal image was fitted on, none held out)"
               if detector.settings.get("refs") is None and detector.settings else
               "its maps hold no held-out normal scores (a run made before they were saved, or a subset with "
               "no normal-train images beyond the references)")
        raise ConfigError(f"{maps.source}: cannot calibrate a gate threshold for {maps.label}: {why}; "
                          f"give --gate-threshold, or re-run the few-shot detector into a new folder")
    return Threshold(float(held_out.max()), "calibrated", int(held_out.size))


@dataclass(frozen=True)
class GateDecision:
    """The detector's verdict on one image: `normal` (score < threshold), `anomalous`, or `missing`
    (no score: the detector failed on the image or never saw it)."""

    path: str
    verdict: str
    score: float | None
    threshold: float
    row: int | None
    reason: str

    @property
    def normal(self) -> bool:
        return self.verdict == "normal"


def decide(maps: SubsetMaps, path: str, threshold: Threshold) -> GateDecision:
    row = maps.row(path)
    if row is None:
        return GateDecision(path, "missing", None, threshold.value, None,
                            f"detector maps {maps.source.name} have no row for this image")
    score = float(maps.scores[row])
    if not math.isfinite(score):
        return GateDecision(path, "missing", None, threshold.value, row,
                            "the detector has no score for this image (it failed on it)")
    if score < threshold.value:
        return GateDecision(path, "normal", score, threshold.value, row,
                            f"detector score {score:.4g} < threshold {threshold.value:.4g}")
    return GateDecision(path, "anomalous", score, threshold.value, row,
                        f"detector score {score:.4g} >= threshold {threshold.value:.4g}")


def gate_key(detector: DetectorRun, maps: SubsetMaps, decision: GateDecision, replaced_key: str) -> str:
    """The key of a gate record: changes with the detector run, its maps, the threshold, the image
    and the request the decision stands in for."""
    material = {"gate": GATE_KEY_VERSION, "detector": detector.identity(), "maps_sha256": maps.sha256,
                "threshold": repr(float(decision.threshold)), "path": decision.path, "replaces": replaced_key}
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def gate_fields(decision: GateDecision, detector: DetectorRun) -> dict:
    """Record fields every job of a gated run carries: what the detector said."""
    return {"detector_run": detector.name, "detector_score": decision.score, "gate_threshold": decision.threshold,
            "gate": decision.verdict}


def gate_local(decision: GateDecision, fields: dict) -> dict:
    """`Job.local` for a decision made without a request: ok for a normal verdict (with `fields`,
    e.g. score 0), error for a missing score (never a silent default)."""
    if decision.normal:
        return {"source": "gate", "status": "ok", "fields": dict(fields)}
    return {"source": "gate", "status": "error", "fields": {}, "reason": decision.reason}
