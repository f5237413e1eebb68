"""upsample: the routed MLP residual plus bilinear(lr), one fused kernel per branch.

Pixels are first counting-sorted by class (:mod:`.sort`), so branch j owns a contiguous,
block-padded segment of pixel indices. Its kernel is launched with a fixed number of
programs that stride over that segment's blocks (the segment length stays on the device:
no host sync, and the grid does not depend on the data). Per block of BM pixels: gather
the branch's first layer from the LR precompute, run every layer with ``tl.dot`` (activations
in a per-program scratch tile that stays in L1/L2, see :mod:`.mlp`),
add the bilinear residual of ``lr``, scatter the 3 channels to ``out [B, 3, H, W]``.
Sentinel lanes (-1) are masked. Every pixel belongs to exactly one segment, so every
output value is written exactly once.
"""
from __future__ import annotations

from typing import Sequence

import torch
import triton
import triton.language as tl

from .. import validate
from . import config, pack
from .mlp import BK, _pixel_mlp, check_tiles
from .sort import sort_by_class


@triton.jit
def _upsample_branch_kernel(idx_ptr, seg_ptr, branch,
                            p_ptr, p_stride, p_col, iy_ptr, ix_ptr, ry_ptr, rx_ptr, cy, cx,
                            first_ptr, scr_ptr, wmid_ptr, bmid_ptr, wlast_ptr, blast_ptr, wid_ptr, NUM_MID,
                            lr_ptr, by0_ptr, by1_ptr, bly_ptr, bx0_ptr, bx1_ptr, blx_ptr, out_ptr,
                            HW, W, hw, w,
                            ONE_LAYER: tl.constexpr, BM: tl.constexpr, HP: tl.constexpr, BN: tl.constexpr,
                            BK: tl.constexpr, OUT_P: tl.constexpr, PREC: tl.constexpr):
    pid = tl.program_id(0)
    scr = scr_ptr + pid.to(tl.int64) * (2 * BM * HP)
    start = tl.load(seg_ptr + 2 * branch)  # int64 element offset of this branch's segment
    nblk = tl.load(seg_ptr + 2 * branch + 1) // BM  # int64, so the loop index is int64 too
    col = tl.arange(0, OUT_P)
    rgb = (col < 3)[None, :]
    for blk in range(pid, nblk, tl.num_programs(0)):
        pix = tl.load(idx_ptr + start + blk * BM + tl.arange(0, BM)).to(tl.int64)  # [BM]
        mask = pix >= 0
        pix = tl.where(mask, pix, 0)
        res, b, y, x = _pixel_mlp(pix, HW, W, hw, w, p_ptr, p_stride, p_col, iy_ptr, ix_ptr, ry_ptr, rx_ptr, cy, cx,
                                  mask, first_ptr, scr, wmid_ptr, bmid_ptr, wlast_ptr, blast_ptr, wid_ptr, NUM_MID,
                                  ONE_LAYER, BM, HP, BN, BK, OUT_P, PREC)
        # bilinear(lr), align_corners=False, as F.interpolate: separable taps from tables
        m2 = mask[:, None] & rgb
        chan = (b * 3)[:, None] + col[None, :]  # [BM, OUT_P] int64
        y0 = tl.load(by0_ptr + y)
        y1 = tl.load(by1_ptr + y)
        x0 = tl.load(bx0_ptr + x)
        x1 = tl.load(bx1_ptr + x)
        ly = tl.load(bly_ptr + y)[:, None]
        lx = tl.load(blx_ptr + x)[:, None]
        lrc = lr_ptr + chan * hw
        v00 = tl.load(lrc + (y0 * w + x0)[:, None], mask=m2, other=0.0)
        v01 = tl.load(lrc + (y0 * w + x1)[:, None], mask=m2, other=0.0)
        v10 = tl.load(lrc + (y1 * w + x0)[:, None], mask=m2, other=0.0)
        v11 = tl.load(lrc + (y1 * w + x1)[:, None], mask=m2, other=0.0)
        base = (1.0 - ly) * ((1.0 - lx) * v00 + lx * v01) + ly * ((1.0 - lx) * v10 + lx * v11)
        tl.store(out_ptr + chan * HW + (y * W + x)[:, None], res + base, mask=m2)


def launch_upsample(P: torch.Tensor, cols: Sequence[int], g: pack.Geometry, mlps: Sequence[pack.PackedMLP],
                    lr: torch.Tensor, classes: torch.Tensor, out: torch.Tensor) -> None:
    """Sort ``classes [B,H,W]`` and run every branch's kernel; writes every pixel of
    ``out [B,3,H,W]`` fp32. ``lr`` fp32 contiguous."""
    B, _, H, W = out.shape
    h, w = lr.shape[2:]
    M = len(mlps)
    N = B * H * W
    if N == 0:
        return
    BM = config.MLP_BLOCK_M
    idx, seg = sort_by_class(classes.reshape(-1), M, BM)
    # every branch's grid strides over at most all N pixels plus its padding
    nprog = config.persistent_programs(out.device, triton.cdiv(N, BM) + 1)
    scratch = P.new_empty(nprog * 2 * BM * max(m.hp for m in mlps))
    for j, mlp in enumerate(mlps):
        check_tiles(BM, mlp.hp, mlp.bn, mlp.out_p, mlp.num_layers)
        assert mlp.out_p >= 3
        _upsample_branch_kernel[(nprog,)](
            idx, seg, j,
            P, P.shape[1], cols[j], g.iy, g.ix, g.ry, g.rx, g.cell_y, g.cell_x,
            mlp.first, scratch, mlp.wmid, mlp.bmid, mlp.wlast, mlp.blast, mlp.widths, mlp.num_mid,
            lr, g.by0, g.by1, g.bly, g.bx0, g.bx1, g.blx, out,
            H * W, W, h * w, w,
            ONE_LAYER=mlp.num_layers == 1, BM=BM, HP=mlp.hp, BN=max(mlp.bn, 16), BK=BK, OUT_P=mlp.out_p,
            PREC=config.get_precision(), num_warps=config.mlp_num_warps(mlp.bn), num_stages=config.MLP_NUM_STAGES)


def upsample_triton(feat: torch.Tensor, lr: torch.Tensor, classes: torch.Tensor,
                    upsamplers: Sequence[torch.Tensor], depths: Sequence[int]) -> torch.Tensor:
    """``torch.ops.pcsr.upsample`` on the Triton backend: sr [B, 3, H, W], unrefined."""
    B, D, h, w, H, W, branches = validate.upsample_args(feat, lr, classes, upsamplers, depths)
    pack.check_dtype(feat)
    mlps = [pack.packed_mlp(br, D) for br in branches]
    g = pack.geometry(h, w, H, W, feat.device)
    P, cols = pack.lr_precompute(feat, mlps)
    out = torch.empty(B, 3, H, W, dtype=torch.float32, device=feat.device)
    launch_upsample(P, cols, g, mlps, lr.to(torch.float32).contiguous(), classes.contiguous(), out)
    return out.to(feat.dtype)
