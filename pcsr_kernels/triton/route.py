"""route: the routing decision from given probabilities [B, H, W, M].

Cost-aware: one kernel, ``argmax_j log(p_j) - k log(cost_j)`` per pixel (first index on
ties, as torch.argmax; branch 0 when a score is NaN, as the reference), with ``k log(cost)`` computed by the same torch expression as the
reference. Adaptive: the heavy mass ``sum_{j < (M+1)//2} p_j`` (the reference's torch
expression, so the values are bit-identical), then ADM on the device (:mod:`.adm`).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import reference, validate
from . import pack
from .adm import adm_into


@triton.jit
def _route_kernel(probs_ptr, klogc_ptr, cls_ptr, N, M: tl.constexpr, MP: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    pix = pid * BLOCK + tl.arange(0, BLOCK)
    mask = pix < N
    col = tl.arange(0, MP)
    valid = (col < M)[None, :]
    p = tl.load(probs_ptr + pix[:, None] * M + col[None, :], mask=mask[:, None] & valid, other=1.0)  # [BLOCK, MP]
    score = tl.where(valid, tl.log(p) - tl.load(klogc_ptr + col, mask=col < M, other=0.0)[None, :], float("-inf"))
    tl.store(cls_ptr + pix, _argmax_or_zero(score, col, MP).to(tl.int64), mask=mask)


@triton.jit
def _argmax_or_zero(score, col, MP: tl.constexpr):
    """Per row of score [rows, MP]: the first index of the maximum (+-inf compare as
    numbers), or 0 when the row holds a NaN (the reference's rule: an unknown decision goes
    to the heaviest branch). Padded columns must hold -inf. NaN is tested explicitly:
    tl.max skips NaN on the GPU, and a row of NaN would match no column at all."""
    nan = tl.max((score != score).to(tl.int32), axis=1) > 0
    best = tl.max(score, axis=1)
    cls = tl.min(tl.where(score == best[:, None], col[None, :], MP), axis=1)
    return tl.where(nan, 0, cls)


def launch_route(probs: torch.Tensor, klogc: torch.Tensor, classes: torch.Tensor) -> None:
    """probs [N, M] fp32 contiguous, klogc [M] fp32 -> classes [N] int64."""
    N, M = probs.shape
    BLOCK = 256
    MP = max(2, triton.next_power_of_2(M))
    _route_kernel[(triton.cdiv(N, BLOCK),)](probs, klogc, classes, N, M=M, MP=MP, BLOCK=BLOCK)


def klog_cost(cost: torch.Tensor, k: float) -> torch.Tensor:
    """``k * log(cost)`` in fp32, exactly as :func:`reference.route_ref` computes it."""
    return (k * torch.log(cost.to(torch.float32))).contiguous()


def route_triton(probs: torch.Tensor, cost: torch.Tensor, k: float = 0.0, adaptive: bool = False) -> torch.Tensor:
    """``torch.ops.pcsr.route`` on the Triton backend: classes [B, H, W] int64."""
    B, H, W, M = validate.route_args(probs, cost, k)
    pack.check_dtype(probs)
    probs = probs.to(torch.float32).contiguous()
    classes = torch.empty(B, H, W, dtype=torch.int64, device=probs.device)
    if B * H * W == 0:
        return classes
    if adaptive:
        heavy = probs[..., : reference.num_heavy(M)].sum(-1)  # [B, H, W], as route_ref
        adm_into(heavy.reshape(B, H * W), M, classes.view(B, H * W))
    else:
        launch_route(probs.view(-1, M), klog_cost(cost, k), classes.view(-1))
    return classes
