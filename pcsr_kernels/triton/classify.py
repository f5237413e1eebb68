"""classify: nearest feature + classifier MLP + softmax, and optionally the routing decision.

A fixed number of programs stride over blocks of BM consecutive HR pixels (raster order
over B*H*W); per block a program gathers the classifier's first layer from the LR
precompute, runs the rest of the MLP (:mod:`.mlp`), and writes what the caller asked for:
probabilities [B,H,W,M], the cost-aware class ``argmax_j log(p_j) - k log(cost_j)`` (first
index on ties, as torch.argmax; branch 0 when the probabilities are NaN, as the
reference), or the heavy mass ``sum_{j < NH} p_j`` that ADM clusters. Nothing per pixel is
written otherwise.
"""
from __future__ import annotations

from typing import Sequence

import torch
import triton
import triton.language as tl

from .. import reference, validate
from . import config, pack
from .mlp import BK, _pixel_mlp, check_tiles
from .route import _argmax_or_zero


@triton.jit
def _classify_kernel(p_ptr, p_stride, p_col, iy_ptr, ix_ptr, ry_ptr, rx_ptr, cy, cx,
                     first_ptr, scr_ptr, wmid_ptr, bmid_ptr, wlast_ptr, blast_ptr, lo_ptr, NUM_MID,
                     klogc_ptr, probs_ptr, cls_ptr, heavy_ptr,
                     N, HW, W, hw, w,
                     M: tl.constexpr, NH: tl.constexpr, ONE_LAYER: tl.constexpr,
                     BM: tl.constexpr, HP: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                     OUT_P: tl.constexpr, REAL: tl.constexpr, PREC: tl.constexpr,
                     WRITE_PROBS: tl.constexpr, WRITE_CLASSES: tl.constexpr, WRITE_HEAVY: tl.constexpr):
    pid = tl.program_id(0)
    scr = scr_ptr + pid.to(tl.int64) * (2 * BM * HP)
    col = tl.arange(0, OUT_P)
    valid = (col < M)[None, :]
    nblk = (N - 1) // BM + 1  # N >= 1; N + BM - 1 could overflow int32 when N is just under 2^31
    for blk in range(pid, nblk, tl.num_programs(0)):
        pix = (tl.zeros([BM], dtype=tl.int64) + blk) * BM + tl.arange(0, BM)  # int64: B*H*W passes 2^31 for 8K batches
        mask = pix < N
        pix = tl.where(mask, pix, 0)
        logits, _, _, _ = _pixel_mlp(pix, HW, W, hw, w, p_ptr, p_stride, p_col, iy_ptr, ix_ptr, ry_ptr, rx_ptr, cy, cx,
                                     mask, first_ptr, scr, wmid_ptr, bmid_ptr, wlast_ptr, blast_ptr, lo_ptr, NUM_MID,
                                     ONE_LAYER, BM, HP, BN, BK, OUT_P, REAL, PREC)
        logits = tl.where(valid, logits, float("-inf"))
        e = tl.exp(logits - tl.max(logits, axis=1)[:, None])
        e = tl.where(valid, e, 0.0)
        p = tl.math.div_rn(e, tl.sum(e, axis=1)[:, None])  # [BM, OUT_P]; 0 in padded columns
        if WRITE_PROBS:
            tl.store(probs_ptr + pix[:, None] * M + col[None, :], p, mask=mask[:, None] & valid)
        if WRITE_CLASSES:
            # log(p) as the reference takes it (an underflowed p is -inf there too).
            score = tl.log(tl.where(valid, p, 1.0)) - tl.load(klogc_ptr + col, mask=col < M, other=0.0)[None, :]
            score = tl.where(valid, score, float("-inf"))
            tl.store(cls_ptr + pix, _argmax_or_zero(score, col, OUT_P).to(tl.int64), mask=mask)
        if WRITE_HEAVY:
            tl.store(heavy_ptr + pix, tl.sum(tl.where((col < NH)[None, :], p, 0.0), axis=1), mask=mask)


def launch_classify(P: torch.Tensor, p_col: int, g: pack.Geometry, mlp: pack.PackedMLP,
                    B: int, h: int, w: int, H: int, W: int, M: int, *,
                    probs: torch.Tensor | None = None, classes: torch.Tensor | None = None,
                    klogc: torch.Tensor | None = None, heavy: torch.Tensor | None = None) -> None:
    """Run the classifier over every HR pixel; write whichever of probs [B,H,W,M] fp32,
    classes [B,H,W] int64 (needs klogc [M] = k*log(cost)) and heavy [B,H,W] fp32 are given."""
    N = B * H * W
    BM = config.MLP_BLOCK_M
    check_tiles(BM, mlp.hp, mlp.bn, mlp.out_p, mlp.num_layers)
    assert mlp.out_p >= M, (mlp.out_p, M)
    nprog = config.persistent_programs(P.device, triton.cdiv(N, BM))
    scratch = P.new_empty(nprog * 2 * BM * mlp.hp if mlp.num_layers > 1 else 1)
    dummy = P
    _classify_kernel[(nprog,)](
        P, P.shape[1], p_col, g.iy, g.ix, g.ry, g.rx, g.cell_y, g.cell_x,
        mlp.first, scratch, mlp.wmid, mlp.bmid, mlp.wlast, mlp.blast, mlp.pad_lo, mlp.num_mid,
        klogc if klogc is not None else dummy, probs if probs is not None else dummy,
        classes if classes is not None else dummy, heavy if heavy is not None else dummy,
        N, H * W, W, h * w, w,
        M=M, NH=reference.num_heavy(M), ONE_LAYER=mlp.num_layers == 1, BM=BM, HP=mlp.hp, BN=max(mlp.bn, 16),
        BK=BK, OUT_P=mlp.out_p, REAL=mlp.real_cols([mlp.bn] * (mlp.hp // mlp.bn)) if mlp.bn else 0,
        PREC="ieee",  # the classifier is always fp32 IEEE
        WRITE_PROBS=probs is not None, WRITE_CLASSES=classes is not None, WRITE_HEAVY=heavy is not None,
        num_warps=config.mlp_num_warps(mlp.bn), num_stages=config.MLP_NUM_STAGES)


def classify_triton(feat: torch.Tensor, out_size: Sequence[int], classifier: Sequence[torch.Tensor]) -> torch.Tensor:
    """``torch.ops.pcsr.classify`` on the Triton backend: probs [B, H, W, M]."""
    B, D, h, w = validate.check_feat(feat)
    H, W = validate.check_out_size(out_size)
    widths = validate.check_mlp("classifier", classifier, D + 4, None, feat.dtype, feat.device)
    M = widths[-1]
    pack.check_dtype(feat)
    mlp = pack.packed_mlp(classifier, D)
    g = pack.geometry(h, w, H, W, feat.device)
    P, cols = pack.lr_precompute(feat, [mlp])
    probs = torch.empty(B, H, W, M, dtype=torch.float32, device=feat.device)
    launch_classify(P, cols[0], g, mlp, B, h, w, H, W, M, probs=probs)
    return probs.to(feat.dtype)

