"""The view's library on runs of every kind made by `mmad` against the wire server (tests.view_demo):
what it finds, what it computes (against the library's own evaluators and a pair-counting oracle),
that every rebuilt request carries its record's cache key and the very bytes the server received,
that it reads lazily and writes nothing beside the results, and the HTTP API."""

import base64
import tempfile
from pathlib import Path

import numpy as np
import pytest

from mmad import config
from mmad.view.items import Items, load_items, misranks
from mmad.view.payloads import open_view
from mmad.view.rebuild import image_bytes, rebuild


def open_demo(demo, scratch=None):
    return open_view([demo.out / "results"], data_root=demo.out / "data", prompts_dir=config.prompts_dir(),
                     qa_root=demo.out / "mmad-qa", scratch=Path(scratch or tempfile.mkdtemp()))


def by_name(data):
    return {run.name: run for run in data.catalog.runs}


def tree(folder: Path) -> dict:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("seed", range(4))
def test_misrank_is_each_items_share_of_wrongly_ordered_cross_level_pairs(seed):
    rng = np.random.default_rng(seed)
    n = 60
    items = Items(subsets=["a", "b"], sub=rng.integers(0, 2, n).tolist(),
                  severity=rng.integers(0, 4, n).astype(float).tolist(),
                  score=[None if rng.random() < 0.1 else float(v) for v in rng.integers(0, 8, n)])  # many ties
    items.status, items.key = ["ok"] * n, [str(i) for i in range(n)]
    got = misranks(items, "score")
    for i in range(n):
        others = [j for j in range(n) if j != i and items.sub[j] == items.sub[i] and items.score[j] is not None
                  and items.severity[j] != items.severity[i]]
        if items.score[i] is None or not others:
            assert got[i] is None
            continue
        wrong = sum(0.5 if items.score[j] == items.score[i] else
                    float((items.severity[j] < items.severity[i]) == (items.score[j] > items.score[i]))
                    for j in others)
        assert got[i] == pytest.approx(wrong / len(others), abs=1e-6)


def test_the_catalog_finds_every_kind_from_names_alone(view_demo):
    data = open_demo(view_demo)
    kinds = {run.name: run.kind for run in data.catalog.runs}
    assert sorted(kinds.values()) == ["classify", "detector", "hybrid", "qa", "score", "score"]
    assert data.catalog.notes == []
    listing = data.runs()
    assert all(entry["summary"] is None for entry in listing["runs"]) and not data._items  # nothing read yet


def test_summaries_are_the_library_evaluators_numbers(view_demo):
    from mmad.analysis.evaluate import dataset_means, evaluate_paths
    from mmad.classify.evaluate import find_classify_files, read_category, run_means
    from mmad.qa.metrics import evaluate_run
    from mmad.qa.results import load_runs as load_qa
    data = open_demo(view_demo)
    runs = by_name(data)
    for name in ("gpt-4o", "gpt-4o+industrial-paper", "det-3shot"):
        means = dataset_means(evaluate_paths([runs[name].folder]))
        summary = data.summary(runs[name].rid)
        for key in ("auroc", "c_index", "kendall_tau_b"):
            assert summary["metrics"][key] == pytest.approx(np.mean([getattr(m, key) for m in means]), abs=1e-12)
        assert summary["jobs"] == {"ok": 36, "failed": 0, "todo": 0, "total": 36, "by_status": {"ok": 36}}
    qa = next(run for run in data.catalog.runs if run.kind == "qa")
    rows = next(iter(load_qa([qa.folder]).values()))
    assert data.summary(qa.rid)["metrics"]["accuracy"] == pytest.approx(evaluate_run(qa.name, rows)[-1].cells["Average"])
    assert data.summary(qa.rid)["jobs"]["failed"] == sum(r.status != "ok" for r in rows)
    cls = next(run for run in data.catalog.runs if run.kind == "classify")
    mean = run_means([read_category(p) for p in find_classify_files([cls.folder])])[0]
    assert data.summary(cls.rid)["metrics"]["accuracy"] == pytest.approx(mean.accuracy)
    paid = data.summary(runs["gpt-4o"].rid)
    assert paid["cost_usd"] > 0 and paid["settings"]["prompt"] == "default" and paid["wall_s"] > 0


def test_every_rebuilt_request_carries_its_records_cache_key(view_demo):
    data = open_demo(view_demo)
    checked = {"sent": 0, "gated": 0}
    for run in data.catalog.runs:
        if run.kind == "detector":
            continue
        items = load_items(run)
        for row in range(len(items)):
            record = items.finals[row]
            rebuilt = rebuild(data.context, run, items.files[items.sub[row]], items.key[row], items.path[row], record)
            if record.get("source") == "gate":
                assert not rebuilt.sent and rebuilt.matches(record) is None
                checked["gated"] += 1
            else:
                assert rebuilt.matches(record) is True, (run.name, items.key[row])
                checked["sent"] += 1
    assert checked["sent"] > 150 and checked["gated"] > 10


def test_rebuilt_images_are_the_bytes_the_server_received(view_demo):
    data = open_demo(view_demo)
    received = {tuple(r.images()) for r in view_demo.received}
    for kind in ("score", "hybrid", "qa", "classify"):
        run = next(r for r in data.catalog.runs if r.kind == kind)
        items = load_items(run)
        sent = [row for row in range(len(items)) if (items.finals[row] or {}).get("source") == "live"]
        for row in sent[:: max(1, len(sent) // 6)]:
            rebuilt = rebuild(data.context, run, items.files[items.sub[row]], items.key[row], items.path[row],
                              items.finals[row])
            images = tuple(base64.b64encode(image_bytes(image)[0]).decode() for image in rebuilt.images)
            assert images in received, (kind, items.key[row])


def test_a_stopped_run_shows_its_answered_and_to_do_items(view_demo, tmp_path):
    import shutil
    copy = tmp_path / "results" / "stopped"
    shutil.copytree(view_demo.folders["gpt-4o"], copy)
    brick = copy / "gpt-4o_synth_brick.jsonl"
    lines = brick.read_text().splitlines(keepends=True)
    brick.write_text("".join(lines[:5]) + '{"torn": ')  # 5 answered, then a torn line (a kill mid-write)
    (copy / "gpt-4o_synth_grass.csv").unlink()  # a subset whose CSV was never written
    data = open_view([tmp_path / "results"], data_root=view_demo.out / "data", prompts_dir=config.prompts_dir(),
                     qa_root=tmp_path, scratch=tmp_path / "scratch")
    summary = data.summary(data.catalog.runs[0].rid)
    assert summary["jobs"]["todo"] == 12 - 5 and summary["jobs"]["ok"] == 36 - 7


def test_the_api_and_nothing_written_beside_the_results(view_demo):
    from PIL import Image
    from starlette.testclient import TestClient

    from mmad.view.server import create_app
    before = tree(view_demo.out / "results")
    data = open_demo(view_demo)
    client = TestClient(create_app(data), base_url="http://127.0.0.1")
    runs = client.get("/api/runs.json").json()["runs"]
    hybrid = next(r["rid"] for r in runs if r["kind"] == "hybrid")
    page = client.get(f"/api/run/{hybrid}.json").json()
    assert page["columns"]["n"] == 36 and "raw" not in page["columns"] and len(page["per_subset"]) == 3
    assert len(client.get(f"/api/text/{hybrid}.json").json()["raw"]) == 36
    row = next(i for i, s in enumerate(page["columns"]["source"]) if page["columns"]["sources"][s] == "live")
    item = client.get(f"/api/item/{hybrid}/{row}.json").json()
    assert item["request"]["matches"] is True and len(item["request"]["images"]) == 5
    image = client.get(f"/api/image/{hybrid}/{row}/3")
    assert image.headers["content-type"] == "image/png"
    import io
    assert Image.open(io.BytesIO(image.content)).size == (96, 96)
    assert client.get(f"/api/thumb/{hybrid}/{row}").headers["content-type"] == "image/png"
    assert client.get("/api/run/nope.json").status_code == 404
    assert client.get(f"/api/item/{hybrid}/999.json").status_code == 404
    assert client.get("/api/runs.json", headers={"host": "evil.example"}).status_code == 400
    verdict = client.get(f"/api/verdict/{runs[0]['rid']}/{runs[1]['rid']}.json").json()
    assert "verdicts" in verdict
    assert tree(view_demo.out / "results") == before


def test_a_static_export_and_mmad_runs(view_demo, tmp_path):
    import json
    import subprocess
    import sys
    before = tree(view_demo.out / "results")
    out = tmp_path / "export"
    done = subprocess.run([sys.executable, "-m", "mmad.cli", "view", "--export", str(out)], cwd=view_demo.out,
                          capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "MMAD_DATA_ROOT": str(view_demo.out / "data"),
                               "MMAD_QA_ROOT": str(view_demo.out / "mmad-qa")})
    assert done.returncode == 0, done.stderr
    assert 'data-mode="export"' in (out / "index.html").read_text()
    assert (out / "data" / "runs.js").read_text().startswith("window.mmadData(")
    total = sum(len(load_items(run)) for run in open_demo(view_demo).catalog.runs)
    assert len(list((out / "data").glob("item-*.js"))) == total == 5 * 36 + 60
    assert len(list((out / "img").glob("t-*.png"))) == total and (out / "static" / "js" / "core.js").is_file()
    assert tree(view_demo.out / "results") == before
    runs = subprocess.run([sys.executable, "-m", "mmad.cli", "runs", "--json"], cwd=view_demo.out, capture_output=True,
                          text=True, timeout=120)
    rows = {row["name"]: row for row in json.loads(runs.stdout)["runs"]}
    assert set(rows) == {r.name for r in open_demo(view_demo).catalog.runs}
    assert rows["gpt-4o"]["metrics"]["auroc"] == pytest.approx(
        open_demo(view_demo).summary(by_name(open_demo(view_demo))["gpt-4o"].rid)["metrics"]["auroc"])
    table = subprocess.run([sys.executable, "-m", "mmad.cli", "runs"], cwd=view_demo.out, capture_output=True,
                           text=True, timeout=120)
    assert "det-3shot" in table.stdout and "industrial-paper" in table.stdout


def test_bad_view_input_is_one_line(tmp_path):
    import socket
    import subprocess
    import sys

    def mmad(*args):
        return subprocess.run([sys.executable, "-m", "mmad.cli", *args], cwd=tmp_path, capture_output=True, text=True,
                              timeout=60)
    for args, said in ((("view", "nope"), "nope: no such file or folder"), (("view",), "no ./results"),
                       (("runs",), "no ./results")):
        out = mmad(*args)
        assert out.returncode == 2 and said in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    (tmp_path / "results").mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = mmad("view", "--no-open", "--port", str(port))
    assert out.returncode == 2 and f"--port {port}: cannot listen" in out.stderr and "Traceback" not in out.stderr


def test_an_unreadable_run_is_named_not_hidden(view_demo, tmp_path):
    import shutil
    import subprocess
    import sys

    from starlette.testclient import TestClient

    from mmad.view.server import create_app
    results = tmp_path / "results"
    shutil.copytree(view_demo.folders["gpt-4o"], results / "fine")
    shutil.copytree(view_demo.folders["gpt-4o+industrial-paper"], results / "damaged")
    csv = results / "damaged" / "gpt-4o+industrial-paper_synth_brick.csv"
    csv.write_text(csv.read_text().replace("\n", "\nbad/row.png,1,high\n", 1))
    out = subprocess.run([sys.executable, "-m", "mmad.cli", "runs"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "gpt-4o" in out.stdout
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "non-numeric score at line(s) 2" in errors[0] and "Traceback" not in out.stderr
    data = open_view([results], data_root=view_demo.out / "data", prompts_dir=config.prompts_dir(), qa_root=tmp_path,
                     scratch=tmp_path / "scratch")
    client = TestClient(create_app(data), base_url="http://127.0.0.1")
    damaged = next(run.rid for run in data.catalog.runs if run.folder.name == "damaged")
    answer = client.get(f"/api/summary/{damaged}.json")
    assert answer.status_code == 422 and "non-numeric score" in answer.text
