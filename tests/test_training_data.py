"""scripts/training_data.py: the synthetic images are reproducible from their seed and
look like what they are meant to be (flat facets split by edges, no constant image)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

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
                               "--supersample", "2", "--no-skimage"]) == 0
    files = sorted((tmp_path / "synthetic").glob("*.png"))
    assert [f.name for f in files] == ["synthetic_0000.png", "synthetic_0001.png"]
