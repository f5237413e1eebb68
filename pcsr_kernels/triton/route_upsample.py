"""route_upsample: the whole PCSR upsampling stage on the Triton kernels.

    P        = LR precompute of every first layer (classifier and branches), one GEMM  [B*h*w, S]
    classes  = classify kernel with the cost-aware argmax fused in                    [B, H, W]
             | classify kernel writing the heavy mass, then ADM on the device         (adaptive)
    sr       = counting sort by class + one fused MLP kernel per branch               [B, 3, H, W]
    sr       = refine kernel (reads the unrefined image, writes a new one)            (refine)

Memory: the output (twice while refining), the class map, the sorted indices, the heavy
mass when adaptive, and LR-sized buffers (P: S floats per LR pixel). No per-pixel input
matrix and no probabilities are ever materialised, and nothing is read back to the host
after argument validation.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .. import validate
from . import pack
from .adm import adm_into
from .classify import launch_classify
from .refine import launch_refine
from .route import klog_cost
from .upsample import launch_upsample


def route_upsample_triton(feat: torch.Tensor, lr: torch.Tensor, out_size: Sequence[int],
                          classifier: Sequence[torch.Tensor], upsamplers: Sequence[torch.Tensor],
                          depths: Sequence[int], cost: torch.Tensor, k: float = 0.0,
                          adaptive: bool = False, refine: bool = True,
                          precision: str = "ieee") -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.ops.pcsr.route_upsample`` on the Triton backend: (sr [B,3,H,W], classes [B,H,W] int64)."""
    # The op wrapper already checked every value; here only shapes (no host sync).
    M, H, W, branches = validate.route_upsample_args(feat, lr, out_size, classifier, upsamplers, depths,
                                                     cost, k, values=False)
    pack.check_dtype(feat)
    B, D, h, w = feat.shape
    cls_mlp = pack.packed_mlp(classifier, D)
    mlps = [pack.packed_mlp(br, D) for br in branches]
    g = pack.geometry(h, w, H, W, feat.device)
    P, cols = pack.lr_precompute(feat, [cls_mlp, *mlps])  # [B*h*w, S]
    classes = torch.empty(B, H, W, dtype=torch.int64, device=feat.device)
    if adaptive:
        heavy = torch.empty(B, H * W, dtype=torch.float32, device=feat.device)
        launch_classify(P, cols[0], g, cls_mlp, B, h, w, H, W, M, heavy=heavy)
        adm_into(heavy, M, classes.view(B, H * W))
        del heavy
    else:
        launch_classify(P, cols[0], g, cls_mlp, B, h, w, H, W, M, classes=classes, klogc=klog_cost(cost, k))
    sr = torch.empty(B, 3, H, W, dtype=torch.float32, device=feat.device)
    launch_upsample(P, cols[1:], g, mlps, lr.to(torch.float32).contiguous(), classes, sr, precision)
    del P
    if refine:
        sr = launch_refine(sr, classes, M)
    return sr.to(feat.dtype), classes
