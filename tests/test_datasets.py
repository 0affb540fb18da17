import numpy as np
import pytest

from mmad.data import datasets, templates
from mmad.errors import DataError
from tests.conftest import make_industry_subset, write_csv, write_image


def test_all_31_published_templates_read(shared_templates):
    files = sorted(shared_templates.glob("*_template.csv"))
    assert len(files) == 31
    total = sum(len(templates.read_template(f)) for f in files)
    assert total == 21603


def test_registry_matches_published_templates(shared_templates):
    names = {f.name for f in shared_templates.glob("*_template.csv")}
    expected = {datasets.template_name(spec.name, s) for spec in datasets.REGISTRY.values() for s in spec.subsets}
    assert names == expected
    for spec in datasets.REGISTRY.values():
        rows = sum(len(templates.read_template(shared_templates / datasets.template_name(spec.name, s)))
                   for s in spec.subsets)
        assert rows == spec.rows, spec.name
        levels = np.concatenate([templates.read_template(shared_templates / datasets.template_name(spec.name, s)).levels
                                 for s in spec.subsets])
        assert levels.max() + 1 == spec.levels


def test_visa_quoted_commas(shared_templates):
    quoted = sum(1 for f in shared_templates.glob("visa_*.csv")
                 for p in templates.read_template(f).paths if "," in p)
    assert quoted == 173
    pcb1 = templates.read_template(shared_templates / "visa_pcb1_template.csv")
    assert "melt,scratch_level_2/080.JPG" in pcb1.paths


def test_covid_fractional_severity_keeps_raw_and_rounds_up(shared_templates):
    covid = templates.read_template(shared_templates / "covid19_template.csv")
    assert 0.5 in covid.severity.tolist()
    half = covid.severity == 0.5
    assert set(covid.levels[half].tolist()) == {1}
    assert covid.levels.max() == 6


def test_dataset_card_column_convention(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["image_path_raw", "severity", "anomaly_score"],
                     [["a.png", "0", ""], ["b.png", "2.5", ""]])
    template = templates.read_template(path)
    assert template.paths == ("a.png", "b.png")
    assert template.levels.tolist() == [0, 3]


@pytest.mark.parametrize("rows,message", [
    ([["a.png", "zero"]], r"line\(s\) 2"),
    ([["a.png", "0"], ["b.png", "1"], ["a.png", "2"]], r"duplicate paths at line\(s\) 2, 4"),
    ([], "no rows"),
    ([["a.png", "-1"]], "negative"),
])
def test_template_errors_name_file_and_rows(tmp_path, rows, message):
    path = write_csv(tmp_path / "bad_template.csv", ["Path", "Severity"], rows)
    with pytest.raises(DataError, match=message) as info:
        templates.read_template(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_severity_column(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["Path", "Level"], [["a.png", "0"]])
    with pytest.raises(DataError, match="no severity column"):
        templates.read_template(path)


def test_empty_file(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("")
    with pytest.raises(DataError, match="empty"):
        templates.read_template(path)


def test_missing_images_are_reported_before_any_work(tiny_root):
    subset = datasets.resolve(tiny_root, "toy", "widget")[0]
    (subset.test_root / "defect_level_2" / "001.png").unlink()
    (subset.test_root / "defect_level_3" / "000.png").unlink()
    (subset.test_root / "defect_level_1" / "000.png").write_bytes(b"not an image")  # a job error later, not here
    with pytest.raises(DataError, match=r"2 missing image\(s\) at line\(s\) 9, 11"):
        datasets.load_subset(subset)


def test_discovery_of_unknown_dataset(tiny_root):
    found = {(s.dataset, s.subset) for s in datasets.discover(tiny_root)}
    assert found == {("toy", "widget"), ("toy", "gear_box")}
    gear = datasets.resolve(tiny_root, "toy", "gear_box")[0]
    assert gear.prompt_family == "industrial" and gear.subject == "gear box"
    assert len(datasets.load_subset(gear)) == 12


def test_discovered_novelty_and_medical_layouts(tmp_path):
    write_image(tmp_path / "OneClassNovelty" / "cats" / "level_0_train" / "tabby_cat" / "a.png")
    write_csv(tmp_path / "template" / "cats_tabby_cat_template.csv", ["Path", "Severity"], [["x.png", "0"]])
    (tmp_path / "Medical" / "knee-xray").mkdir(parents=True)
    write_csv(tmp_path / "template" / "knee-xray_template.csv", ["Path", "Severity"], [["x.png", "0"]])
    found = {s.label: s for s in datasets.discover(tmp_path)}
    assert found["cats/tabby_cat"].prompt_family == "novelty"
    assert found["cats/tabby_cat"].reference_dir == tmp_path / "OneClassNovelty/cats/level_0_train/tabby_cat"
    knee = found["knee-xray"]
    assert knee.prompt_family is None  # cannot be inferred: the user must say
    explicit = datasets.resolve(tmp_path, "knee-xray", prompt_family="drd", subject="knee")[0]
    assert explicit.prompt_family == "drd" and explicit.subject == "knee"


def test_published_layout_paths(tmp_path):
    bottle = datasets.resolve(tmp_path, "mvtec", "bottle")[0]
    assert bottle.test_root == tmp_path / "Industry/mvtec/bottle/test"
    assert bottle.reference_dir == tmp_path / "Industry/mvtec/bottle/train/good"
    assert bottle.template_path == tmp_path / "template/mvtec_bottle_template.csv"
    covid = datasets.resolve(tmp_path, "covid19")[0]
    assert covid.test_root == tmp_path / "Medical/covid19"
    assert covid.reference_dir == tmp_path / "Medical/covid19/level_0_train"
    assert covid.template_path == tmp_path / "template/covid19_template.csv"
    teddy = datasets.resolve(tmp_path, "multidog", "teddy")[0]
    assert teddy.reference_dir == tmp_path / "OneClassNovelty/multidog/level_0_train/teddy"
    assert teddy.test_root == tmp_path / "OneClassNovelty/multidog"
    assert len(datasets.resolve(tmp_path, "mvtec")) == 14


def test_subjects_follow_the_reference_scripts(tmp_path):
    subject = {s.subset: s.subject for s in datasets.resolve(tmp_path, "visa")}
    assert subject["pcb3"] == "printed circuit board (PCB)"
    assert subject["macaroni2"] == "macaroni" and subject["pipe_fryum"] == "pipe fryum"
    assert datasets.resolve(tmp_path, "multidog", "golden_retriever")[0].subject == "golden_retriever"


def test_unknown_names(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'mvtc'"):
        datasets.resolve(tmp_path, "mvtc")
    with pytest.raises(DataError, match="unknown subset 'bottel' of mvtec"):
        datasets.resolve(tmp_path, "mvtec", "bottel")


def test_references_are_first_sorted_images(tiny_root):
    subset = datasets.resolve(tiny_root, "toy", "widget")[0]
    (subset.reference_dir / ".DS_Store").write_text("junk")
    write_image(subset.reference_dir / "0.png")
    refs = datasets.reference_images(subset, 3)
    assert [r.name for r in refs] == ["0.png", "000.png", "001.png"]
    assert datasets.reference_images(subset, 0) == []
    with pytest.raises(DataError, match="7 references are needed"):
        datasets.reference_images(subset, 7)


def test_template_rows_wider_than_the_header_name_their_file_lines(tmp_path):
    path = tmp_path / "t_template.csv"
    path.write_text("Path,Severity\n\na.png,0\nb.png,1,extra\n\nc.png,2\nd.png,x\n")
    with pytest.raises(DataError, match=r"more fields than the header's 2 at line\(s\) 4 "):
        templates.read_template(path)
    path.write_text("Path,Severity\n\na.png,0\n\nb.png,x\nc.png,1\n")  # line numbers count blank lines
    with pytest.raises(DataError, match=r"line 5: severity 'x' is non-numeric; .* at line\(s\) 5$"):
        templates.read_template(path)
    for cell, words in (("-1", "severity '-1' is negative"), ("2000", "severity '2000' is above 1000"),
                        ("inf", "severity 'inf' is infinite or not a number"), ("", "no severity")):
        path.write_text(f"Path,Severity\na.png,0\nb.png,{cell}\n")
        with pytest.raises(DataError, match=f"line 3: {words}; "):
            templates.read_template(path)
    path.write_text("Path,Severity\na.png,0\n,1\n")
    with pytest.raises(DataError, match="line 3: no image path; "):
        templates.read_template(path)


def test_reference_folders_skip_dot_files_as_the_scripts_glob_does(tiny_root):
    """An AppleDouble `._000.png` (not an image) and a hidden real image are skipped, as the
    scripts' `glob('*')` skips them: neither stops the run nor becomes Normal Image 1."""
    subset = datasets.resolve(tiny_root, "toy", "widget")[0]
    (subset.reference_dir / "._000.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    write_image(subset.reference_dir / ".0.png")
    refs = datasets.reference_images(subset, 3)
    assert [r.name for r in refs] == ["000.png", "001.png", "002.png"]
    assert all(not p.name.startswith(".") for p in datasets.list_images(subset.reference_dir))


def test_data_list_shows_every_dataset_when_one_template_is_bad(tmp_path, capsys):
    from mmad import cli
    make_industry_subset(tmp_path, "good", "a")
    make_industry_subset(tmp_path, "broken", "a")
    (tmp_path / "template" / "broken_a_template.csv").write_text("Path,Severity\ngood_level_0/000.png,abc\n")
    assert cli.main(["data", "list", "--root", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert "good" in out and "broken" in out and "a template cannot be read" in out
    assert "broken_a_template.csv: line 2: severity 'abc' is non-numeric" in err
