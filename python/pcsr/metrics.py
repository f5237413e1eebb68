"""PSNR as the PCSR authors measure it (their ``psnr_measure``).

Both images are first quantised to 8-bit levels, ``q(x) = round(clamp(255 x, 0, 255))``
(round half to even, as ``torch.round``), then::

    RGB:  d = q(sr) - q(hr)                                   over the 3 channels
    Y:    d = Y(q(sr)) - Y(q(hr)),  Y(r, g, b) = round((65.481 r + 128.553 g + 24.966 b) / 255 + 16)
    MSE  = mean(d^2) over the image with ``shave`` pixels cut from every side
    PSNR = 10 log10(255^2 / MSE)   (+inf when MSE = 0)

Y is ITU-R BT.601 luma in studio range, computed on the 8-bit levels and rounded back to an
integer level, as MATLAB's ``rgb2ycbcr`` on a uint8 image does.  The model output is never
clamped before this: the quantisation does it.
"""

from __future__ import annotations

import math

import torch

__all__ = ["quantize", "to_levels", "rgb_to_y", "psnr"]

# MATLAB rgb2ycbcr, Y row, for RGB levels in [0, 255].
_Y_COEFFS = (65.481, 128.553, 24.966)


def to_levels(x: torch.Tensor) -> torch.Tensor:
    """8-bit levels of a [0, 1] image: ``round(clamp(255 x, 0, 255))``, in ``x``'s float dtype.

    The multiply happens in ``x``'s dtype before rounding, as in the authors' code, so the
    rare value that lands on a .5 tie rounds the way theirs does.
    """
    return (x * 255).clamp(0, 255).round()


def quantize(x: torch.Tensor) -> torch.Tensor:
    """``x`` snapped to its 8-bit level and mapped back to [0, 1]: ``to_levels(x) / 255``."""
    return to_levels(x) / 255


def rgb_to_y(levels: torch.Tensor) -> torch.Tensor:
    """Integer Y levels (16..235) from RGB levels ``[..., 3, H, W]``; float64 out.

    ``round((65.481 R + 128.553 G + 24.966 B) / 255 + 16)`` in float64, half to even.
    """
    if levels.dim() < 3 or levels.shape[-3] != 3:
        raise ValueError(
            f"rgb_to_y: levels must be [..., 3, H, W], got shape {tuple(levels.shape)}"
        )
    c = torch.tensor(_Y_COEFFS, dtype=torch.float64, device=levels.device)
    lv = levels.to(torch.float64)
    y = lv[..., 0, :, :] * c[0] + lv[..., 1, :, :] * c[1] + lv[..., 2, :, :] * c[2]
    return (y / 255 + 16).round()


def psnr(sr: torch.Tensor, hr: torch.Tensor, shave: int, y_channel: bool = False) -> float:
    """PSNR in dB between two [0, 1] RGB images, the authors' way (see the module docstring).

    Args:
        sr, hr: ``[3, H, W]`` or ``[B, 3, H, W]`` float tensors of the same shape.
        shave: pixels cut from each border before the mean (the authors use the scale).
        y_channel: measure on the Y channel instead of RGB.

    Returns:
        The PSNR as a Python float.  For a batch, the mean of the per-image PSNRs (the authors'
        test loop runs one image at a time and averages the PSNRs).
    """
    if not isinstance(sr, torch.Tensor) or not isinstance(hr, torch.Tensor):
        raise ValueError(
            f"psnr: sr and hr must be tensors, got {type(sr).__name__} and {type(hr).__name__}"
        )
    if sr.shape != hr.shape:
        raise ValueError(
            f"psnr: sr and hr must have the same shape, got {tuple(sr.shape)} and {tuple(hr.shape)}"
        )
    if sr.dim() not in (3, 4) or sr.shape[-3] != 3:
        raise ValueError(
            f"psnr: images must be [3, H, W] or [B, 3, H, W], got shape {tuple(sr.shape)}"
        )
    if not sr.is_floating_point() or not hr.is_floating_point():
        raise ValueError(f"psnr: images must be float in [0, 1], got {sr.dtype} and {hr.dtype}")
    if isinstance(shave, bool) or not isinstance(shave, int) or shave < 0:
        raise ValueError(f"psnr: shave must be an int >= 0, got {shave!r}")
    if sr.dim() == 4 and sr.shape[0] == 0:
        raise ValueError(f"psnr: the batch is empty, shape {tuple(sr.shape)}")
    h, w = sr.shape[-2:]
    if 2 * shave >= h or 2 * shave >= w:
        raise ValueError(f"psnr: shave={shave} leaves no pixels of an image of {h}x{w}")

    a, b = to_levels(sr), to_levels(hr)
    if sr.dim() == 3:
        a, b = a.unsqueeze(0), b.unsqueeze(0)
    if y_channel:
        a, b = rgb_to_y(a).unsqueeze(1), rgb_to_y(b).unsqueeze(1)  # [B, 1, H, W]
    # Levels are integers, so d^2 and its sum are exact in float64 whatever the input dtype.
    d = (a.to(torch.float64) - b.to(torch.float64))[..., shave : h - shave, shave : w - shave]
    mse = d.square().mean(dim=(1, 2, 3))  # [B]
    values = [math.inf if m == 0 else 10 * math.log10(255.0**2 / m) for m in mse.tolist()]
    return sum(values) / len(values)
