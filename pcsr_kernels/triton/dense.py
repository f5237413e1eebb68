"""The dense pass over every HR pixel (K1): classify, route, run the lightest branch,
partition the other classes.

How the work is split: one program per block of BM consecutive HR pixels in raster order
over B*H*W (neighbouring lanes gather the same or neighbouring LR rows of P). Per block:

1. the class of each pixel: the classifier MLP in fp32 IEEE (:mod:`.tc_mlp`, PREC
   "ieee" whatever the op's precision), softmax, ``argmax_j log(p_j) - k log(cost_j)``
   (first index on ties, as torch.argmax; a score vector holding a NaN -> branch 0, the
   heaviest) -- or the classes given (ADM's, or the upsample op's argument);
2. the lightest branch M-1 for every pixel of the block when any of them is light (it
   is the cheapest MLP; computing it densely needs no index list), its RGB plus the
   bilinear base written for the light pixels;
3. the other classes j < M-1 appended to compact index lists: a count per class in the
   block, one atomic add per class and block for the place, a cumulative sum for each
   pixel's slot. Lists j = 2i and 2i+1 share one buffer of N entries, the first filled
   from the front and the second from the back, so (M-1)/2 buffers hold them all. Their
   lengths stay on the device (``counts``); the order of blocks in a list depends on the
   atomics, the results do not (each pixel is computed alone).

Modes (constexpr ``MODE``): 0 route (classifier + the steps above, classes written as
int64 and uint8), 1 given classes (steps 2-3; the uint8 copy written), 2 heavy mass only
(``sum_{j < (M+1)/2} p_j`` for ADM, nothing else).

Index math is int32 unless ``IDX64`` (some offset reaches 2^31: see
:func:`.tc_mlp.needs_int64`).

Offline sm_90a build, Triton 3.6.0 (the GPU image's), at the launch parameters of
:func:`.config.dense_launch`, BM = 128, 4 warps (with a light branch over 32 wide: 8 warps,
and BM = 64 in ieee and tf32x3); ``PYTHONPATH=.venv-t36/lib/python3.11/site-packages:.
python -m pcsr_kernels.triton.compile_check --only dense`` (ptxas -v; HGMMA counted in
cuobjdump -sass). Facts about compilation, not speed; no spill anywhere, with Triton 3.9
too (registers, HGMMA instructions):

    mode 0 (route)   ieee              tf32          tf32x3             bf16
    FSRCNN-PCSR      80, none          66, 8         85, 24             64, 4
    CARN-PCSR        160, none         156, 16       164, 48            89, 8
    SRResNet-PCSR    174, none (BM 64) 198, 18 (8w)  174, 90 (BM 64)    151, 9 (8w)

("ieee" dots become FMAs, as intended: the classifier is always ieee.) The P gathers
compile to scalar loads (no LDG.E.128): the row offsets are not provably 16-byte aligned.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import reference
from . import config, pack
from .tc_mlp import _coords, _mlp, _store_rgb, check_chunks


@triton.jit
def _dense_kernel(pc_ptr, pc_stride, cfirst_ptr, cwmid_ptr, cbmid_ptr, cwlast_ptr, cblast_ptr, clo_ptr,
                  C_NUM_MID, klogc_ptr,
                  pu_ptr, pu_stride, pu_col, lfirst_ptr, lwmid_ptr, lbmid_ptr, lwlast_ptr, lblast_ptr, llo_ptr,
                  L_NUM_MID,
                  iy_ptr, ix_ptr, ry_ptr, rx_ptr, cy, cx, by0_ptr, by1_ptr, bly_ptr, bx0_ptr, bx1_ptr, blx_ptr,
                  lr_ptr, out_ptr, cls_in_ptr, cls64_ptr, cls8_ptr, heavy_ptr, cnt_ptr, list_ptr,
                  N, HW, W, hw, w,
                  M: tl.constexpr, NH: tl.constexpr, MODE: tl.constexpr, BM: tl.constexpr,
                  CC0: tl.constexpr, CC1: tl.constexpr, CC2: tl.constexpr, CC3: tl.constexpr,
                  C_OUT: tl.constexpr, C_ONE: tl.constexpr, C_REAL: tl.constexpr,
                  LC0: tl.constexpr, LC1: tl.constexpr, LC2: tl.constexpr, LC3: tl.constexpr,
                  L_OUT: tl.constexpr, L_ONE: tl.constexpr, L_REAL: tl.constexpr,
                  PREC: tl.constexpr, IDX64: tl.constexpr):
    pid = tl.program_id(0)
    if IDX64:
        pix = pid.to(tl.int64) * BM + tl.arange(0, BM)
    else:
        pix = pid * BM + tl.arange(0, BM)
    mask = pix < N
    pix = tl.where(mask, pix, 0)
    b, r, y, x, lrow, ry, rx = _coords(pix, HW, W, hw, w, iy_ptr, ix_ptr, ry_ptr, rx_ptr, IDX64)

    if MODE != 1:  # the classifier, fp32 IEEE
        logits = _mlp(pc_ptr, lrow * pc_stride, ry, rx, cy, cx, mask, cfirst_ptr, cwmid_ptr, cbmid_ptr,
                      cwlast_ptr, cblast_ptr, clo_ptr, C_NUM_MID, BM, CC0, CC1, CC2, CC3, C_OUT, C_ONE, C_REAL,
                      "ieee")
        col = tl.arange(0, C_OUT)
        valid = (col < M)[None, :]
        logits = tl.where(valid, logits, float("-inf"))
        e = tl.where(valid, tl.exp(logits - tl.max(logits, axis=1)[:, None]), 0.0)
        p = tl.math.div_rn(e, tl.sum(e, axis=1)[:, None])  # [BM, C_OUT]; 0 in padded columns
        if MODE == 2:
            tl.store(heavy_ptr + pix, tl.sum(tl.where((col < NH)[None, :], p, 0.0), axis=1), mask=mask)
            return
        # log(p) as the reference takes it (an underflowed p is -inf there too)
        score = tl.log(tl.where(valid, p, 1.0)) - tl.load(klogc_ptr + col, mask=col < M, other=0.0)[None, :]
        has_nan = tl.sum((valid & (score != score)).to(tl.int32), axis=1) > 0
        score = tl.where(valid, score, float("-inf"))
        best = tl.max(score, axis=1)
        cls = tl.min(tl.where(score == best[:, None], col[None, :], C_OUT), axis=1)
        cls = tl.where(has_nan | (cls >= M), 0, cls)
        tl.store(cls64_ptr + pix, cls.to(tl.int64), mask=mask)
    else:
        cls = tl.load(cls_in_ptr + pix, mask=mask, other=0).to(tl.int32)
    tl.store(cls8_ptr + pix, cls.to(tl.uint8), mask=mask)

    light = mask & (cls == M - 1)
    if tl.sum(light.to(tl.int32), axis=0) > 0:
        res = _mlp(pu_ptr, lrow * pu_stride + pu_col, ry, rx, cy, cx, mask, lfirst_ptr, lwmid_ptr, lbmid_ptr, lwlast_ptr,
                   lblast_ptr, llo_ptr, L_NUM_MID, BM, LC0, LC1, LC2, LC3, L_OUT, L_ONE, L_REAL, PREC)
        _store_rgb(res, light, b, r, y, x, HW, hw, w, lr_ptr, by0_ptr, by1_ptr, bly_ptr, bx0_ptr, bx1_ptr, blx_ptr,
                   out_ptr, L_OUT)

    for j in tl.static_range(M - 1):
        sel = mask & (cls == j)
        n = tl.sum(sel.to(tl.int32), axis=0)
        if n > 0:
            start = tl.atomic_add(cnt_ptr + j, n.to(cnt_ptr.dtype.element_ty))
            slot = start + tl.cumsum(sel.to(cnt_ptr.dtype.element_ty), axis=0) - 1
            if j % 2 == 0:
                dest = (j // 2) * N + slot
            else:
                dest = (j // 2) * N + (N - 1 - slot)
            tl.store(list_ptr + dest, pix.to(list_ptr.dtype.element_ty), mask=sel)


def launch_dense(mode: int, *, Pc, cls_mlp, Pu, light, light_col: int = 0, g: pack.Geometry, B: int, h: int, w: int, H: int, W: int,
                 M: int, prec: str, idx64: bool, lr=None, out=None, klogc=None, cls_in=None, cls64=None, cls8=None,
                 heavy=None, counts=None, lists=None) -> None:
    """Run the dense pass (see the module docstring) over all B*H*W pixels.

    Pc [B*h*w, *] fp32 with the classifier's first columns at 0 (modes 0, 2), cls_mlp
    its :class:`.pack.PackedTC`; Pu [B*h*w, *] with the light branch's first column at
    ``light_col`` (modes 0, 1), light its packing; lr [B,3,h,w] fp32, out [B,3,H,W] fp32; klogc [M] fp32 (mode
    0); cls_in [B,H,W] integer (mode 1); cls64 [B,H,W] int64 (mode 0); cls8 [B,H,W]
    uint8; heavy [B,H,W] fp32 (mode 2); counts [M] zeroed, lists [((M-1+1)//2) * N]
    (int32, or int64 when ``idx64``).
    """
    N = B * H * W
    BM, num_warps = config.dense_launch(light.hp if mode != 2 else 0, prec)
    dummy = Pc if Pc is not None else Pu
    if mode != 1:
        check_chunks(BM, cls_mlp.chunks, cls_mlp.out_p, cls_mlp.one)
        assert cls_mlp.out_p >= M, (cls_mlp.out_p, M)
    if mode != 2:
        check_chunks(BM, light.chunks, light.out_p, light.one)
        assert light.out_p >= 3
    c = cls_mlp if mode != 1 else light
    lt = light if mode != 2 else c
    _dense_kernel[(triton.cdiv(N, BM),)](
        Pc if mode != 1 else dummy, Pc.shape[1] if mode != 1 else 0, c.first, c.wmid, c.bmid, c.wlast, c.blast,
        c.pad_lo, c.num_mid, klogc if klogc is not None else dummy,
        Pu if mode != 2 else dummy, Pu.shape[1] if mode != 2 else 0, light_col, lt.first, lt.wmid, lt.bmid, lt.wlast,
        lt.blast, lt.pad_lo, lt.num_mid,
        g.iy, g.ix, g.ry, g.rx, g.cell_y, g.cell_x, g.by0, g.by1, g.bly, g.bx0, g.bx1, g.blx,
        lr if lr is not None else dummy, out if out is not None else dummy,
        cls_in if cls_in is not None else dummy, cls64 if cls64 is not None else dummy,
        cls8 if cls8 is not None else dummy, heavy if heavy is not None else dummy,
        counts if counts is not None else dummy, lists if lists is not None else dummy,
        N, H * W, W, h * w, w,
        M=M, NH=reference.num_heavy(M), MODE=mode, BM=BM,
        CC0=c.chunks[0], CC1=c.chunks[1], CC2=c.chunks[2], CC3=c.chunks[3], C_OUT=c.out_p, C_ONE=c.one,
        C_REAL=c.real,
        LC0=lt.chunks[0], LC1=lt.chunks[1], LC2=lt.chunks[2], LC3=lt.chunks[3], L_OUT=lt.out_p, L_ONE=lt.one,
        L_REAL=lt.real,
        PREC=prec, IDX64=idx64, num_warps=num_warps, num_stages=1)


def list_buffers(M: int, N: int, idx64: bool, device) -> tuple[torch.Tensor, torch.Tensor]:
    """counts [M] (zeroed) and the index lists of classes 0..M-2 (see the module docstring)."""
    dt = torch.int64 if idx64 else torch.int32
    return (torch.zeros(M, dtype=dt, device=device),
            torch.empty(max(1, (M // 2)) * N, dtype=dt, device=device))
