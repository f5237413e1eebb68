"""The pcsr command line, end to end on small images."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import official_file
from pcsr import checkpoint
from pcsr.cli import main
from pcsr.model import PCSR, SRModel


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    m = PCSR("fsrcnn", {"d": 8, "s": 4, "m": 1}, [[12, 12], [6]], [5])
    path = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    checkpoint.save(m, path)
    return str(path)


@pytest.fixture(scope="module")
def original_path(tmp_path_factory):
    torch.manual_seed(1)
    m = SRModel("fsrcnn", {"d": 8, "s": 4, "m": 1, "scale": 4})
    path = tmp_path_factory.mktemp("models") / "orig.safetensors"
    checkpoint.save(m, path)
    return str(path)


def _img(path, mode="RGB", size=(23, 17)):
    rng = np.random.default_rng(0)
    chans = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = (rng.random((size[1], size[0], chans)) * 255).astype(np.uint8)
    Image.fromarray(arr[..., 0] if chans == 1 else arr, mode).save(path)
    return str(path)


def test_upscale_one_image(tmp_path, model_path, capsys):
    src = _img(tmp_path / "a.png")
    out = tmp_path / "a_x4.png"
    cls = tmp_path / "a_classes.png"
    assert main(["upscale", src, "-o", str(out), "--model", model_path, "--save-classes", str(cls)]) == 0
    with Image.open(out) as im:
        assert im.size == (92, 68) and im.mode == "RGB"
    with Image.open(cls) as im:
        assert im.size == (92, 68)
    assert "heavy pixels" in capsys.readouterr().out


def test_upscale_several_keeps_alpha_and_grey(tmp_path, model_path):
    srcs = [_img(tmp_path / "rgb.jpg"), _img(tmp_path / "alpha.png", "RGBA"), _img(tmp_path / "grey.png", "L"),
            _img(tmp_path / "web.webp")]
    out = tmp_path / "out"
    out.mkdir()
    assert main(["upscale", *srcs, "-o", str(out), "--model", model_path, "--scale", "3", "--adaptive", "--no-refine"]) == 0
    modes = {p.name: Image.open(p).mode for p in out.iterdir()}
    assert modes == {"rgb.png": "RGB", "alpha.png": "RGBA", "grey.png": "L", "web.png": "RGB"}
    assert Image.open(out / "rgb.png").size == (69, 51)


def test_tiled_upscale_matches_whole_image_size(tmp_path, model_path):
    src = _img(tmp_path / "big.png", size=(70, 45))
    a, b = tmp_path / "whole.png", tmp_path / "tiled.png"
    assert main(["upscale", src, "-o", str(a), "--model", model_path, "--scale", "2"]) == 0
    assert main(["upscale", src, "-o", str(b), "--model", model_path, "--scale", "2", "--tile"]) == 0
    x, y = np.asarray(Image.open(a), dtype=float), np.asarray(Image.open(b), dtype=float)
    assert x.shape == y.shape == (90, 140, 3)
    # tiles see less context near their borders, so allow small differences, not garbage
    assert np.abs(x - y).mean() < 8


def test_eval_writes_table_and_json(tmp_path, model_path, original_path, capsys):
    hr = _img(tmp_path / "hr.png", size=(41, 33))
    js = tmp_path / "r.json"
    assert main(["eval", hr, "--model", model_path, "--original", original_path, "--json", str(js), "--k", "0.5"]) == 0
    rec = json.loads(js.read_text())["records"][0]
    for key in ("image", "psnr", "gflops", "heavy_fraction", "seconds", "bicubic_psnr",
                "original_psnr", "original_gflops", "original_seconds"):
        assert key in rec
    assert rec["height"] == 32 and rec["width"] == 40  # centre-cropped to a multiple of 4
    assert 0 <= rec["heavy_fraction"] <= 1 and rec["gflops"] > 0
    assert "bicubic_psnr" in capsys.readouterr().out


def test_eval_reproduces_authors_fsrcnn_demo(tmp_path):
    js = tmp_path / "r.json"
    assert main(["eval", str(official_file("demo_HR.png")), "--model", str(official_file("fsrcnn-pcsr-phase1.pth")),
                 "--json", str(js)]) == 0
    rec = json.loads(js.read_text())["records"][0]
    assert rec["psnr"] == pytest.approx(28.47, abs=0.01) and rec["gflops"] == pytest.approx(17.67, rel=0.005)


@pytest.mark.parametrize("case", ["not_image", "missing_folder", "corrupt_model", "several_to_file", "missing_input",
                                  "original_as_model", "tile_fractional"])
def test_bad_input_fails_cleanly(tmp_path, model_path, original_path, case, capsys):
    src = _img(tmp_path / "a.png")
    out = tmp_path / "o.png"
    args = ["upscale", src, "-o", str(out), "--model", model_path]
    if case == "not_image":
        (tmp_path / "text.png").write_text("not an image")
        args[1] = str(tmp_path / "text.png")
        expect = "not a readable image"
    elif case == "missing_folder":
        args[3] = str(tmp_path / "nowhere" / "o.png")
        expect = "does not exist"
    elif case == "corrupt_model":
        bad = tmp_path / "bad.safetensors"
        bad.write_bytes(open(model_path, "rb").read()[:100])
        args[-1] = str(bad)
        expect = "corrupt or truncated"
    elif case == "several_to_file":
        args = ["upscale", src, _img(tmp_path / "b.png"), "-o", str(out), "--model", model_path]
        expect = "the output must be a folder"
    elif case == "missing_input":
        args[1] = str(tmp_path / "nope.png")
        expect = "no such file"
    elif case == "original_as_model":
        args[-1] = original_path
        expect = "not a PCSR model"
    else:
        args += ["--tile", "--scale", "2.5"]
        expect = "integer --scale"
    assert main(args) == 2
    assert expect in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))


def test_k_and_adaptive_are_exclusive(tmp_path, model_path):
    with pytest.raises(SystemExit) as e:
        main(["upscale", _img(tmp_path / "a.png"), "-o", str(tmp_path / "o.png"), "--k", "1", "--adaptive"])
    assert e.value.code == 2


def test_console_script_is_installed(tmp_path, model_path):
    src = _img(tmp_path / "a.png")
    r = subprocess.run([sys.executable, "-m", "pcsr", "upscale", src, "-o", str(tmp_path / "b.png"), "--model", model_path],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "b.png").exists()
