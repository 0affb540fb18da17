"""Prompt ablations end to end: a 2 prompts x 2 refs grid through the real SDK and the wire server
(which answers with a prompt-dependent amount of severity signal), then `mmad compare`."""

import base64
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mmad.results import JsonlLog
from tests.conftest import write_csv
from tests.wire_server import WireServer

LEVELS = 4
PER_LEVEL = 15


def graded_subset(root, dataset="toy", subset="widget"):
    """Images whose brightness carries their level, so the server can 'see' severity."""
    rng = np.random.default_rng(3)
    base = root / "Industry" / dataset / subset
    for i in range(5):
        path = base / "train" / "good" / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(30, 50, (24, 24, 3), dtype=np.uint8)).save(path)
    rows = []
    for level in range(LEVELS):
        for i in range(PER_LEVEL):
            rel = f"level_{level}/{i:03d}.png"
            path = base / "test" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            brightness = 40 + 50 * level
            Image.fromarray(rng.integers(brightness - 10, brightness + 10, (24, 24, 3), dtype=np.uint8)).save(path)
            rows.append([rel, str(level)])
    write_csv(root / "template" / f"{dataset}_{subset}_template.csv", ["Path", "Severity"], rows)


def graded_answer(received):
    """The paper prompt (a blank line before 'Image 4:') gets a clean severity signal; the
    scripts' prompt a noisy one; zero-shot texts something in between."""
    query = Image.open(io.BytesIO(base64.b64decode(received.images()[-1])))
    level = (np.asarray(query, dtype=float).mean() - 40) / 50
    noise = int(received.query_id()[:6], 16) % 41 - 20  # deterministic per image
    instruction = received.texts()[0]
    if "\n\nImage 4:" in instruction:
        score = 25 * level + noise * 0.2
    elif "Image 4:" in instruction:
        score = 25 * level + noise * 3
    else:
        score = 25 * level + noise * 1.5
    return f"Anomaly Score: {int(np.clip(round(score), 0, 100))}\nReason: graded."


@pytest.fixture
def setup(tmp_path):
    graded_subset(tmp_path / "data")
    server = WireServer(answer=graded_answer).start()
    env = dict(os.environ, OPENAI_API_KEY="k", MMAD_CACHE_DIR=str(tmp_path / "cache"),
               MMAD_DATA_ROOT=str(tmp_path / "data"))
    yield tmp_path, server, env
    server.stop()


def mmad(env, *args, cwd=None):
    return subprocess.run([sys.executable, "-m", "mmad.cli", *args], env=env, capture_output=True, text=True,
                          timeout=180, cwd=cwd)


def test_grid_runs_every_variant_once_and_compare_finds_the_planted_effect(setup):
    tmp, server, env = setup
    grid = ["score", "--provider", "openai", "--model", "m", "--base-url", server.openai_url, "--dataset", "toy",
            "--prompt", "industrial,industrial-paper", "--refs", "0,3", "--out", str(tmp / "grid"), "-q"]
    dry = mmad(env, *grid, "--dry-run")
    assert dry.returncode == 0 and "240 jobs in 4 run(s)" in dry.stdout
    estimate = mmad(env, "estimate", *grid[1:-1])
    assert estimate.returncode == 0 and "m+industrial-paper" in estimate.stdout
    first = mmad(env, *grid)
    assert first.returncode == 0, first.stderr
    folders = sorted(p.name for p in (tmp / "grid").iterdir())
    assert folders == ["m", "m+industrial-paper", "m+industrial-paper+refs0", "m+refs0"]
    for folder in folders:
        info = json.loads((tmp / "grid" / folder / "run.json").read_text())
        assert info["run"] == folder and info["settings"]["task"] == "score"
        assert len(JsonlLog.read(tmp / "grid" / folder / f"{folder}_toy_widget.jsonl")) == 60
    # both zero-shot variants send the zero-shot text: identical requests, paid once
    paid = [r for r in server.paid if r.body.get("max_tokens") == 300]
    assert len(paid) == 180
    again = mmad(env, *grid)
    assert again.returncode == 0 and len([r for r in server.paid if r.body.get("max_tokens") == 300]) == 180
    # interleaved: the first requests went to every variant, not one after another
    firsts = [r.texts()[0] for r in paid[:12]]
    assert any("\n\nImage 4:" in t for t in firsts) and any("\nImage 4:" in t and "\n\nImage 4:" not in t
                                                             for t in firsts)
    planted = mmad(env, "compare", str(tmp / "grid" / "m"), str(tmp / "grid" / "m+industrial-paper"), "--json")
    assert planted.returncode == 0, planted.stderr
    verdicts = json.loads(planted.stdout)["comparisons"][0]["verdicts"]
    assert any("C-index" in v and "m+industrial-paper is higher" in v for v in verdicts), verdicts
    same = mmad(env, "compare", str(tmp / "grid" / "m+refs0"), str(tmp / "grid" / "m+industrial-paper+refs0"),
                "--json")
    verdicts = json.loads(same.stdout)["comparisons"][0]["verdicts"]
    assert all("no significant difference" in v for v in verdicts if ": " in v), verdicts


def test_experiment_file_reference_choice_and_repeats(setup):
    tmp, server, env = setup
    experiment = tmp / "ablation.toml"
    experiment.write_text('[[variant]]\nreference_choice = "first"\n'
                          '[[variant]]\nreference_choice = "random:7"\n'
                          '[[variant]]\nreference_choice = "similar"\nrefs = 2\n')
    base = ["score", "--provider", "openai", "--model", "m", "--base-url", server.openai_url, "--dataset", "toy",
            "--out", str(tmp / "exp"), "-q", "--sample", "12", "--seed", "1"]
    result = mmad(env, *base, "--experiment", str(experiment), "--repeats", "2")
    assert result.returncode == 0, result.stderr
    folders = sorted(p.name for p in (tmp / "exp").iterdir())
    assert folders == ["m+random7+sample12s1", "m+random7+sample12s1+r1", "m+refs2+similar+sample12s1",
                       "m+refs2+similar+sample12s1+r1", "m+sample12s1", "m+sample12s1+r1"]
    records = JsonlLog.read(tmp / "exp" / "m+sample12s1" / "m+sample12s1_toy_widget.jsonl")
    levels = sorted(r["severity"] for r in records)
    assert len(records) == 12 and levels.count(0.0) == levels.count(3.0) == 3  # stratified by level
    # a repeat is a new paid answer to the same request: 3 variants x 2 repeats x 12 jobs
    assert len([r for r in server.paid if r.body.get("max_tokens") == 300]) == 72
    similar = [r for r in server.requests if r.body.get("max_tokens") == 300 and len(r.images()) == 3]
    assert len(similar) == 24 and len({tuple(r.images()[:2]) for r in similar}) >= 1
    noise = mmad(env, "noise", str(tmp / "exp" / "m+sample12s1"), str(tmp / "exp" / "m+sample12s1+r1"), "--json")
    assert noise.returncode == 0, noise.stderr


def test_similar_references_are_the_closest_normal_images(tmp_path):
    from mmad import datasets, references
    graded_subset(tmp_path)
    subset = datasets.resolve(tmp_path, "toy", "widget")[0]
    pool = references.pool_of(subset)
    bright = tmp_path / "bright.png"
    Image.fromarray(np.full((24, 24, 3), 200, dtype=np.uint8)).save(bright)
    dark_copy = tmp_path / "copy.png"
    dark_copy.write_bytes(pool[2].read_bytes())
    [chosen_for_copy, chosen_for_bright] = references.choose(subset, 2, "similar", [dark_copy, bright])
    assert chosen_for_copy[0] == pool[2]  # its own twin first
    assert references.choose(subset, 3, "random:7", [bright]) == references.choose(subset, 3, "random:7", [bright])
    assert references.choose(subset, 3, "random:7", [bright]) != references.choose(subset, 3, "random:8", [bright])
