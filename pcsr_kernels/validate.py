"""Argument checks shared by every backend and by the fake (meta) kernels.

Each check raises ``ValueError`` (``TypeError`` for a wrong type) whose message names
the argument and prints the sizes that were wrong. They only read shapes, dtypes and
devices, so they also run on meta/fake tensors under ``torch.compile``.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _fmt(t: torch.Tensor) -> str:
    return f"{tuple(t.shape)} {str(t.dtype).replace('torch.', '')} on {t.device}"


def check_tensor(name: str, t, ndim: int | None = None, dtype=None, device=None) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if dtype is not None and t.dtype != dtype:
        raise ValueError(f"{name} must be {str(dtype).replace('torch.', '')} (as feat), got {_fmt(t)}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} must be on {device} (as feat), got {_fmt(t)}")


def check_feat(feat) -> tuple[int, int, int, int]:
    """feat [B, D, h, w], floating, non-empty."""
    check_tensor("feat", feat, 4)
    if feat.dtype not in FLOAT_DTYPES:
        raise ValueError(f"feat must be floating point (float32/float64/float16/bfloat16), got {_fmt(feat)}")
    B, D, h, w = feat.shape
    if B == 0 or D == 0 or h == 0 or w == 0:
        raise ValueError(f"feat is empty: shape {tuple(feat.shape)} (expected [B, D, h, w] with every size > 0)")
    return B, D, h, w


def check_out_size(out_size: Sequence[int]) -> tuple[int, int]:
    if len(out_size) != 2:
        raise ValueError(f"out_size must be (H, W), got {list(out_size)}")
    H, W = out_size
    if isinstance(H, int) and isinstance(W, int) and (H <= 0 or W <= 0):
        raise ValueError(f"out_size must be positive, got (H, W) = ({H}, {W})")
    return H, W


def check_mlp(name: str, params: Sequence[torch.Tensor], in_dim: int, out_dim: int | None,
              dtype, device) -> list[int]:
    """A flat [W0, b0, W1, b1, ...] list in nn.Linear layout whose widths chain.

    Returns the widths ``[in, h1, ..., out]``.
    """
    if len(params) == 0 or len(params) % 2:
        raise ValueError(f"{name} must be a flat list [W0, b0, W1, b1, ...] of nn.Linear pairs, got {len(params)} tensors")
    widths = [in_dim]
    for i in range(0, len(params), 2):
        Wt, b = params[i], params[i + 1]
        check_tensor(f"{name}[{i}] (weight of layer {i // 2})", Wt, 2, dtype, device)
        check_tensor(f"{name}[{i + 1}] (bias of layer {i // 2})", b, 1, dtype, device)
        if Wt.shape[1] != widths[-1]:
            what = "D+4" if i == 0 else f"the previous layer's output width {widths[-1]}"
            raise ValueError(
                f"{name}: layer {i // 2} weight has shape {tuple(Wt.shape)} but its input width must be {what} = {widths[-1]}"
            )
        if b.shape[0] != Wt.shape[0]:
            raise ValueError(f"{name}: layer {i // 2} bias has shape {tuple(b.shape)}, weight {tuple(Wt.shape)}: widths do not match")
        widths.append(Wt.shape[0])
    if out_dim is not None and widths[-1] != out_dim:
        raise ValueError(f"{name}: last layer outputs {widths[-1]} values, expected {out_dim}")
    return widths


def split_branches(upsamplers: Sequence[torch.Tensor], depths: Sequence[int]) -> list[list[torch.Tensor]]:
    """Cut the flat list of every branch's [W, b] pairs into one list per branch."""
    if len(depths) < 2:
        raise ValueError(f"depths must name at least 2 branches (M >= 2), got depths={list(depths)}")
    for j, d in enumerate(depths):
        if d < 1:
            raise ValueError(f"depths[{j}] = {d}: every branch needs at least one Linear layer")
    need = 2 * sum(depths)
    if len(upsamplers) != need:
        raise ValueError(
            f"upsamplers holds {len(upsamplers)} tensors but depths={list(depths)} needs 2*sum(depths) = {need}"
        )
    out, at = [], 0
    for d in depths:
        out.append(list(upsamplers[at:at + 2 * d]))
        at += 2 * d
    return out


def check_branches(upsamplers: Sequence[torch.Tensor], depths: Sequence[int], feat) -> list[list[torch.Tensor]]:
    """Split the upsamplers per branch and check every branch: D+4 inputs (feat's D), 3 outputs."""
    branches = split_branches(upsamplers, depths)
    D = feat.shape[1]
    for j, br in enumerate(branches):
        check_mlp(f"upsamplers (branch {j})", br, D + 4, 3, feat.dtype, feat.device)
    return branches


def check_cost(cost, M: int, device, values: bool = True) -> None:
    check_tensor("cost", cost, 1, None, device)
    if cost.shape[0] != M:
        raise ValueError(f"cost must have one entry per branch: M = {M}, got shape {tuple(cost.shape)}")
    if not cost.is_floating_point():
        raise ValueError(f"cost must be floating point, got {_fmt(cost)}")
    if values:  # reads the data: skipped by the fake kernels
        if not bool((torch.isfinite(cost) & (cost > 0)).all()):  # one host sync on CUDA
            raise ValueError(f"cost entries must be finite and > 0, got {cost.tolist()}")


def check_k(k: float) -> None:
    if not math.isfinite(k):
        raise ValueError(f"k must be finite, got {k}")


def check_lr(lr, feat) -> None:
    check_tensor("lr", lr, 4, feat.dtype, feat.device)
    B, _, h, w = feat.shape
    if lr.shape[0] != B or lr.shape[1] != 3 or lr.shape[2] != h or lr.shape[3] != w:
        raise ValueError(f"lr must be [B, 3, h, w] = [{B}, 3, {h}, {w}] to match feat {tuple(feat.shape)}, got {tuple(lr.shape)}")


def check_classes(classes, B: int, H, W, M: int, device, values: bool = True) -> None:
    check_tensor("classes", classes, 3, torch.int64, device)
    if tuple(classes.shape) != (B, H, W):
        raise ValueError(f"classes must be [B, H, W] = [{B}, {H}, {W}], got {tuple(classes.shape)}")
    if values and classes.numel():  # reads the data: skipped by the fake kernels
        lo, hi = int(classes.min()), int(classes.max())
        if lo < 0 or hi >= M:
            raise ValueError(f"classes must lie in [0, M) = [0, {M}), got values in [{lo}, {hi}]")


def route_upsample_args(feat, lr, out_size, classifier, upsamplers, depths, cost, k, values: bool = True):
    """All checks of route_upsample. Returns (M, H, W, branches) with branches split."""
    _, D, _, _ = check_feat(feat)
    check_lr(lr, feat)
    H, W = check_out_size(out_size)
    branches = split_branches(upsamplers, depths)
    M = len(depths)
    check_mlp("classifier", classifier, D + 4, M, feat.dtype, feat.device)
    for j, br in enumerate(branches):
        check_mlp(f"upsamplers (branch {j})", br, D + 4, 3, feat.dtype, feat.device)
    check_cost(cost, M, feat.device, values)
    check_k(k)
    return M, H, W, branches


def route_args(probs, cost, k) -> tuple[int, int, int, int]:
    """All checks of route. Returns (B, H, W, M) of probs [B, H, W, M]."""
    check_tensor("probs", probs, 4)
    if not probs.is_floating_point():
        raise ValueError(f"probs must be floating point, got {probs.dtype}")
    B, H, W, M = probs.shape
    if M < 2:
        raise ValueError(f"probs must have M >= 2 branches in its last dimension, got shape {tuple(probs.shape)}")
    check_cost(cost, M, probs.device)
    check_k(k)
    return B, H, W, M


def check_classes_hw(classes) -> tuple[int, int]:
    """classes [B, H, W] with a non-empty output; returns (H, W)."""
    check_tensor("classes", classes, 3)
    H, W = classes.shape[1:]
    if H == 0 or W == 0:
        raise ValueError(f"classes must be [B, H, W] with H, W > 0, got {tuple(classes.shape)}")
    return H, W


def upsample_args(feat, lr, classes, upsamplers, depths):
    """All checks of upsample. Returns (B, D, h, w, H, W, branches), H, W from classes
    [B, H, W] and branches split."""
    B, D, h, w = check_feat(feat)
    check_lr(lr, feat)
    branches = check_branches(upsamplers, depths, feat)
    H, W = check_classes_hw(classes)
    check_classes(classes, B, H, W, len(branches), feat.device)
    return B, D, h, w, H, W, branches


def refine_args(sr, classes, num_branches: int) -> tuple[int, int, int]:
    """All checks of refine. Returns (B, H, W) of sr [B, 3, H, W]."""
    check_tensor("sr", sr, 4)
    if sr.shape[1] != 3:
        raise ValueError(f"sr must be [B, 3, H, W], got {tuple(sr.shape)}")
    if num_branches < 2:
        raise ValueError(f"num_branches must be >= 2, got {num_branches}")
    B, _, H, W = sr.shape
    check_classes(classes, B, H, W, num_branches, sr.device)
    return B, H, W


# --- checks that never wait for the device (the triton backend on CUDA) ----------------------

def check_cost_on_device(cost) -> None:
    """The value check of ``cost`` (finite and > 0) without a host sync. On CUDA a
    device-side assertion (``torch._assert_async``): the next synchronising call fails
    with this message and, as after every device assertion, the CUDA context is unusable.
    On the CPU (no sync to avoid) the ValueError of :func:`check_cost`. Shapes are checked
    by :func:`check_cost` with ``values=False``."""
    if cost.device.type == "cpu":
        check_cost(cost, cost.shape[0], cost.device)
        return
    torch._assert_async(torch.isfinite(cost).all() & (cost > 0).all(),
                        f"cost entries must be finite and > 0 (cost of shape {tuple(cost.shape)})")


def check_classes_on_device(classes, M: int) -> None:
    """``classes`` in [0, M) without a host sync (as :func:`check_cost_on_device`)."""
    if classes.device.type == "cpu":
        check_classes(classes, *classes.shape, M, classes.device)
    elif classes.numel():
        torch._assert_async(((classes >= 0) & (classes < M)).all(),
                            f"classes must lie in [0, M) = [0, {M}) (classes of shape {tuple(classes.shape)})")
