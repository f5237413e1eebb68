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

``SCRATCH``: for "ieee" and "tf32x3" dots on hidden layers wider than 64 (and "tf32" over
128, which spilled 4 B in registers), the activations
go through a per-program scratch tile instead (:func:`.mlp._mlp_block`, BK = 16 inputs per
dot). Triton lowers an "ieee" dot to FMAs holding a thread's whole K slice of both
operands in registers, and "tf32x3" keeps split copies of both: with [BM, 64] register
chunks the sm_90 build spilled 26-80 KB per thread (ieee, 170 wide, BM 64-128, 4-8 warps)
and 1.4-2 KB (tf32x3), while the scratch loop builds without a spill (Triton 3.6, ptxas -v,
see compile_check.py).

Offline sm_90a build, Triton 3.6.0, at :func:`.config.branch_launch`'s parameters
(``... python -m pcsr_kernels.triton.compile_check --only branch``; registers / HGMMA
count; facts about compilation, not speed; no spill anywhere, with Triton 3.9 too):

    heavy branch     ieee            tf32              tf32x3            bf16
    FSRCNN 58->64    214 r (FMA)     242 r, 16 HGMMA   254 r, 48         167 r, 8
    CARN 74->80      105 r scratch   228 r, 30 (BM 64) 127 r, 36 scratch 176 r, 15
    SRResNet 170->192 205 r scratch  233 r, 96 scratch 237 r, 40 scratch 255 r, 80 (BM 64)

The padded units of each hidden layer are zeroed in the chunk (or scratch tile) that holds
them (see :func:`.tc_mlp._act`), which costs registers: the 192-wide bf16 branch sits at
the 255 limit, and the variants of the zeroing tried first spilled 8-24 B there.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import config, pack
from .mlp import BK, _mlp_block
from .tc_mlp import _coords, _mlp, _store_rgb, check_chunks


@triton.jit
def _branch_kernel(list_ptr, cnt_ptr, N,
                   pu_ptr, pu_stride, pu_col, first_ptr, wmid_ptr, bmid_ptr, wlast_ptr, blast_ptr, lo_ptr, NUM_MID,
                   iy_ptr, ix_ptr, ry_ptr, rx_ptr, cy, cx, by0_ptr, by1_ptr, bly_ptr, bx0_ptr, bx1_ptr, blx_ptr,
                   lr_ptr, out_ptr, HW, W, hw, w, scr_ptr,
                   J: tl.constexpr, BM: tl.constexpr, C0: tl.constexpr, C1: tl.constexpr, C2: tl.constexpr,
                   C3: tl.constexpr, OUT_P: tl.constexpr, ONE: tl.constexpr, PREC: tl.constexpr,
                   IDX64: tl.constexpr, SCRATCH: tl.constexpr, BN: tl.constexpr, REAL: tl.constexpr):
    count = tl.load(cnt_ptr + J)
    HP: tl.constexpr = C0 + C1 + C2 + C3
    scr = scr_ptr + tl.program_id(0).to(tl.int64) * (2 * BM * HP)
    buf = list_ptr + (J // 2) * N
    for t in range(tl.program_id(0), tl.cdiv(count, BM), tl.num_programs(0)):
        e = t * BM + tl.arange(0, BM)
        m = e < count
        if J % 2 == 0:
            pix = tl.load(buf + e, mask=m, other=0)
        else:
            pix = tl.load(buf + (N - 1 - e), mask=m, other=0)
        b, r, y, x, lrow, ry, rx = _coords(pix, HW, W, hw, w, iy_ptr, ix_ptr, ry_ptr, rx_ptr, IDX64)
        if SCRATCH:
            res = _mlp_block(pu_ptr, lrow * pu_stride + pu_col, ry, rx, first_ptr, cy, cx, m, scr, wmid_ptr,
                             bmid_ptr, wlast_ptr, blast_ptr, lo_ptr, NUM_MID, BM, HP, BN, 16, OUT_P, REAL, PREC)
        else:
            res = _mlp(pu_ptr, lrow * pu_stride + pu_col, ry, rx, cy, cx, m, first_ptr, wmid_ptr, bmid_ptr,
                       wlast_ptr, blast_ptr, lo_ptr, NUM_MID, BM, C0, C1, C2, C3, OUT_P, ONE, REAL, PREC)
        _store_rgb(res, m, b, r, y, x, HW, hw, w, lr_ptr, by0_ptr, by1_ptr, bly_ptr, bx0_ptr, bx1_ptr, blx_ptr,
                   out_ptr, OUT_P)


def launch_branch(j: int, mlp: pack.PackedTC, Pu: torch.Tensor, col: int, g: pack.Geometry, lists: torch.Tensor,
                  counts: torch.Tensor, lr: torch.Tensor, out: torch.Tensor, prec: str, idx64: bool) -> None:
    """Branch j (< M-1) over list j: writes its pixels of ``out [B,3,H,W]`` fp32."""
    B, _, H, W = out.shape
    h, w = lr.shape[2:]
    N = B * H * W
    c = launch_config(mlp.chunks, mlp.one, mlp.min_width, prec)
    BM = c["BM"]
    check_chunks(BM, mlp.chunks, mlp.out_p, mlp.one)
    nprog = config.persistent_programs(out.device, triton.cdiv(N, BM), per_sm=2)
    scr = out.new_empty(nprog * 2 * BM * mlp.hp) if c["SCRATCH"] else out
    _branch_kernel[(nprog,)](
        lists, counts, N, Pu, Pu.shape[1], col, mlp.first, mlp.wmid, mlp.bmid, mlp.wlast, mlp.blast, mlp.pad_lo,
        mlp.num_mid, g.iy, g.ix, g.ry, g.rx, g.cell_y, g.cell_x, g.by0, g.by1, g.bly, g.bx0, g.bx1, g.blx, lr, out,
        H * W, W, h * w, w, scr,
        J=j, C0=mlp.chunks[0], C1=mlp.chunks[1], C2=mlp.chunks[2], C3=mlp.chunks[3], OUT_P=mlp.out_p,
        ONE=mlp.one, PREC=prec, IDX64=idx64, **c, num_stages=1)


def uses_scratch(chunks, one: bool, prec: str) -> bool:
    """The scratch-tile MLP (see the module docstring) for wide ieee / tf32x3 branches."""
    hp = sum(chunks)
    return not one and ((hp > 64 and prec in ("ieee", "tf32x3")) or (hp > 128 and prec == "tf32"))


def launch_config(chunks, one: bool, min_width: int, prec: str) -> dict:
    """The branch kernel's launch parameters (constexprs and num_warps) for an MLP of these
    register chunks (:func:`.tc_mlp.chunking`) whose narrowest hidden layer is ``min_width``
    wide; shared with :mod:`.compile_check`, so that it builds what runs."""
    hp = sum(chunks)
    scratch = uses_scratch(chunks, one, prec)
    BM, num_warps = config.branch_launch(hp, prec, scratch)
    bn = 64 if hp % 64 == 0 else 32 if hp % 32 == 0 else 16  # the scratch loop's output tiles
    real = pack.real_cols([bn] * (hp // bn) if scratch else chunks, min_width)
    return dict(BM=BM, SCRATCH=scratch, BN=bn, REAL=real, num_warps=num_warps)
