"""route_upsample: the whole PCSR upsampling stage on the Triton kernels.

    Pc, Pu   = LR precompute: the classifier's first layer (fp32) and the branches'
               (bf16 in bf16 mode, else fp32), one GEMM each                      [B*h*w, S]
    dense    = K1 over every HR pixel: classifier (fp32 IEEE) + cost-aware argmax,
               the lightest branch, compact index lists of the other classes
               (:mod:`.dense`)                                       classes, sr (light pixels)
             | adaptive: K1 writes the heavy mass, ADM on the device (:mod:`.adm`), then
               K1 on the given classes
    branches = K2 per other branch, persistent over its list (:mod:`.branch`)   sr (the rest)
    refine   = K3 on the uint8 class map (:mod:`.refine`), into a new image

No value is read back to the host (list lengths stay on the device; the op wrapper checks
the cost's values on the device), so a call can be captured in a CUDA graph. Memory: the
output (twice while refining), the int64 classes and a uint8 copy, the index lists (4 bytes
per pixel for M = 2 and 3, 8 for M = 4 and 5), the heavy mass when adaptive, and P.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .. import validate
from . import config, pack
from .adm import adm_into
from .branch import launch_branch
from .dense import launch_dense, list_buffers
from .refine import launch_refine
from .route import klog_cost
from .tc_mlp import kernel_precision, needs_int64


def index_extents(B: int, h: int, w: int, H: int, W: int, p_cols: int) -> tuple[int, ...]:
    """The largest element offsets the kernels form: output values, P entries, LR values."""
    return 3 * B * H * W, B * h * w * p_cols, 3 * B * h * w


def route_upsample_triton(feat: torch.Tensor, lr: torch.Tensor, out_size: Sequence[int],
                          classifier: Sequence[torch.Tensor], upsamplers: Sequence[torch.Tensor],
                          depths: Sequence[int], cost: torch.Tensor, k: float = 0.0,
                          adaptive: bool = False, refine: bool = True,
                          precision: str = "ieee") -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.ops.pcsr.route_upsample`` on the Triton backend: (sr [B,3,H,W], classes [B,H,W] int64)."""
    # The op wrapper checked the values (on the device on CUDA); here only shapes.
    M, H, W, branches = validate.route_upsample_args(feat, lr, out_size, classifier, upsamplers, depths,
                                                     cost, k, values=False)
    pack.check_dtype(feat)
    B, D, h, w = feat.shape
    dev = feat.device
    prec = kernel_precision(precision, config.interpreting())
    cls_mlp = pack.packed_tc(classifier, D, "fp32")
    mlps = [pack.packed_tc(br, D, pack.weight_mode(prec)) for br in branches]
    g = pack.geometry(h, w, H, W, dev)
    Pc, _ = pack.lr_precompute(feat, [cls_mlp.base])  # [B*h*w, Sc] fp32
    Pu, cols = pack.lr_precompute(feat, [m.base for m in mlps], pack.weight_mode(prec))  # [B*h*w, Su]
    idx64 = needs_int64(*index_extents(B, h, w, H, W, max(Pc.shape[1], Pu.shape[1])))
    N = B * H * W
    lr32 = lr.to(torch.float32).contiguous()
    classes = torch.empty(B, H, W, dtype=torch.int64, device=dev)
    cls8 = torch.empty(B, H, W, dtype=torch.uint8, device=dev)
    unrefined = torch.empty(B, 3, H, W, dtype=torch.float32, device=dev)
    counts, lists = list_buffers(M, N, idx64, dev)
    common = dict(Pc=Pc, cls_mlp=cls_mlp, Pu=Pu, light=mlps[-1], light_col=cols[-1], g=g, B=B, h=h, w=w, H=H, W=W,
                  M=M, prec=prec, idx64=idx64, lr=lr32, out=unrefined, cls8=cls8, counts=counts, lists=lists)
    if adaptive:
        heavy = torch.empty(B, H * W, dtype=torch.float32, device=dev)
        launch_dense(2, **common, heavy=heavy)
        adm_into(heavy, M, classes.view(B, H * W))
        del heavy
        launch_dense(1, **common, cls_in=classes)
    else:
        launch_dense(0, **common, klogc=klog_cost(cost, k), cls64=classes)
    for j in range(M - 1):
        launch_branch(j, mlps[j], Pu, cols[j], g, lists, counts, lr32, unrefined, prec, idx64)
    del Pc, Pu, lists
    sr = launch_refine(unrefined, cls8, M) if refine else unrefined
    return sr.to(feat.dtype), classes
