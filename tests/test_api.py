"""The Python API a user starts from: what ``model(lr)`` accepts and refuses."""
from __future__ import annotations

import pytest
import torch

import pcsr
from pcsr.model import PCSR, SRModel


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return (PCSR("fsrcnn", {"d": 8, "s": 4, "m": 1}, [[12, 12], [6]], [5]).eval(),
            SRModel("fsrcnn", {"d": 8, "s": 4, "m": 1, "scale": 2}).eval())


def _run(model, lr):
    return model(lr, scale=2)[0] if isinstance(model, PCSR) else model(lr)


@pytest.mark.parametrize("which", [0, 1])
def test_half_precision_input_is_run_in_float32(models, which):
    model = models[which]
    lr = torch.rand(1, 3, 7, 9)
    for dtype in (torch.float16, torch.bfloat16):
        x = lr.to(dtype)
        out = _run(model, x)
        assert out.dtype == torch.float32
        assert torch.equal(out, _run(model, x.float()))


@pytest.mark.parametrize("which", [0, 1])
@pytest.mark.parametrize("bad,msg", [
    (lambda: (torch.rand(1, 3, 7, 9) * 255).to(torch.uint8), r"dtype torch.uint8 \(0-255 pixels: pass lr.float\(\) / 255\)"),
    (lambda: torch.randint(0, 2, (1, 3, 7, 9)), "dtype torch.int64"),
    (lambda: torch.rand(1, 3, 7, 9) * 255, r"values in \[.*, .*\] \(0-255 pixels\? divide by 255\)"),
    (lambda: torch.full((1, 3, 7, 9), float("nan")), "got NaN"),
    (lambda: torch.rand(3, 7, 9), r"\[B, 3, h, w\].*got \(3, 7, 9\)"),
    (lambda: torch.rand(1, 4, 7, 9), r"got \(1, 4, 7, 9\)"),
])
def test_what_is_not_an_image_in_0_1_is_refused(models, which, bad, msg):
    with pytest.raises(ValueError, match=msg):
        _run(models[which], bad())


def test_slight_overshoot_of_a_bicubic_downscale_is_accepted(models):
    lr = torch.rand(1, 3, 7, 9) * 1.2 - 0.1  # what imresize of a [0, 1] image can give
    sr, classes = models[0](lr, scale=2)
    assert sr.shape == (1, 3, 14, 18) and classes.shape == (1, 14, 18)


def test_read_model_write_round_trip(tmp_path):
    model = pcsr.load("fsrcnn")
    lr = pcsr.read_image(pcsr.__path__[0] + "/assets/sample.png")[..., :24, :20]
    sr, classes = model(lr, scale=2)
    pcsr.write_image(tmp_path / "o.png", sr)
    back = pcsr.read_image(tmp_path / "o.png")
    assert back.shape == (1, 3, 48, 40)
    assert (back - sr.clamp(0, 1)).abs().max() <= 0.5 / 255 + 1e-6  # 8-bit rounding only
