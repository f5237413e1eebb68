"""ADM (adaptive decision) on the device: 1-D K-means of each image's heavy mass.

The same algorithm, step for step, as :func:`pcsr_kernels.reference.adm_ref`, with no
value read back to the host. Each Lloyd step is two launches:

* ``_lloyd_partial_kernel`` (grid: blocks x images) normalises its values
  ``v = (s - lo) / (hi - lo)`` (correctly rounded, as torch divides), assigns each to the
  nearest centre (ties to the lower index, as torch.argmin) and writes per-block sums of
  v (fp32) and counts (int32) per cluster;
* ``_lloyd_update_kernel`` (grid: images) reduces the partials in a fixed order (fp64
  sums, integer counts: deterministic, and more accurate than the reference's fp32
  ``scatter_add``, whose counts stop at 2^24), forms the new centres, the summed squared
  shift, and raises the image's ``done`` flag when it is <= 1e-4.

The host launches the fixed worst case of 19 steps; once an image is done its programs
return at once, so the early stop costs a few empty launches instead of a host sync.
The labels are those of the last executed assignment (from the centres kept in
``prev``), ranked by the final centres: highest centre -> branch 0, ties by index (a
stable descending sort). M = 2 starts with the authors' single-centre step, which the
same kernels run with every value in cluster 0: centres (mean, 0).

Non-finite heavy mass (NaN, +-inf), as adm_ref: left out of lo/hi and of every sum and
count, labelled branch 0.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..reference import ADM_MAX_STEPS, ADM_TOL


@triton.jit
def _lloyd_partial_kernel(s_ptr, lo_ptr, hi_ptr, cen_ptr, done_ptr, psum_ptr, pcnt_ptr, NI, nblk,
                          M: tl.constexpr, MP: tl.constexpr, SB: tl.constexpr, SINGLE: tl.constexpr):
    blk = tl.program_id(0)
    b = tl.program_id(1)
    if tl.load(done_ptr + b) == 0:
        offs = blk.to(tl.int64) * SB + tl.arange(0, SB)
        mask = offs < NI
        lo = tl.load(lo_ptr + b)
        hi = tl.load(hi_ptr + b)
        s = tl.load(s_ptr + b.to(tl.int64) * NI + offs, mask=mask, other=0.0)
        mask = mask & (tl.abs(s) < float("inf"))  # finite values only (false for NaN too)
        v = tl.math.div_rn(s - lo, hi - lo)
        lab = tl.zeros([SB], dtype=tl.int32)
        if not SINGLE:
            best = tl.abs(v - tl.load(cen_ptr + b * MP))
            for j in tl.static_range(1, M):
                d = tl.abs(v - tl.load(cen_ptr + b * MP + j))
                lab = tl.where(d < best, j, lab)
                best = tl.minimum(d, best)
        col = tl.arange(0, MP)
        hit = (lab[:, None] == col[None, :]) & mask[:, None]  # [SB, MP]
        out = (b.to(tl.int64) * nblk + blk) * MP + col
        tl.store(psum_ptr + out, tl.sum(tl.where(hit, v[:, None], 0.0), axis=0))
        tl.store(pcnt_ptr + out, tl.sum(hit.to(tl.int32), axis=0))


@triton.jit
def _lloyd_update_kernel(psum_ptr, pcnt_ptr, cen_ptr, prev_ptr, done_ptr, nblk, tol,
                         M: tl.constexpr, MP: tl.constexpr, RB: tl.constexpr,
                         INIT: tl.constexpr, EMPTY_TO_ZERO: tl.constexpr):
    b = tl.program_id(0)
    if tl.load(done_ptr + b) == 0:
        col = tl.arange(0, MP)
        acc_s = tl.zeros([MP], dtype=tl.float64)
        acc_c = tl.zeros([MP], dtype=tl.int64)
        for i in range(0, nblk, RB):
            rows = i + tl.arange(0, RB)
            at = (b.to(tl.int64) * nblk + rows)[:, None] * MP + col[None, :]
            m = (rows < nblk)[:, None]
            acc_s += tl.sum(tl.load(psum_ptr + at, mask=m, other=0.0).to(tl.float64), axis=0)
            acc_c += tl.sum(tl.load(pcnt_ptr + at, mask=m, other=0).to(tl.int64), axis=0)
        c = tl.load(cen_ptr + b * MP + col)
        mean = (acc_s / tl.maximum(acc_c, 1).to(tl.float64)).to(tl.float32)
        if EMPTY_TO_ZERO:
            new = tl.where(acc_c > 0, mean, 0.0)
        else:
            new = tl.where(acc_c > 0, mean, c)
        new = tl.where(col < M, new, 0.0)
        tl.store(cen_ptr + b * MP + col, new)
        if not INIT:
            tl.store(prev_ptr + b * MP + col, c)
            d = new - c
            shift = tl.sum(d * d, axis=0)
            tl.store(done_ptr + b, (shift <= tol).to(tl.int32))


@triton.jit
def _adm_label_kernel(s_ptr, lo_ptr, hi_ptr, cen_ptr, prev_ptr, out_ptr, NI,
                      M: tl.constexpr, MP: tl.constexpr, SB: tl.constexpr):
    blk = tl.program_id(0)
    b = tl.program_id(1)
    offs = blk.to(tl.int64) * SB + tl.arange(0, SB)
    mask = offs < NI
    lo = tl.load(lo_ptr + b)
    hi = tl.load(hi_ptr + b)
    span = tl.where(hi > lo, hi - lo, 1.0)  # a constant image's labels are overwritten below
    s = tl.load(s_ptr + b.to(tl.int64) * NI + offs, mask=mask, other=0.0)
    finite = tl.abs(s) < float("inf")
    v = tl.math.div_rn(s - lo, span)
    lab = tl.zeros([SB], dtype=tl.int32)
    best = tl.abs(v - tl.load(prev_ptr + b * MP))
    for j in tl.static_range(1, M):
        d = tl.abs(v - tl.load(prev_ptr + b * MP + j))
        lab = tl.where(d < best, j, lab)
        best = tl.minimum(d, best)
    # rank of cluster j = centres above it + equal centres before it (stable descending sort)
    col = tl.arange(0, MP)
    cen = tl.load(cen_ptr + b * MP + col)
    out = tl.zeros([SB], dtype=tl.int32)
    for j in tl.static_range(M):
        cj = tl.load(cen_ptr + b * MP + j)
        rank = tl.sum(((col < M) & ((cen > cj) | ((cen == cj) & (col < j)))).to(tl.int32), axis=0)
        out = tl.where(lab == j, rank, out)
    out = tl.where(hi > lo, out, M - 1)  # a constant image is all light, as adm_ref
    out = tl.where(finite, out, 0)  # an unknown decision goes to the heaviest branch
    tl.store(out_ptr + b.to(tl.int64) * NI + offs, out.to(tl.int64), mask=mask)


def adm_into(heavy: torch.Tensor, M: int, out: torch.Tensor) -> None:
    """heavy [B, NI] fp32 contiguous -> out [B, NI] int64: each row clustered as adm_ref does."""
    B, NI = heavy.shape
    if B > 65535:  # the images are the grids' second axis, which CUDA caps at 65535
        raise ValueError(f"the triton backend's ADM takes at most 65535 images per call, got B = {B}; "
                         "split the batch")
    dev = heavy.device
    SB, RB = 1024, 64
    MP = max(2, triton.next_power_of_2(M))
    nblk = triton.cdiv(NI, SB)
    # [B]: over the finite values (an image with none gets lo = inf > hi = -inf)
    finite = torch.isfinite(heavy)
    lo = heavy.masked_fill(~finite, float("inf")).amin(1)
    hi = heavy.masked_fill(~finite, float("-inf")).amax(1)
    del finite
    done = (~(hi > lo)).to(torch.int32)  # nothing to cluster in a constant image
    cen = torch.zeros(B, MP, dtype=torch.float32, device=dev)
    prev = torch.zeros_like(cen)
    psum = torch.empty(B, nblk, MP, dtype=torch.float32, device=dev)
    pcnt = torch.empty(B, nblk, MP, dtype=torch.int32, device=dev)
    common = dict(M=M, MP=MP)

    def step(single: bool, init: bool):
        _lloyd_partial_kernel[(nblk, B)](heavy, lo, hi, cen, done, psum, pcnt, NI, nblk, SB=SB, SINGLE=single, **common)
        _lloyd_update_kernel[(B,)](psum, pcnt, cen, prev, done, nblk, ADM_TOL, RB=RB, INIT=init,
                                   EMPTY_TO_ZERO=M == 2, **common)

    if M == 2:  # the authors' first step: one centre -> (mean, 0)
        step(single=True, init=True)
    else:  # evenly spaced, computed as adm_ref does
        cen[:, :M] = (2 * torch.arange(M, dtype=torch.float32, device=dev) + 1) / (2 * M)
    for _ in range(ADM_MAX_STEPS - 1):
        step(single=False, init=False)
    _adm_label_kernel[(nblk, B)](heavy, lo, hi, cen, prev, out, NI, SB=SB, **common)
