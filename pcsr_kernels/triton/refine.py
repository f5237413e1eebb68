"""refine: a light pixel with a heavy pixel in its 3x3 neighbourhood takes the 3x3 mean.

One program per BLOCK pixels in raster order over B*H*W; it reads the unrefined image
and writes every pixel of a new one (refined or copied), so no clone is needed and no
pixel reads a neighbour that was already refined. The outermost rows and columns are
never refined (see :func:`pcsr_kernels.reference.refine_ref`), so every window read lies
inside its image and no padding rule is needed. The mean sums rows then columns and
divides by 9 correctly rounded, as ``avg_pool2d`` does.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import reference, validate
from . import pack


@triton.jit
def _refine_kernel(sr_ptr, cls_ptr, out_ptr, N, HW, H, W, NH: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    pix = pid * BLOCK + tl.arange(0, BLOCK)
    mask = pix < N
    b = pix // HW
    r = pix - b * HW
    y = r // W
    x = r - y * W
    inner = mask & (y >= 1) & (y < H - 1) & (x >= 1) & (x < W - 1)
    cand = inner & (tl.load(cls_ptr + pix, mask=mask, other=0) >= NH)  # interior light pixels
    near = tl.zeros([BLOCK], dtype=tl.int1)
    for dy in tl.static_range(-1, 2):
        for dx in tl.static_range(-1, 2):
            near = near | (tl.load(cls_ptr + pix + dy * W + dx, mask=cand, other=NH) < NH)
    do = cand & near
    base = sr_ptr + b * 3 * HW + r  # channel 0 of each pixel
    dst = out_ptr + b * 3 * HW + r
    for ch in tl.static_range(3):
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for dy in tl.static_range(-1, 2):
            for dx in tl.static_range(-1, 2):
                acc += tl.load(base + ch * HW + dy * W + dx, mask=do, other=0.0)
        val = tl.where(do, tl.math.div_rn(acc, 9.0), tl.load(base + ch * HW, mask=mask, other=0.0))
        tl.store(dst + ch * HW, val, mask=mask)


def launch_refine(sr: torch.Tensor, classes: torch.Tensor, M: int) -> torch.Tensor:
    """sr [B,3,H,W] fp32 contiguous, classes [B,H,W] int64 -> a new refined image."""
    B, _, H, W = sr.shape
    out = torch.empty_like(sr)
    N = B * H * W
    BLOCK = 1024
    _refine_kernel[(triton.cdiv(N, BLOCK),)](sr, classes, out, N, H * W, H, W, NH=reference.num_heavy(M), BLOCK=BLOCK)
    return out


def refine_triton(sr: torch.Tensor, classes: torch.Tensor, num_branches: int) -> torch.Tensor:
    """``torch.ops.pcsr.refine`` on the Triton backend."""
    validate.refine_args(sr, classes, num_branches)
    pack.check_dtype(sr)
    if sr.numel() == 0:
        return sr.clone()
    out = launch_refine(sr.to(torch.float32).contiguous(), classes.contiguous(), num_branches)
    return out.to(sr.dtype)
