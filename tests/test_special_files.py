"""FIFOs, devices and dangling links where mmad needs a file: refused in one line, never a hang
(opening a FIFO for reading waits forever for a writer). Every test runs under a short timeout."""

import os
import subprocess
import sys

import pytest

from mmad.data import datasets, templates
from mmad.data.images import encode_file, sha256_file
from mmad.errors import DataError
from mmad.reading import NotRegularFile, read_text
from tests.conftest import cli_env, make_industry_subset

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "pipe.png"
    os.mkfifo(path)
    return path


def test_reading_a_fifo_is_refused_at_once_naming_it(fifo):
    for read in (sha256_file, encode_file, read_text):
        with pytest.raises(NotRegularFile, match="a FIFO \\(named pipe\\) where mmad needs a regular file") as caught:
            read(fifo)
        assert str(fifo) in str(caught.value)
    with pytest.raises(DataError, match="a FIFO"):
        templates.read_template(fifo)


def test_a_device_is_no_file_either():
    with pytest.raises(NotRegularFile, match="a character device"):
        sha256_file("/dev/zero")  # would otherwise hash forever


def test_a_fifo_or_dangling_link_among_the_references_is_named_not_skipped(tmp_path):
    make_industry_subset(tmp_path, "toy", "s", train=4)
    good = tmp_path / "Industry" / "toy" / "s" / "train" / "good"
    first = sorted(good.iterdir())[0]
    first.unlink()
    os.mkfifo(first)
    with pytest.raises(DataError, match=f"{first.name} is a FIFO \\(named pipe\\) where an image file belongs"):
        datasets.list_images(good)
    first.unlink()
    first.symlink_to(tmp_path / "gone.png")
    with pytest.raises(DataError, match="is a dangling symlink"):
        datasets.list_images(good)


def test_a_template_that_is_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "t_template.csv"
    path.write_bytes(b"Path,Severity\na.png,0\nb\xff.png,1\n")
    with pytest.raises(DataError, match="line 3 is not UTF-8 text \\(byte 0xff\\)"):
        templates.read_template(path)


@pytest.mark.parametrize("option", ["--prices", "--experiment"])
def test_cli_options_naming_a_fifo_exit_2(tmp_path, fifo, option):
    make_industry_subset(tmp_path / "data", "toy", "widget")
    command = [sys.executable, "-m", "mmad.cli", "estimate" if option == "--prices" else "score", "--provider",
               "openai", "--dataset", "toy", option, str(fifo)]
    if option == "--experiment":
        command += ["--dry-run"]
    run = subprocess.run(command, env=cli_env(tmp_path), capture_output=True, text=True, timeout=50)
    assert run.returncode == 2, run.stderr
    assert "a FIFO (named pipe) where mmad needs a regular file" in run.stderr and "Traceback" not in run.stderr


def test_a_test_image_that_becomes_a_fifo_is_one_line_exit_2(tmp_path):
    root = tmp_path / "data"
    make_industry_subset(root, "toy", "widget")
    image = sorted((root / "Industry" / "toy" / "widget" / "test").rglob("*.png"))[0]
    image.unlink()
    os.mkfifo(image)
    run = subprocess.run([sys.executable, "-m", "mmad.cli", "estimate", "--provider", "openai", "--dataset", "toy"],
                         env=cli_env(tmp_path), capture_output=True, text=True, timeout=50)
    assert run.returncode == 2, run.stderr
    assert f"{image}: a FIFO (named pipe) where mmad needs a regular file" in run.stderr
