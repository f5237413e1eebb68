"""refine: a light pixel with a heavy pixel in its 3x3 neighbourhood takes the 3x3 mean (K3).

How the work is split: one program per 2-D tile of BY x BX pixels of one image (grid:
column tiles, row tiles, images), so the 3x3 windows of a tile overlap in cache. It reads
the unrefined image and writes every pixel of a new one (refined or copied), so no clone is
needed and no pixel reads a neighbour that was already refined. The class map may be any
integer type: route_upsample passes its compact uint8 copy (8x fewer bytes than int64),
the refine op the int64 classes it is given. Offsets within an image are int32 unless an
image's 3*H*W values reach 2^31; the image's base offset is int64. The outermost rows and
columns are never refined (see :func:`pcsr_kernels.reference.refine_ref`), so every
window read lies inside its image and no padding rule is needed. The mean sums rows then
columns and divides by 9 correctly rounded, as ``avg_pool2d`` does.

Offline sm_90a build (Triton 3.6.0, ``python -m pcsr_kernels.triton.compile_check --only
refine``): 8 x 64 tiles, 4 warps, 40 registers with uint8 classes and int32 offsets, 48
with int64 classes and int64 offsets, no spill.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import reference, validate
from . import pack
from .tc_mlp import needs_int64


@triton.jit
def _refine_kernel(sr_ptr, cls_ptr, out_ptr, H, W, NH: tl.constexpr, BY: tl.constexpr, BX: tl.constexpr,
                   IDX64: tl.constexpr):
    b = tl.program_id(2).to(tl.int64)
    HW = H * W
    sr_ptr += b * 3 * HW
    out_ptr += b * 3 * HW
    cls_ptr += b * HW
    y = tl.program_id(1) * BY + tl.arange(0, BY)[:, None]  # [BY, 1]
    x = tl.program_id(0) * BX + tl.arange(0, BX)[None, :]  # [1, BX]
    if IDX64:
        y = y.to(tl.int64)
    mask = (y < H) & (x < W)
    r = y * W + x  # [BY, BX]
    inner = mask & (y >= 1) & (y < H - 1) & (x >= 1) & (x < W - 1)
    cand = inner & (tl.load(cls_ptr + r, mask=mask, other=0) >= NH)  # interior light pixels
    near = tl.zeros([BY, BX], dtype=tl.int1)
    for dy in tl.static_range(-1, 2):
        for dx in tl.static_range(-1, 2):
            near = near | (tl.load(cls_ptr + r + dy * W + dx, mask=cand, other=NH) < NH)
    do = cand & near
    for ch in tl.static_range(3):
        acc = tl.zeros([BY, BX], dtype=tl.float32)
        for dy in tl.static_range(-1, 2):
            for dx in tl.static_range(-1, 2):
                acc += tl.load(sr_ptr + ch * HW + r + dy * W + dx, mask=do, other=0.0)
        val = tl.where(do, tl.math.div_rn(acc, 9.0), tl.load(sr_ptr + ch * HW + r, mask=mask, other=0.0))
        tl.store(out_ptr + ch * HW + r, val, mask=mask)


def launch_refine(sr: torch.Tensor, classes: torch.Tensor, M: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """sr [B,3,H,W] fp32 contiguous, classes [B,H,W] any integer dtype -> the refined image
    (into ``out`` when given)."""
    B, _, H, W = sr.shape
    if out is None:
        out = torch.empty_like(sr)
    BY, BX = 8, 64
    _refine_kernel[(triton.cdiv(W, BX), triton.cdiv(H, BY), B)](
        sr, classes, out, H, W, NH=reference.num_heavy(M), BY=BY, BX=BX, IDX64=needs_int64(3 * H * W + 2 * W))
    return out


def refine_triton(sr: torch.Tensor, classes: torch.Tensor, num_branches: int) -> torch.Tensor:
    """``torch.ops.pcsr.refine`` on the Triton backend (the classes' range is checked on the
    device: no host sync)."""
    validate.check_tensor("sr", sr, 4)
    if sr.shape[1] != 3:
        raise ValueError(f"sr must be [B, 3, H, W], got {tuple(sr.shape)}")
    if num_branches < 2:
        raise ValueError(f"num_branches must be >= 2, got {num_branches}")
    B, _, H, W = sr.shape
    validate.check_classes(classes, B, H, W, num_branches, sr.device, values=False)
    pack.check_dtype(sr)
    if sr.numel() == 0:
        return sr.clone()
    validate.check_classes_on_device(classes, num_branches)
    out = launch_refine(sr.to(torch.float32).contiguous(), classes.contiguous(), num_branches)
    return out.to(sr.dtype)
