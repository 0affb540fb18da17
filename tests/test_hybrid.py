"""Two-stage hybrid scoring through the wire server: the gate sends exactly the images at or
above the threshold, its records say so everywhere, a changed threshold re-decides, and contour
images arrive in the request body."""

import json

import numpy as np
import pytest

from mmad import cli
from mmad.config import PACKAGED_PROMPTS
from mmad.data import datasets
from mmad.engine.jobs import build_plan
from mmad.engine.records import best_records
from mmad.hybrid.gate import open_detector_run
from mmad.hybrid.plans import HybridOptions, hybrid_plan
from mmad.providers.openai import OpenAIProvider
from mmad.results.files import JsonlLog, read_result_file
from tests.conftest import make_industry_subset, run_engine
from tests.hybrid_helpers import decoded, pixels_key, query_index, red_mask, write_detector_run
from tests.wire_server import WireServer

KEY = "sk-hybrid-test-0123456789"
# 12 images: levels 0-3, three each. Held-out normals 0.1, 0.2, 0.3 -> calibrated threshold 0.3.
SCORES = [0.1, 0.2, 0.5, 0.25, 0.6, 0.9, 0.35, 0.7, 0.8, 1.2, 0.3, float("nan")]
CALIBRATION = [0.1, 0.2, 0.3]


@pytest.fixture
def setup(tmp_path, monkeypatch):
    root = tmp_path / "data"
    make_industry_subset(root, "toy", "widget", per_level=3, size=(48, 48))
    subset = datasets.resolve(root, "toy", "widget")[0]
    paths = datasets.load_subset(subset).paths
    scores = dict(zip(paths, SCORES))
    detector = write_detector_run(tmp_path / "det", subset, scores, CALIBRATION)
    server = WireServer().start()
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("MMAD_DATA_ROOT", str(root))
    monkeypatch.setenv("MMAD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # default output folders (results/<run>) land here
    yield tmp_path, subset, scores, detector, server
    server.stop()


def score(server, out, *extra):
    return cli.main(["score", "--provider", "openai", "--model", "m", "--base-url", server.openai_url,
                     "--dataset", "toy", "-q", *([] if out is None else ["--out", str(out)]), *extra])


def jobs_sent(server):
    return list(server.requests)


def sent_paths(server, subset, position=-1):
    index = query_index(subset)
    return sorted(index[pixels_key(decoded(r.images()[position]))] for r in jobs_sent(server))


def test_gate_sends_exactly_the_images_at_or_above_the_threshold(setup, capsys):
    tmp, subset, scores, detector, server = setup
    assert score(server, tmp / "out", "--hybrid", str(detector)) == 6  # the NaN row is a failed job
    above = sorted(p for p, s in scores.items() if s >= 0.3)
    assert sent_paths(server, subset) == above and len(above) == 8
    records = {r["path"]: r for r in JsonlLog.read(tmp / "out" / "m+hybrid-det-3shot_toy_widget.jsonl")}
    gated = {p for p, r in records.items() if r["source"] == "gate"}
    assert gated == {p for p, s in scores.items() if s < 0.3 or np.isnan(s)}
    low = next(p for p, s in scores.items() if s == 0.1)
    assert records[low]["status"] == "ok" and records[low]["score"] == 0.0 and records[low]["raw"] is None
    assert records[low]["reason"] == "detector score 0.1 < threshold 0.3"
    assert records[low]["detector_run"] == "det-3shot" and records[low]["gate"] == "normal"
    failed = next(p for p, s in scores.items() if np.isnan(s))
    assert records[failed]["status"] == "error" and records[failed]["score"] is None
    assert "no score" in records[failed]["error"] and records[failed]["source"] == "gate"
    sent = next(p for p, s in scores.items() if s == 0.9)
    assert records[sent]["source"] == "live" and records[sent]["gate"] == "anomalous"
    # the CSV: template columns plus who decided; eval reads it like any run and says what the gate did
    csv_text = (tmp / "out" / "m+hybrid-det-3shot_toy_widget.csv").read_text().splitlines()
    assert csv_text[0] == "Path,Severity,Anomaly Score,Decided By"
    assert sum(line.endswith(",gate") for line in csv_text) == 3
    assert any(line.startswith(failed + ",") and line.endswith(",,") for line in csv_text)
    table = read_result_file(tmp / "out" / "m+hybrid-det-3shot_toy_widget.csv")
    assert np.isnan(table.scores).sum() == 1 and (table.scores == 0).sum() >= 3
    capsys.readouterr()
    assert cli.main(["eval", str(tmp / "out"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["dropped"] == 1
    assert cli.main(["eval", str(tmp / "out")]) == 0
    assert "m+hybrid-det-3shot: 3 of 12 row(s) decided by the detector gate" in capsys.readouterr().err
    info = json.loads((tmp / "out" / "run.json").read_text())
    hybrid = info["settings"]["hybrid"]
    assert info["run"] == "m+hybrid-det-3shot" and hybrid["detector_run"] == "det-3shot"
    assert hybrid["thresholds"] == {"toy/widget": 0.3} and hybrid["contour"] == "none"


def test_a_changed_threshold_re_decides(setup, capsys):
    tmp, subset, scores, detector, server = setup
    assert score(server, None, "--hybrid", str(detector)) == 6
    first = len(jobs_sent(server))
    # the same folder with another threshold is refused (run.json records the hybrid settings)
    code = score(server, "results/m+hybrid-det-3shot", "--hybrid", str(detector), "--gate-threshold", "0.65")
    assert code == 2 and "thresholds" in capsys.readouterr().err
    assert score(server, None, "--hybrid", str(detector), "--gate-threshold", "0.65") == 6
    assert len(jobs_sent(server)) == first  # everything at or above 0.65 was answered before: from the cache
    records = JsonlLog.read(tmp / "results" / "m+hybrid-det-3shot+gate0.65" / "m+hybrid-det-3shot+gate0.65_toy_widget.jsonl")
    gated = {r["path"] for r in records if r["source"] == "gate" and r["status"] == "ok"}
    assert gated == {p for p, s in scores.items() if s < 0.65}
    assert all(r["gate_threshold"] == 0.65 for r in records)


def test_engine_level_no_stale_gate_decision(setup):
    """Plans rebuilt with a lower threshold into the same folder: images the old threshold gated
    are sent now (their old gate records do not count), nothing keeps the old threshold."""
    tmp, subset, scores, detector_dir, server = setup
    provider = OpenAIProvider(api_key=KEY, base_url=server.openai_url)
    detector = open_detector_run(detector_dir)

    def plans(threshold):
        plain = build_plan([subset], identity=provider.identity(), model="m", refs=3, prompt_choice=None,
                           prompts_dir=PACKAGED_PROMPTS, out_dir=tmp / "plain", run_name="m")
        options = HybridOptions(detector, threshold, "none", tmp / "contours", PACKAGED_PROMPTS, None,
                                provider.identity())
        return [hybrid_plan(plan, options, out_dir=tmp / "same", run_name="h")[0] for plan in plain]

    run_engine(provider, plans(0.3), tmp / "cache")
    before = len(jobs_sent(server))
    provider = OpenAIProvider(api_key=KEY, base_url=server.openai_url)
    second = plans(0.15)
    run_engine(provider, second, tmp / "cache")
    index = query_index(subset)
    later = sorted(index[pixels_key(decoded(r.images()[-1]))] for r in jobs_sent(server)[before:])
    assert later == sorted(p for p, s in scores.items() if 0.15 <= s < 0.3)  # 0.2 and 0.25: sent now
    best = best_records(JsonlLog.read(tmp / "same" / "h_toy_widget.jsonl"))
    current = [best[job.key] for job in second[0].jobs]
    gate = [r for r in current if r["source"] == "gate"]
    assert all(r["gate_threshold"] == 0.15 for r in gate)  # no decision of the old threshold counts
    assert {r["path"] for r in gate if r["status"] == "ok"} == {p for p, s in scores.items() if s < 0.15}
    # the model's answers are the same requests under either threshold: kept, not paid again
    assert {r["path"] for r in current if r["source"] != "gate"} == {p for p, s in scores.items() if s >= 0.15}


@pytest.mark.parametrize("mode", ["separate", "on-query"])
def test_contour_images_arrive_in_the_request(setup, mode):
    tmp, subset, scores, detector, server = setup
    assert score(server, tmp / "out", "--hybrid", str(detector), "--hybrid-contour", mode) == 6
    requests = jobs_sent(server)
    assert len(requests) == 8
    index = query_index(subset)
    for received in requests:
        images = [decoded(data) for data in received.images()]
        texts = received.texts()
        contour = images[3]
        red = red_mask(contour)
        # the hot patch (2, 5) of the 8x8 map on a 48-px image: rows 12..17, columns 30..35
        ys, xs = np.nonzero(red)
        assert red.any() and 6 <= ys.min() and ys.max() <= 24 and 24 <= xs.min() and xs.max() <= 42
        assert not red[30:, :].any() and not red[:, :18].any()  # none where the map is low
        if mode == "separate":
            assert len(images) == 5 and texts[-2:] == ["Contour Image :", "Inference Image :"]
            assert not red_mask(images[4]).any()  # the query itself comes last, unmarked
            query = index[pixels_key(images[4])]
            assert "You are given five industrial inspection images" in texts[0]
        else:
            assert len(images) == 4 and texts[-1] == "Inference Image :"
            plain = np.asarray(contour).copy()
            query = next(p for p in index.values() if np.array_equal(
                np.asarray(decoded_file(subset, p))[~red], plain[~red]))
        assert scores[query] >= 0.3
    info = json.loads((tmp / "out" / "run.json").read_text())
    assert info["settings"]["hybrid"]["contour"] == mode


def decoded_file(subset, rel):
    from PIL import Image
    with Image.open(subset.test_root / rel) as image:
        return image.convert("RGB")


def test_dry_run_and_estimate_show_gated_versus_sent(setup, capsys):
    tmp, subset, scores, detector, server = setup
    assert score(server, tmp / "out", "--hybrid", str(detector), "--dry-run") == 0
    out = capsys.readouterr().out
    assert "3 of 12 jobs gated" in out and "8 to m" in out and "1 without a detector score" in out
    assert "8 jobs in 1 run(s) x 1 subset(s)" in out and not server.requests
    code = cli.main(["estimate", "--provider", "openai", "--model", "gpt-4o", "--dataset", "toy",
                     "--hybrid", str(detector)])
    out = capsys.readouterr().out
    assert code == 0 and "3 of 12 jobs decided by the gate, 9 calls to the model; saves ~$" in out
    assert "8 jobs to send" in out
    code = cli.main(["estimate", "--provider", "openai", "--model", "gpt-4o", "--dataset", "toy",
                     "--hybrid", str(detector), "--json"])
    captured = capsys.readouterr()
    assert code == 0 and json.loads(captured.out)["total"]["jobs"] == 8  # stdout is only the JSON
    assert "3 of 12 jobs gated" in captured.err


def test_misuse_is_one_line(setup, capsys):
    tmp, subset, scores, detector, server = setup
    assert score(server, tmp / "o", "--prompt", "industrial-contour") == 2
    assert "needs --hybrid DETECTOR_RUN --hybrid-contour separate" in capsys.readouterr().err
    assert score(server, tmp / "o", "--gate-threshold", "1") == 2
    assert score(server, tmp / "o", "--hybrid", str(tmp / "nowhere")) == 2
    assert score(server, tmp / "p", "--hybrid", str(detector), "--prompt", "industrial-contour") == 2
    assert "--hybrid-contour" in capsys.readouterr().err and not server.requests


def test_hybrid_in_batch_mode_sends_only_what_the_gate_lets_through(setup, capsys):
    from mmad.results.files import JsonlLog
    tmp, subset, scores, detector, server = setup
    # exit 6: the one image the detector failed on is recorded as that job's failure
    assert score(server, tmp / "b", "--hybrid", str(detector), "--batch", "--poll-interval", "0.01") == 6
    records = [r for path in (tmp / "b").glob("*.jsonl") for r in JsonlLog.read(path)]
    gated = [r for r in records if r["source"] == "gate" and r["status"] == "ok"]
    assert len(records) == 12 and len(gated) == 3 and all(r["score"] == 0 for r in gated)
    assert sum(batch["count"] for batch in server.batches.values()) == 8
    assert [r["source"] for r in records].count("batch") == 8
