"""PSNR the authors' way: 8-bit quantisation, border shave, RGB or Y."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pcsr.metrics import psnr, quantize, rgb_to_y, to_levels


def _levels_image(levels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(levels.astype(np.float64) / 255)


def test_known_mse_rgb():
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 250, size=(3, 12, 10))
    sr = hr + 2  # every value 2 levels off: MSE = 4
    got = psnr(_levels_image(sr), _levels_image(hr), shave=0)
    assert got == pytest.approx(10 * math.log10(255**2 / 4), abs=1e-12)


def test_values_are_quantised_and_clamped_first():
    hr = torch.rand(3, 9, 9, dtype=torch.float64)
    levels = to_levels(hr)
    # Within the same 8-bit level, and out-of-range values that clamp to the same level.
    same = (levels + 0.3) / 255
    assert psnr(same, hr, shave=0) == math.inf
    white = torch.ones(3, 9, 9)
    assert psnr(white * 1.7, white, shave=0) == math.inf
    assert psnr(-0.2 * white, 0 * white, shave=0) == math.inf


def test_round_half_to_even_like_torch_round():
    x = torch.tensor([0.5, 1.5, 2.5, 254.5], dtype=torch.float64) / 255
    assert to_levels(x).tolist() == [0.0, 2.0, 2.0, 254.0]
    assert torch.equal(quantize(x) * 255, to_levels(x))


@pytest.mark.parametrize("shave", [1, 4])
def test_shave_drops_the_border(shave):
    hr = torch.rand(3, 20, 17, dtype=torch.float64)
    sr = quantize(hr)
    # One 10-level error on the ring just inside the border: invisible with `shave`,
    # the only error with `shave - 1`.
    lv = to_levels(hr)
    lv[1, shave - 1, 5] += 10 if lv[1, shave - 1, 5] < 128 else -10
    sr = lv / 255
    assert psnr(sr, hr, shave=shave) == math.inf
    n = 3 * (20 - 2 * (shave - 1)) * (17 - 2 * (shave - 1))
    assert psnr(sr, hr, shave=shave - 1) == pytest.approx(10 * math.log10(255**2 / (100 / n)), abs=1e-12)


def test_y_channel_known_values():
    hr = torch.zeros(3, 6, 6, dtype=torch.float64)  # black: Y = 16
    sr = torch.ones(3, 6, 6, dtype=torch.float64)  # white: Y = 16 + 219 = 235
    assert psnr(sr, hr, shave=1, y_channel=True) == pytest.approx(10 * math.log10(255**2 / 219**2), abs=1e-12)
    red = torch.tensor([255.0, 0, 0]).view(3, 1, 1)
    assert rgb_to_y(red).item() == 81  # round(65.481 + 16) = round(81.481)


def _official_restatement(sr, hr, shave, y_channel):
    """The authors' psnr_measure for one [3, H, W] image, restated in numpy."""
    a = np.clip(sr.numpy() * 255, 0, 255).round().transpose(1, 2, 0)
    b = np.clip(hr.numpy() * 255, 0, 255).round().transpose(1, 2, 0)
    if y_channel:
        a = (a.astype(np.uint8) @ np.array([65.481, 128.553, 24.966]) / 255 + 16).round()
        b = (b.astype(np.uint8) @ np.array([65.481, 128.553, 24.966]) / 255 + 16).round()
    d = (b - a)[shave:-shave, shave:-shave] if shave > 0 else b - a
    return 10 * np.log10(255.0**2 / np.mean(d.astype(np.float64) ** 2))


@pytest.mark.parametrize("y_channel", [False, True])
@pytest.mark.parametrize("shave", [0, 2, 4])
def test_matches_official_restatement(y_channel, shave):
    torch.manual_seed(shave)
    hr = torch.rand(3, 31, 26, dtype=torch.float64)
    sr = hr + 0.03 * torch.randn_like(hr)  # overshoots [0, 1]: the clamp matters
    want = _official_restatement(sr, hr, shave, y_channel)
    assert psnr(sr, hr, shave=shave, y_channel=y_channel) == pytest.approx(want, abs=1e-9)


def test_matches_skimage_on_levels():
    skm = pytest.importorskip("skimage.metrics")
    hr = torch.rand(3, 24, 24)
    sr = (hr + 0.05 * torch.randn_like(hr)).clamp(0, 1)
    want = skm.peak_signal_noise_ratio(
        to_levels(hr).numpy().astype(np.uint8), to_levels(sr).numpy().astype(np.uint8), data_range=255
    )
    assert psnr(sr, hr, shave=0) == pytest.approx(want, abs=1e-9)


def test_batch_is_mean_of_per_image_psnr():
    hr = torch.rand(3, 3, 16, 16)
    sr = hr + 0.02 * torch.randn_like(hr) * torch.tensor([1.0, 2.0, 4.0]).view(3, 1, 1, 1)
    each = [psnr(sr[i], hr[i], shave=4) for i in range(3)]
    assert len(set(each)) == 3
    assert psnr(sr, hr, shave=4) == pytest.approx(sum(each) / 3, abs=1e-12)


def test_float32_and_float64_agree():
    hr = torch.rand(3, 20, 20, dtype=torch.float64)
    sr = hr + 0.01 * torch.randn_like(hr)
    assert psnr(sr.float(), hr.float(), shave=2) == pytest.approx(psnr(sr, hr, shave=2), abs=0.05)


@pytest.mark.parametrize(
    "sr_shape,hr_shape,shave,match",
    [
        ((3, 8, 8), (3, 8, 9), 0, r"same shape, got \(3, 8, 8\) and \(3, 8, 9\)"),
        ((1, 8, 8), (1, 8, 8), 0, r"\[3, H, W\] or \[B, 3, H, W\], got shape \(1, 8, 8\)"),
        ((8, 8), (8, 8), 0, r"got shape \(8, 8\)"),
        ((3, 8, 8), (3, 8, 8), 4, "shave=4 leaves no pixels of an image of 8x8"),
        ((3, 8, 8), (3, 8, 8), -1, "shave must be an int >= 0, got -1"),
        ((0, 3, 8, 8), (0, 3, 8, 8), 0, "batch is empty"),
    ],
)
def test_bad_arguments(sr_shape, hr_shape, shave, match):
    with pytest.raises(ValueError, match=match):
        psnr(torch.rand(sr_shape), torch.rand(hr_shape), shave=shave)


def test_integer_images_rejected():
    x = torch.zeros(3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="float in \\[0, 1\\], got torch.uint8"):
        psnr(x, x, shave=0)
