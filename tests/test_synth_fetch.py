import io
import sys

import numpy as np
import pytest
from PIL import Image

from mmad import cli, datasets
from mmad.errors import DataError
from mmad.fetch import write_records
from mmad.synth import synthesize


def test_synth_writes_a_valid_layout(tmp_path):
    templates = synthesize(tmp_path, train=4, per_level=2, size=64)
    assert len(templates) == 3
    subsets = datasets.resolve(tmp_path, "synth")
    assert {s.subset for s in subsets} == {"brick", "grass", "gravel"}
    for subset in subsets:
        template = datasets.load_subset(subset)
        assert template.levels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
        assert len(datasets.reference_images(subset)) == 3
        assert subset.prompt_family == "industrial"


def test_synth_defects_grow_with_level():
    from mmad.synth import _add_defect
    rng = np.random.default_rng(0)
    base = np.full((128, 128), 100.0)
    changed = {level: np.mean([(_add_defect(base, level, rng) != base).mean() for _ in range(20)])
               for level in (1, 2, 3)}
    assert 0 < changed[1] < changed[2] < changed[3]


def test_synth_is_deterministic(tmp_path):
    synthesize(tmp_path / "a", train=1, per_level=1, size=32, textures=("grass",))
    synthesize(tmp_path / "b", train=1, per_level=1, size=32, textures=("grass",))
    rel = "Industry/synth/grass/test/defect_level_3/000.png"
    assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def png_bytes(seed):
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), seed, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_fetch_conversion_of_records_in_the_published_form(tmp_path):
    """Records as the hub dataset yields them: undecoded {'bytes'} images or decoded PIL images."""
    records = [
        {"image": {"bytes": png_bytes(1), "path": None}, "relative_path": "Industry/mvtec/bottle/train/good/000.png"},
        {"image": Image.new("RGB", (4, 4)), "relative_path": "Medical/covid19/level_0_train/a.png"},
        {"image": {"bytes": png_bytes(2)}, "relative_path": "template/../Industry/x.png"},
    ]
    with pytest.raises(DataError, match="not a path inside the data root"):
        write_records(records[2:], tmp_path)
    assert not (tmp_path / "Industry" / "x.png").exists()
    assert write_records(records[:2], tmp_path) == (2, 0)
    assert (tmp_path / "Industry/mvtec/bottle/train/good/000.png").read_bytes() == png_bytes(1)
    assert Image.open(tmp_path / "Medical/covid19/level_0_train/a.png").size == (4, 4)
    assert write_records(records[:2], tmp_path) == (0, 2)  # resumable: present files are skipped


def test_fetch_without_datasets_library_is_a_clear_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "datasets", None)
    code = cli.main(["data", "fetch", "--root", str(tmp_path)])
    err = capsys.readouterr().err
    assert code != 0 and "pip install 'mmad[fetch]'" in err and "Traceback" not in err


def test_data_cli_synth_list_check(tmp_path, capsys):
    root = str(tmp_path)
    assert cli.main(["data", "synth", "--root", root, "--train", "3", "--per-level", "1", "--size", "32"]) == 0
    assert cli.main(["data", "list", "--root", root]) == 0
    out = capsys.readouterr().out
    assert "synth" in out and "3/3" in out
    assert cli.main(["data", "check", "--root", root, "--dataset", "synth"]) == 0
    code = cli.main(["data", "check", "--root", root, "--dataset", "mvtec", "--subset", "bottle"])
    err = capsys.readouterr().err
    assert code == 2 and "mvtec_bottle_template.csv not found" in err
