"""MATLAB-style bicubic imresize: parity with a slow re-statement of MATLAB's imresize.m,
known facts of the kernel, and the authors' demo LR image."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pcsr.imresize import imresize

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
OFFICIAL = SHARED / "reference" / "official-pcsr"


def _shared_file(path: Path) -> Path:
    """Files under ../shared are read in place (never copied); tests skip without them."""
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return path


# --- an independent restatement of MATLAB's imresize.m ('bicubic', antialiasing on) --------


def _matlab_cubic(x):
    ax = np.abs(x)
    return (1.5 * ax**3 - 2.5 * ax**2 + 1) * (ax <= 1) + (
        -0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2
    ) * ((ax > 1) & (ax <= 2))


def _matlab_contributions(in_len, out_len, scale):
    """MATLAB's contributions(): 1-based u, left, P = ceil(width) + 2, symmetric 'aux' mirror."""
    width = 4.0
    if scale < 1:
        h = lambda t: scale * _matlab_cubic(scale * t)  # noqa: E731
        width = width / scale
    else:
        h = _matlab_cubic
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    p = int(math.ceil(width)) + 2
    ind = left[:, None] + np.arange(p)[None, :]
    wts = h(u[:, None] - ind)
    wts = wts / wts.sum(axis=1, keepdims=True)
    aux = np.concatenate([np.arange(1, in_len + 1), np.arange(in_len, 0, -1)])
    ind = aux[np.mod(ind - 1, aux.size).astype(np.int64)]
    return wts, ind - 1  # 0-based indices


def _slow_resize_axis(x, axis, out_len, scale):
    wts, ind = _matlab_contributions(x.shape[axis], out_len, scale)
    x = np.moveaxis(x, axis, 0)
    out = np.zeros((out_len,) + x.shape[1:], dtype=np.float64)
    for i in range(out_len):  # deliberately one output line at a time
        for p in range(wts.shape[1]):
            out[i] += wts[i, p] * x[ind[i, p]]
    return np.moveaxis(out, 0, axis)


def _slow_imresize(x, scale=None, size=None):
    h, w = x.shape[-2:]
    if scale is not None:
        size, scales = (math.ceil(h * scale), math.ceil(w * scale)), (scale, scale)
    else:
        scales = (size[0] / h, size[1] / w)
    y = x.astype(np.float64)
    if scales[0] != 1:
        y = _slow_resize_axis(y, -2, size[0], scales[0])
    if scales[1] != 1:
        y = _slow_resize_axis(y, -1, size[1], scales[1])
    return y


# --- parity ---------------------------------------------------------------------------------

SCALES = [1 / 4, 1 / 3, 1 / 2, 2, 4, 0.3, 0.77, 1.7, 3.5]
SHAPES = [(2, 3, 17, 23), (3, 32, 9)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("scale", SCALES)
def test_matches_matlab_restatement_float64(shape, scale):
    x = torch.rand(shape, dtype=torch.float64)
    y = imresize(x, scale)
    ref = _slow_imresize(x.numpy(), scale=scale)
    assert y.shape == ref.shape
    assert y.dtype == torch.float64
    # Same sums in a different order: float64 rounding only.
    np.testing.assert_allclose(y.numpy(), ref, rtol=0, atol=1e-13)


@pytest.mark.parametrize("size", [(5, 40), (17, 7), (1, 1), (64, 23)])
def test_size_argument_uses_per_axis_scales(size):
    x = torch.rand(2, 3, 17, 23, dtype=torch.float64)
    y = imresize(x, size=size)
    np.testing.assert_allclose(y.numpy(), _slow_imresize(x.numpy(), size=size), rtol=0, atol=1e-13)


@pytest.mark.parametrize("scale", [1 / 4, 3])
def test_float32_close_to_float64_reference(scale):
    x = torch.rand(3, 37, 41)
    y = imresize(x, scale)
    assert y.dtype == torch.float32
    ref = _slow_imresize(x.double().numpy(), scale=scale)
    # float32 accumulation over <= 18 taps with weights summing to 1 (|w| sum < 1.3):
    # a few ulps of values in [0, 1.2].
    np.testing.assert_allclose(y.numpy(), ref, rtol=0, atol=2e-6)


@pytest.mark.parametrize("hw,scale", [((1, 5), 1 / 4), ((2, 3), 1 / 4), ((3, 2), 4), ((1, 1), 3)])
def test_tiny_images_mirror_modulo_2n(hw, scale):
    # 18 taps on a 2-pixel axis reach past one mirror period; MATLAB's aux/mod rule defines it.
    x = torch.rand(3, *hw, dtype=torch.float64)
    y = imresize(x, scale)
    np.testing.assert_allclose(y.numpy(), _slow_imresize(x.numpy(), scale=scale), rtol=0, atol=1e-13)


def test_batch_is_per_image():
    x = torch.rand(3, 3, 19, 26)
    y = imresize(x, 1 / 3)
    for b in range(3):
        torch.testing.assert_close(y[b], imresize(x[b], 1 / 3), rtol=0, atol=1e-6)


# --- known facts ----------------------------------------------------------------------------


def test_output_size_is_ceil_of_scaled_size():
    x = torch.rand(3, 17, 23)
    assert imresize(x, 1 / 4).shape == (3, 5, 6)  # 4.25 -> 5, 5.75 -> 6
    assert imresize(x, 1 / 3).shape == (3, 6, 8)
    assert imresize(x, 0.3).shape == (3, 6, 7)  # 5.1 -> 6, 6.9 -> 7
    assert imresize(x, 2.5).shape == (3, 43, 58)  # 42.5 -> 43, 57.5 -> 58


@pytest.mark.parametrize("scale", [1 / 4, 1 / 3, 0.3, 2, 3.5])
def test_constant_image_stays_constant(scale):
    x = torch.full((2, 3, 21, 30), 0.6372)
    y = imresize(x, scale)
    # Weights are normalised per output, so only float32 rounding (<= 18 taps) is left.
    torch.testing.assert_close(y, torch.full_like(y, 0.6372), rtol=0, atol=2e-6)


@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4, 2, 3, 1.7])
def test_linear_ramp_lands_on_pixel_centres(scale):
    # Keys' a = -0.5 cubic reproduces linear functions; the antialiased kernel at integer 1/s
    # is symmetric about each output's source position.  Away from the mirrored border a ramp
    # x[j] = j therefore resizes to the source coordinate (i + 0.5)/s - 0.5 of each output i,
    # which pins MATLAB's half-pixel-centre convention.
    n = 60
    x = torch.arange(n, dtype=torch.float64).view(1, n, 1).expand(1, n, 3).contiguous()
    y = imresize(x, size=(math.ceil(n * scale), 3))[0, :, 0]
    pos = (torch.arange(y.numel(), dtype=torch.float64) + 0.5) / scale - 0.5
    reach = 2 / min(scale, 1) + 1  # kernel half-width in input pixels, plus one
    interior = (pos > reach) & (pos < n - 1 - reach)
    assert interior.sum() >= 10
    torch.testing.assert_close(y[interior], pos[interior], rtol=0, atol=1e-12)


def test_scale_one_returns_a_copy():
    x = torch.rand(3, 8, 9)
    y = imresize(x, 1)
    assert torch.equal(y, x)
    y += 1
    assert not torch.equal(y, x)


def test_upscale_does_not_clamp():
    # A step edge overshoots under the negative cubic lobes; the values must survive.
    x = torch.zeros(1, 8, 8)
    x[:, :, 4:] = 1
    y = imresize(x, 4)
    assert y.max() > 1 and y.min() < 0


def test_differentiable():
    x = torch.rand(1, 2, 7, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: imresize(a, 0.37), (x,))
    assert torch.autograd.gradcheck(lambda a: imresize(a, size=(11, 4)), (x,))


# --- argument checks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({}, "exactly one of scale and size"),
        ({"scale": 0.5, "size": (4, 4)}, "exactly one of scale and size"),
        ({"scale": 0}, "scale must be finite and > 0"),
        ({"scale": -2.0}, "scale must be finite and > 0"),
        ({"scale": float("inf")}, "scale must be finite and > 0"),
        ({"scale": "2"}, "scale must be a number"),
        ({"size": (4,)}, "size must be a pair of ints"),
        ({"size": (4.0, 4)}, "size must be a pair of ints"),
        ({"size": (0, 4)}, r"size must be >= 1 on both axes, got \(0, 4\)"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        imresize(torch.rand(3, 8, 8), **kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"\[C, H, W\] or \[B, C, H, W\], got shape \(8, 8\)"):
        imresize(torch.rand(8, 8), 0.5)
    with pytest.raises(ValueError, match="float32 or float64, got torch.uint8"):
        imresize(torch.zeros(3, 8, 8, dtype=torch.uint8), 0.5)
    with pytest.raises(ValueError, match="H, W >= 1"):
        imresize(torch.rand(3, 0, 8), 0.5)
    with pytest.raises(ValueError, match="must be a torch.Tensor"):
        imresize(np.zeros((3, 8, 8), dtype=np.float32), 0.5)


# --- the authors' demo ----------------------------------------------------------------------


def _load_png(path: Path) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as im:
        arr = np.array(im.convert("RGB"))
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()  # [3, H, W] uint8


def test_demo_lr_matches_authors_file():
    hr = _load_png(_shared_file(OFFICIAL / "demo_HR.png")).double() / 255
    lr_file = _load_png(_shared_file(OFFICIAL / "demo_LRx4.png")).double()
    # The demo ran core.imresize(hr, sizes=(h, w)) in float32 on a GPU, then saved
    # round(clamp(lr * 255, 0, 255)).
    lr = imresize(hr.float(), 1 / 4)
    assert lr.shape == (3, 276, 420)
    torch.testing.assert_close(lr, imresize(hr.float(), size=(276, 420)), rtol=0, atol=0)
    q = (lr.double() * 255).clamp(0, 255).round()
    diff = (q - lr_file).abs()
    # Measured: 1 of 347760 values differs, by 1 level.  A float32 result (ours or the
    # authors' GPU summation order) can only round differently from another float32 result
    # where the exact value x*255 lies within float32 noise (~1e-4 at 255) of a .5 tie, so
    # every mismatch must sit on a tie of the float64 result, and there can be only a few.
    assert diff.max() <= 1
    mismatched = diff > 0
    assert mismatched.sum() <= 5
    exact = imresize(hr, 1 / 4) * 255
    tie_distance = (exact[mismatched] - exact[mismatched].floor() - 0.5).abs()
    assert (tie_distance < 1e-3).all(), tie_distance
