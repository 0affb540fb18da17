"""The gate's threshold rule is calibrated: a normal image exceeds the max of M held-out normals
with probability 1 / (M + 1) when they are exchangeable; and decisions are keyed by what they depend on."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mmad.errors import ConfigError
from mmad.hybrid.gate import DetectorRun, SubsetMaps, Threshold, decide, gate_key, subset_threshold


def maps_with(calibration, scores=(), paths=()):
    scores = np.asarray(scores, np.float64)
    return SubsetMaps("toy/widget", Path("x.maps.npz"), "sha", tuple(paths), scores,
                      np.zeros((len(paths), 2, 2), np.float16), 64, np.asarray(calibration, np.float64))


DETECTOR = DetectorRun(Path("det"), "det-3shot", {"method": "patchcore", "refs": 3})


@pytest.mark.parametrize("held_out", [5, 17])
def test_false_alarm_rate_of_the_max_rule(held_out):
    """Simulated normal scores (three distributions), a fresh held-out set per new normal: the share
    of new normals at or above the threshold matches 1 / (M + 1) within 4 standard errors."""
    rng = np.random.default_rng(held_out)
    trials = 10000
    for draw in (rng.normal, rng.exponential, lambda size: rng.lognormal(0, 2, size)):
        calibrations, new = draw(size=(trials, held_out)), draw(size=trials)
        alarms = 0
        for calibration, score in zip(calibrations, new):
            threshold = subset_threshold(maps_with(calibration), None, DETECTOR)
            alarms += int(score >= threshold.value)
        assert threshold.rule == "calibrated" and threshold.held_out == held_out
        expected = 1 / (held_out + 1)
        error = np.sqrt(expected * (1 - expected) / trials)
        assert abs(alarms / trials - expected) < 4 * error


def test_decisions():
    maps = maps_with([0.1, 0.3], scores=[0.29, 0.3, np.nan], paths=["a.png", "b.png", "c.png"])
    threshold = subset_threshold(maps, None, DETECTOR)
    assert threshold.value == 0.3
    a, b, c, d = (decide(maps, p, threshold) for p in ("a.png", "b.png", "c.png", "zzz.png"))
    assert (a.verdict, b.verdict, c.verdict, d.verdict) == ("normal", "anomalous", "missing", "missing")
    assert a.reason == "detector score 0.29 < threshold 0.3" and "no row" in d.reason
    assert subset_threshold(maps, 0.25, DETECTOR) == Threshold(0.25, "given")
    with pytest.raises(ConfigError, match="--gate-threshold"):
        subset_threshold(maps_with([]), None, DETECTOR)


def test_gate_key_changes_with_everything_it_depends_on():
    maps = maps_with([0.3], scores=[0.1], paths=["a.png"])
    base = decide(maps, "a.png", Threshold(0.3, "calibrated"))
    key = gate_key(DETECTOR, maps, base, "job")
    other_threshold = decide(maps, "a.png", Threshold(0.31, "given"))
    redone = replace(maps, sha256="other")
    other_run = DetectorRun(Path("det"), "det-3shot", {"method": "padim", "refs": 3})
    keys = {key, gate_key(DETECTOR, maps, other_threshold, "job"), gate_key(DETECTOR, redone, base, "job"),
            gate_key(other_run, maps, base, "job"), gate_key(DETECTOR, maps, base, "another job")}
    assert len(keys) == 5 and gate_key(DETECTOR, maps, base, "job") == key
