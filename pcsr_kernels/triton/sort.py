"""Counting sort of HR pixel indices by class, as MoE routing kernels sort tokens by expert.

Only indices move: a histogram per block of SB pixels, a prefix sum over (block, class)
on the device, then each pixel writes its own index to ``segment start of its class +
pixels of that class in earlier blocks + its rank among them in its block``. The sort is
stable, so each segment stays in raster order and neighbouring lanes of the MLP kernel
gather neighbouring LR features. Each class's segment is padded to a multiple of
``block`` with the sentinel -1, so a block of the per-branch kernel never straddles two
branches. No value is read back to the host: segment starts and lengths stay on the
device and the MLP kernels loop over them.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

SENTINEL = -1


@triton.jit
def _histogram_kernel(cls_ptr, counts_ptr, N, M: tl.constexpr, MP: tl.constexpr, SB: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * SB + tl.arange(0, SB)
    c = tl.load(cls_ptr + offs, mask=offs < N, other=MP).to(tl.int32)
    j = tl.arange(0, MP)
    onehot = (c[:, None] == j[None, :]).to(tl.int32)  # [SB, MP]
    tl.store(counts_ptr + pid * M + j, tl.sum(onehot, axis=0), mask=j < M)


@triton.jit
def _scatter_kernel(cls_ptr, base_ptr, idx_ptr, N, M: tl.constexpr, MP: tl.constexpr, SB: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * SB + tl.arange(0, SB)
    mask = offs < N
    c = tl.load(cls_ptr + offs, mask=mask, other=MP).to(tl.int32)
    j = tl.arange(0, MP)
    onehot = (c[:, None] == j[None, :]).to(tl.int32)  # [SB, MP]
    rank = tl.sum(onehot * tl.cumsum(onehot, axis=0), axis=1) - 1  # earlier pixels of my class in this block
    # Classes come from this package's routing, always in [0, M); the bound is only a
    # guard against writing outside idx should one ever not be (the pixel is then left out).
    mask = mask & (c >= 0) & (c < M)
    c = tl.where(mask, c, 0)
    dest = tl.load(base_ptr + pid * M + c, mask=mask, other=0) + rank
    tl.store(idx_ptr + dest, offs.to(idx_ptr.dtype.element_ty), mask=mask)


def sort_by_class(classes: torch.Tensor, M: int, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """classes [N] int64 in [0, M) -> (idx [N + M*block], seg [M, 2] int64).

    ``idx[seg[j,0] : seg[j,0] + seg[j,1]]`` holds the indices of class j in increasing
    order, then -1 up to the padded length ``seg[j,1]`` (a multiple of ``block``). idx is
    int32 when every index fits, int64 otherwise.
    """
    N = classes.numel()
    SB = 1024
    MP = max(2, triton.next_power_of_2(M))
    nblk = triton.cdiv(N, SB)
    dev = classes.device
    counts = torch.empty(nblk, M, dtype=torch.int32, device=dev)
    _histogram_kernel[(nblk,)](classes, counts, N, M=M, MP=MP, SB=SB)
    tot = counts.sum(0, dtype=torch.int64)  # [M]
    plen = (tot + block - 1) // block * block
    start = torch.cumsum(plen, 0) - plen
    base = start[None, :] + torch.cumsum(counts, 0, dtype=torch.int64) - counts  # [nblk, M]
    size = N + M * block
    idx = torch.full((size,), SENTINEL, dtype=torch.int32 if size < 2**31 else torch.int64, device=dev)
    _scatter_kernel[(nblk,)](classes, base, idx, N, M=M, MP=MP, SB=SB)
    return idx, torch.stack([start, plen], 1).contiguous()
