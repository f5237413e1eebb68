"""scripts/training_data.py: the synthetic images are reproducible from their seed and
look like what they are meant to be (flat facets split by edges, no constant image)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import training_data  # noqa: E402


def test_render_is_repeatable_and_seed_dependent():
    a = np.asarray(training_data.render(3, 96, supersample=2))
    b = np.asarray(training_data.render(3, 96, supersample=2))
    c = np.asarray(training_data.render(4, 96, supersample=2))
    assert a.shape == (96, 96, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_render_is_mostly_flat_with_edges():
    img = np.asarray(training_data.render(7, 128, supersample=2)).astype(np.int16)
    d = np.abs(np.diff(img, axis=1)).max(-1)
    assert (d <= 2).mean() > 0.5  # flat facets cover most of the image...
    assert (d >= 4).mean() > 0.005  # ...and edges split them
    assert img.std() > 3


def test_cli_writes_the_images(tmp_path):
    assert training_data.main(["--out", str(tmp_path), "--synthetic", "2", "--size", "64",
                               "--supersample", "2", "--no-skimage", "--no-debian"]) == 0
    files = sorted((tmp_path / "synthetic").glob("*.png"))
    assert [f.name for f in files] == ["synthetic_0000.png", "synthetic_0001.png"]


ALLOWED = {"CC0-1.0", "CC-BY-4.0", "CC-BY-SA-3.0", "CC-BY-SA-4.0", "GPL-2+"}


def test_debian_table_records_a_redistributable_licence_and_holds_out_evaluation_images():
    names = [im.name for im in training_data.DEBIAN_IMAGES]
    assert len(names) == len(set(names))
    for im in training_data.DEBIAN_IMAGES:
        assert im.licence in ALLOWED, im
        assert im.copyright and im.package in training_data.DEBIAN_PACKAGES
        assert not any(f"/{e}/" in im.path for e in training_data.EVALUATION_ONLY), im
    held = [im for im in training_data.DEBIAN_IMAGES if im.held_out]
    assert held and all(im.kind == "photo" for im in held)


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_export_debian_extracts_reduces_and_records_licences(tmp_path):
    # A stand-in package built here (no network): one photo at a listed path.
    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text("Package: fake-wallpapers\nVersion: 1.0\nArchitecture: all\n"
                                             "Maintainer: nobody <nobody@example.org>\nDescription: test\n")
    img = root / "usr/share/backgrounds/a.jpg"
    img.parent.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)).save(img)
    debs = tmp_path / "debs"
    debs.mkdir()
    subprocess.run(["dpkg-deb", "-b", str(root), str(debs / "fake-wallpapers_1.0_all.deb")], check=True,
                   capture_output=True)
    table = (training_data.DebianImage("fake-wallpapers", "usr/share/backgrounds/a.jpg", "a", "CC0-1.0", "2024 X",
                                       "photo"),
             training_data.DebianImage("fake-wallpapers", "usr/share/backgrounds/a.jpg", "b", "CC0-1.0", "2024 X",
                                       "photo", held_out=True))
    out = tmp_path / "out"
    written = training_data.export_debian(out, debs, 64, table)
    assert [p.relative_to(out).as_posix() for p in written] == ["photos/a.png", "val_photos/b.png"]
    assert Image.open(out / "photos/a.png").size == (64, 36)  # longer side reduced to 64
    rows = (out / "LICENSES.tsv").read_text().splitlines()
    assert rows[1].split("\t") == ["photos/a.png", "fake-wallpapers_1.0_all.deb", "usr/share/backgrounds/a.jpg",
                                   "CC0-1.0", "2024 X"]
