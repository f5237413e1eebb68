"""upsample: the routed MLP residual plus bilinear(lr) for given classes, on the kernels of
route_upsample: the dense pass (:mod:`.dense`, mode 1: the given classes) runs the lightest
branch and partitions the other classes into index lists, then one persistent kernel per
other branch (:mod:`.branch`). The classes' range is checked on the device (no host
sync); every pixel belongs to exactly one branch, so every output value is written once.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .. import validate
from . import config, pack
from .branch import launch_branch
from .dense import launch_dense, list_buffers
from .route_upsample import index_extents
from .tc_mlp import kernel_precision, needs_int64


def upsample_triton(feat: torch.Tensor, lr: torch.Tensor, classes: torch.Tensor,
                    upsamplers: Sequence[torch.Tensor], depths: Sequence[int], precision: str = "ieee") -> torch.Tensor:
    """``torch.ops.pcsr.upsample`` on the Triton backend: sr [B, 3, H, W], unrefined."""
    B, D, h, w = validate.check_feat(feat)
    validate.check_lr(lr, feat)
    branches = validate.check_branches(upsamplers, depths, feat)
    H, W = validate.check_classes_hw(classes)
    M = len(branches)
    validate.check_classes(classes, B, H, W, M, feat.device, values=False)
    pack.check_dtype(feat)
    validate.check_classes_on_device(classes, M)
    prec = kernel_precision(precision, config.interpreting())
    mlps = [pack.packed_tc(br, D, pack.weight_mode(prec)) for br in branches]
    g = pack.geometry(h, w, H, W, feat.device)
    Pu, cols = pack.lr_precompute(feat, [m.base for m in mlps], pack.weight_mode(prec))
    idx64 = needs_int64(*index_extents(B, h, w, H, W, Pu.shape[1]))
    lr32 = lr.to(torch.float32).contiguous()
    out = torch.empty(B, 3, H, W, dtype=torch.float32, device=feat.device)
    counts, lists = list_buffers(M, B * H * W, idx64, feat.device)
    cls8 = torch.empty(B, H, W, dtype=torch.uint8, device=feat.device)
    launch_dense(1, Pc=None, cls_mlp=None, Pu=Pu, light=mlps[-1], light_col=cols[-1], g=g, B=B, h=h, w=w, H=H, W=W,
                 M=M, prec=prec, idx64=idx64, lr=lr32, out=out, cls_in=classes.contiguous(), cls8=cls8,
                 counts=counts, lists=lists)
    for j in range(M - 1):
        launch_branch(j, mlps[j], Pu, cols[j], g, lists, counts, lr32, out, prec, idx64)
    return out.to(feat.dtype)
