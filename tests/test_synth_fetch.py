import io
import sys

import numpy as np
import pytest
from PIL import Image

from mmad import cli
from mmad.data import datasets
from mmad.data.fetch import write_records
from mmad.data.synth import synthesize
from mmad.errors import DataError


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
    from mmad.data.synth import _add_defect
    rng = np.random.default_rng(0)
    base = np.full((128, 128), 100.0)
    changed = {level: np.mean([(_add_defect(base, level, rng) != base).mean() for _ in range(20)])
               for level in (1, 2, 3)}
    assert 0 < changed[1] < changed[2] < changed[3]


def test_synth_defect_types_as_madbench_folders(tmp_path):
    """Image i of a level gets type i mod 3; the folder is `<type>_level_<k>` and each type changes
    what its name says: a blotch is a filled area, a scratch a thin line, both together both."""
    from mmad.data.synth import DEFECT_TYPES, _defect_with_mask
    synthesize(tmp_path, train=1, per_level=4, size=64, textures=("brick",))
    template = datasets.load_subset(datasets.resolve(tmp_path, "synth", "brick")[0])
    folders = [p.split("/")[0] for p in template.paths]
    assert folders[:4] == ["good_level_0"] * 4
    assert folders[4:8] == ["blotch_level_1", "scratch_level_1", "blotch,scratch_level_1", "blotch_level_1"]
    assert set(folders) == {"good_level_0"} | {f"{t}_level_{k}" for t in DEFECT_TYPES for k in (1, 2, 3)}
    image = np.full((96, 96), 100.0)
    areas = {}
    for kind in DEFECT_TYPES:
        out, mask = _defect_with_mask(image, 3, np.random.default_rng(5), kind)
        assert (out != image).sum() == mask.sum() > 0  # the mask is exactly what changed
        areas[kind] = mask.sum()
    # same random draws: the combined defect is the blotch plus the scratch's pixels
    assert areas["scratch"] < areas["blotch"] < areas["blotch,scratch"]
    thin = _defect_with_mask(image, 3, np.random.default_rng(5), "scratch")[1]
    assert thin.sum(axis=0).max() <= 3 * 3  # a line at most `level` rows thick per column (+ steep runs)


def test_synth_is_deterministic(tmp_path):
    synthesize(tmp_path / "a", train=1, per_level=1, size=32, textures=("grass",))
    synthesize(tmp_path / "b", train=1, per_level=1, size=32, textures=("grass",))
    rel = "Industry/synth/grass/test/blotch_level_3/000.png"
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


def test_fetch_from_a_local_dataset_of_the_published_form(tmp_path, capsys):
    """A tiny Hugging Face dataset with the hub's columns (image, relative_path), saved to disk."""
    hf = pytest.importorskip("datasets", reason="needs the datasets library: pip install 'mmad[fetch]'")
    from tests.conftest import write_image
    sources = []
    for i, rel in enumerate(["Industry/mvtec/bottle/train/good/000.png", "Industry/mvtec/bottle/test/good_level_0/a.png",
                             "Medical/covid19/level_0_train/x.png"]):
        path = tmp_path / "src" / f"{i}.png"
        write_image(path, seed=i)
        sources.append((path, rel))
    table = hf.Dataset.from_dict({"image": [str(p) for p, _ in sources], "relative_path": [r for _, r in sources]})
    table.cast_column("image", hf.Image()).save_to_disk(str(tmp_path / "saved"))
    root = tmp_path / "data"
    assert cli.main(["data", "fetch", "--source", str(tmp_path / "saved"), "--root", str(root)]) == 0
    for path, rel in sources:
        assert (root / rel).read_bytes() == path.read_bytes()  # written verbatim, not re-encoded
    assert "3 images written" in capsys.readouterr().out
    assert cli.main(["data", "fetch", "--source", str(tmp_path / "saved"), "--root", str(root)]) == 0
    assert "0 images written, 3 already present" in capsys.readouterr().out


@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}])
def test_fetch_offline_is_one_clear_line(tmp_path, env):
    """Offline mode, or a hub that cannot be reached: one line, non-zero, no traceback."""
    import os
    import subprocess
    pytest.importorskip("datasets", reason="needs the datasets library: pip install 'mmad[fetch]'")
    environ = dict(os.environ, HF_HOME=str(tmp_path / "hf"), **env)
    run = subprocess.run([sys.executable, "-m", "mmad.cli", "data", "fetch", "--root", str(tmp_path / "data")],
                         env=environ, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "hub" in run.stderr and run.stderr.strip().count("\n") == 0
