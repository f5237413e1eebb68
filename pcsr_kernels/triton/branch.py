"""One branch's MLP over its compact index list (K2), persistent.

How the work is split: a fixed number of programs (enough to fill the GPU; the grid does
not depend on the data) stride over the tiles of BM entries of branch j's index list,
whose length the dense pass (:mod:`.dense`) left on the device: no host sync, and the
launch can be captured in a CUDA graph. Per tile: gather each pixel's row of the LR
precompute P, complete the first layer, run every layer with the activations in
registers (:mod:`.tc_mlp`, chained ``tl.dot`` in the op's precision), add the bilinear
base, scatter RGB to ``out``. Every pixel sits in exactly one list (or is light), so every
output value is written exactly once.

List j lives in buffer j // 2, read from the front for even j and from the back for odd
j (see :mod:`.dense`).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import config, pack
from .tc_mlp import _coords, _mlp, _store_rgb, check_chunks


@triton.jit
def _branch_kernel(list_ptr, cnt_ptr, N,
                   pu_ptr, pu_stride, pu_col, first_ptr, wmid_ptr, bmid_ptr, wlast_ptr, blast_ptr, NUM_MID,
                   iy_ptr, ix_ptr, ry_ptr, rx_ptr, cy, cx, by0_ptr, by1_ptr, bly_ptr, bx0_ptr, bx1_ptr, blx_ptr,
                   lr_ptr, out_ptr, HW, W, hw, w,
                   J: tl.constexpr, BM: tl.constexpr, C0: tl.constexpr, C1: tl.constexpr, C2: tl.constexpr,
                   C3: tl.constexpr, OUT_P: tl.constexpr, ONE: tl.constexpr, PREC: tl.constexpr,
                   IDX64: tl.constexpr):
    count = tl.load(cnt_ptr + J)
    buf = list_ptr + (J // 2) * N
    for t in range(tl.program_id(0), tl.cdiv(count, BM), tl.num_programs(0)):
        e = t * BM + tl.arange(0, BM)
        m = e < count
        if J % 2 == 0:
            pix = tl.load(buf + e, mask=m, other=0)
        else:
            pix = tl.load(buf + (N - 1 - e), mask=m, other=0)
        b, r, y, x, lrow, ry, rx = _coords(pix, HW, W, hw, w, iy_ptr, ix_ptr, ry_ptr, rx_ptr, IDX64)
        res = _mlp(pu_ptr, lrow * pu_stride + pu_col, ry, rx, cy, cx, m, first_ptr, wmid_ptr, bmid_ptr, wlast_ptr,
                   blast_ptr, NUM_MID, BM, C0, C1, C2, C3, OUT_P, ONE, PREC)
        _store_rgb(res, m, b, r, y, x, HW, hw, w, lr_ptr, by0_ptr, by1_ptr, bly_ptr, bx0_ptr, bx1_ptr, blx_ptr,
                   out_ptr, OUT_P)


def launch_branch(j: int, mlp: pack.PackedTC, Pu: torch.Tensor, col: int, g: pack.Geometry, lists: torch.Tensor,
                  counts: torch.Tensor, lr: torch.Tensor, out: torch.Tensor, prec: str, idx64: bool) -> None:
    """Branch j (< M-1) over list j: writes its pixels of ``out [B,3,H,W]`` fp32."""
    B, _, H, W = out.shape
    h, w = lr.shape[2:]
    N = B * H * W
    BM = config.BRANCH_BLOCK_M
    check_chunks(BM, mlp.chunks, mlp.out_p, mlp.one)
    nprog = config.persistent_programs(out.device, triton.cdiv(N, BM), per_sm=2)
    _branch_kernel[(nprog,)](
        lists, counts, N, Pu, Pu.shape[1], col, mlp.first, mlp.wmid, mlp.bmid, mlp.wlast, mlp.blast, mlp.num_mid,
        g.iy, g.ix, g.ry, g.rx, g.cell_y, g.cell_x, g.by0, g.by1, g.bly, g.bx0, g.bx1, g.blx, lr, out,
        H * W, W, h * w, w,
        J=j, BM=BM, C0=mlp.chunks[0], C1=mlp.chunks[1], C2=mlp.chunks[2], C3=mlp.chunks[3], OUT_P=mlp.out_p,
        ONE=mlp.one, PREC=prec, IDX64=idx64, num_warps=config.branch_num_warps(mlp.hp), num_stages=1)
