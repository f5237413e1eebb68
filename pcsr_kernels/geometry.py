"""Where each HR pixel looks in the LR grid (LIIF sampler, nearest feature, cell decoding).

The HR grid is separable: the nearest LR row of an HR pixel depends only on its row,
the nearest LR column only on its column. So instead of a per-pixel coordinate matrix
(``[B, H*W, 2]`` in the authors' code) every backend uses four small tables:

    iy[H], ix[W]   int64  nearest LR row / column
    ry[H], rx[W]   float  relative coordinate ``(c - q) * (h or w)`` of the HR pixel
                          centre ``c`` to the chosen LR pixel centre ``q``

plus one constant per axis for the cell, ``(2/H * h, 2/W * w)``. The indices are built
here, once, with the float32 arithmetic of LIIF's ``make_coord`` and of
``grid_sample(mode='nearest', align_corners=False)`` so that every backend picks exactly
the feature the authors' code picks (round half to even on exact ties, which only
non-integer scales can produce; ``tests/test_reference.py`` checks this against
``grid_sample`` itself). The relative coordinates and the cell are the exact values rounded
once to float32 (the authors' float32 chain differs from them by ~1e-7), so that a tile cut
on the LR grid sees the values the whole image sees.
"""
from __future__ import annotations

import torch


def liif_coord(n: int, device=None) -> torch.Tensor:
    """Pixel-centre coordinates of a side of ``n`` pixels on [-1, 1]: ``-1 + (2i+1)/n``.

    Computed as LIIF's ``make_coord`` does (``(-1 + r) + 2r * i`` in float32 with
    ``r = 1/n`` in double), because the nearest-neighbour choice on exact ties depends on
    the last bit.
    """
    r = 1.0 / n
    return (-1.0 + r) + (2.0 * r) * torch.arange(n, device=device, dtype=torch.float32)


def nearest_axis(n_out: int, n_in: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest LR index and relative coordinate for each of ``n_out`` HR positions.

    Returns ``idx [n_out] int64`` in ``[0, n_in)`` and ``rel [n_out] float32``.
    """
    c = liif_coord(n_out, device)  # [n_out]
    # grid_sample's unnormalisation for align_corners=False, then nearbyint (half to even).
    src = ((c + 1) * n_in - 1) / 2
    idx = torch.round(src).clamp_(0, n_in - 1).to(torch.int64)
    # (c - q[idx]) * n_in = ((2i+1) n_in - (2 idx+1) n_out) / n_out: an exact integer over
    # n_out, rounded once to float32. The authors' float32 chain (within ~1e-7 of this)
    # would depend on n_out itself, so a tile of an image would see other values than the
    # whole image at the same pixel; the exact value depends only on the pixel's phase.
    i = torch.arange(n_out, device=device, dtype=torch.int64)
    num = (2 * i + 1) * n_in - (2 * idx + 1) * n_out  # [n_out] int64, |num| <= n_out * 2
    rel = (num.to(torch.float64) / n_out).to(torch.float32)
    return idx, rel


def rel_cell(n_out: int, n_in: int) -> float:
    """Cell size of an HR pixel in LR pixel units, ``2 n_in / n_out``, rounded once to float32
    (a function of the scale alone, so tiles and the whole image agree)."""
    return float(torch.tensor(2.0 * n_in / n_out, dtype=torch.float64).to(torch.float32))


class Tables:
    """The per-axis lookup tables for one (LR size, HR size) pair, on one device."""

    def __init__(self, h: int, w: int, H: int, W: int, device=None, dtype=torch.float32):
        self.iy, ry = nearest_axis(H, h, device)
        self.ix, rx = nearest_axis(W, w, device)
        self.ry = ry.to(dtype)
        self.rx = rx.to(dtype)
        self.cell_y = rel_cell(H, h)
        self.cell_x = rel_cell(W, w)


def bilinear_axis(n_out: int, n_in: int, device=None,
                  dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear taps along one axis, as ``F.interpolate(mode='bilinear', align_corners=False)``
    (equal to the authors' ``grid_sample(bilinear, padding_mode='border')``) computes them.

    Returns ``i0, i1 [n_out] int64`` and ``lam [n_out]`` in ``dtype`` (torch computes the
    taps in the input's own float type; csrc/common/tables.h does the same): the output is
    ``(1 - lam) * x[i0] + lam * x[i1]`` along this axis, both taps always computed (a tap of
    weight 0 still turns an infinite x into NaN, as in torch). An axis whose size does not
    change has ``i1 = i0`` (and ``lam = 0``), as torch's kernel sets it: the neighbour is not
    read, so a NaN there does not reach the pixel.
    """
    scale = torch.tensor(float(n_in), dtype=dtype) / n_out
    src = ((torch.arange(n_out, device=device, dtype=dtype) + 0.5) * scale.to(device) - 0.5).clamp_(min=0)
    i0 = src.floor().to(torch.int64).clamp_(max=n_in - 1)
    i1 = i0.clone() if n_out == n_in else (i0 + 1).clamp_(max=n_in - 1)
    lam = (src - i0.to(dtype)).clamp_(0, 1)
    return i0, i1, lam
