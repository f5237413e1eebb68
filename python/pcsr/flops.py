"""FLOPs counted the way the PCSR paper's tables count them, and PCSR's routing cost vector.

Counting rules (the authors' ``get_model_flops``): a forward hook on every leaf module that
actually runs, once per call (a module used three times counts three times), with

    Conv / ConvTranspose   2 * prod(kernel) * (C_in / groups) * numel(output)
    Linear                 2 * in_features * out_features * (numel(input) / in_features)
    BatchNorm (affine)     2 * numel(input)
    InstanceNorm (affine)  6 * numel(input)
    LayerNorm (affine)     8 * numel(input)
    PReLU                  numel(input)
    parameter-free leaves  0   (ReLU, LeakyReLU, PixelShuffle, Upsample, Dropout, ...)

Biases are not counted, nor is anything outside a leaf module (functional calls such as
``F.relu``, ``F.grid_sample``, additions, K-means, refinement).  Two consequences of the rules
that look odd but are what the published numbers are made of:

* a transposed convolution is charged per *output* element, like a convolution producing that
  output, i.e. ``stride^2`` times its real multiply-adds (FSRCNN's 9x9 stride-4 tail is 16x
  what it computes).  The paper's FSRCNN/CARN/SRResNet ratios (e.g. Test8K 1067.8 / 2638.6 /
  11850.7 GFLOPs) match this rule and no other;
* the norm layers are only charged when affine (the authors' hook keys on the ``weight``
  parameter), so a non-affine BatchNorm costs 0.

A leaf module of any other type that holds parameters raises ``ValueError`` (the authors'
counter stops there too) rather than being silently counted as free.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

__all__ = ["count_flops", "mlp_flops", "cost_vector", "branch_pixels_16x16"]

_NORM_FACTORS = (
    (nn.modules.batchnorm._BatchNorm, 2),
    (nn.modules.instancenorm._InstanceNorm, 6),
    (nn.LayerNorm, 8),
)


def _is_count(v) -> bool:
    """A non-negative int (bools excluded: ``True`` is an int to Python, not a FLOP count)."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _leaf_flops(module: nn.Module, inputs: tuple, output) -> int:
    """FLOPs of one call of a leaf module under the rules of the module docstring."""
    if isinstance(module, nn.modules.conv._ConvNd):
        out = output[0] if isinstance(output, (tuple, list)) else output
        kernel = math.prod(module.kernel_size)
        return 2 * kernel * (module.in_channels // module.groups) * out.numel()
    if isinstance(module, nn.Linear):
        x = inputs[0]
        rows = x.numel() // module.in_features
        return 2 * rows * module.in_features * module.out_features
    for cls, factor in _NORM_FACTORS:
        if isinstance(module, cls):
            affine = getattr(module, "weight", None) is not None
            return factor * inputs[0].numel() if affine else 0
    if isinstance(module, nn.PReLU):
        return inputs[0].numel()
    if next(module.parameters(recurse=False), None) is None:
        return 0
    raise ValueError(
        f"count_flops: no counting rule for {type(module).__name__}, a leaf module with "
        f"parameters {[n for n, _ in module.named_parameters(recurse=False)]}"
    )


def count_flops(module: nn.Module, *args, **kwargs) -> int:
    """Run ``module(*args, **kwargs)`` under ``torch.no_grad`` and return the FLOPs it spent.

    Only leaf modules (no children) are hooked; a module called several times is counted on
    every call.  The call runs in eval mode, as the authors' counter does (so a BatchNorm in
    training does not fold the probe input into its running statistics), and every
    submodule's train/eval flag is restored afterwards, as are the hooks, even on an
    exception.  Shapes are all the rules need, so a model moved to ``"meta"`` counts a huge
    input for free.
    """
    if not isinstance(module, nn.Module):
        raise ValueError(f"count_flops: module must be an nn.Module, got {type(module).__name__}")
    total = 0

    def hook(mod, args, kw, output):
        nonlocal total
        # A leaf called with its input as a keyword still has one input to measure.
        inputs = args if args else tuple(kw.values())
        total += _leaf_flops(mod, inputs, output)

    modes = [(m, m.training) for m in module.modules()]
    handles = []
    try:
        for m in module.modules():
            if next(m.children(), None) is None:
                handles.append(m.register_forward_hook(hook, with_kwargs=True))
        module.eval()
        with torch.no_grad():
            module(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
        for m, training in modes:  # per module: a parent's train() would overwrite children
            m.training = training
    return total


def mlp_flops(widths: list[int], n: int) -> int:
    """FLOPs of an MLP with layer widths ``[in, h_1, ..., out]`` on ``n`` inputs.

    ``sum_l 2 * widths[l] * widths[l + 1] * n``: the Linear layers only (bias and ReLU are free),
    equal to what :func:`count_flops` gives for the ``Linear -> ReLU -> ... -> Linear`` module.
    """
    if len(widths) < 2:
        raise ValueError(f"mlp_flops: widths needs at least [in, out], got {list(widths)}")
    if not all(_is_count(v) and v >= 1 for v in widths):
        raise ValueError(f"mlp_flops: widths must be ints >= 1, got {list(widths)}")
    if not _is_count(n):
        raise ValueError(f"mlp_flops: n must be an int >= 0, got {n!r}")
    return sum(2 * a * b * n for a, b in zip(widths[:-1], widths[1:]))


def branch_pixels_16x16(scale: float) -> int:
    """HR pixels made from a 16x16 LR input at ``scale``: ``round(16 * scale) ** 2``.

    The authors size that HR grid with Python's ``round`` (half to even), per side.
    """
    number = isinstance(scale, (int, float)) and not isinstance(scale, bool)
    if not (number and math.isfinite(scale) and scale > 0):
        raise ValueError(f"branch_pixels_16x16: scale must be a finite number > 0, got {scale!r}")
    side = round(16 * scale)
    if side < 1:
        raise ValueError(f"branch_pixels_16x16: scale={scale} makes no HR pixel from 16x16")
    return side * side


def cost_vector(backbone_flops_16x16: int, branch_flops_16x16: list[int]) -> torch.Tensor:
    """Relative cost of each branch: ``cost_j = (B + U_j) / sum_i (B + U_i)``, float32 ``[M]``.

    ``B`` is the backbone's FLOPs on a 16x16 LR input and ``U_j`` branch ``j``'s FLOPs on the
    ``branch_pixels_16x16(scale)`` HR pixels that input makes (classifier not included).  The
    authors normalise by the sum (not a softmax, whatever the paper's text says) and in float32;
    the same float32 steps are taken here so that ``p_j / cost_j^k`` ties break as theirs do.
    Branch order is the caller's (this project: 0 = heaviest).
    """
    if not _is_count(backbone_flops_16x16):
        raise ValueError(
            f"cost_vector: backbone_flops_16x16 must be an int >= 0, got {backbone_flops_16x16!r}"
        )
    branches = list(branch_flops_16x16)
    if not branches:
        raise ValueError("cost_vector: branch_flops_16x16 is empty; need one entry per branch")
    if not all(_is_count(v) for v in branches):
        raise ValueError(f"cost_vector: branch_flops_16x16 must be ints >= 0, got {branches}")
    if backbone_flops_16x16 + sum(branches) == 0:
        raise ValueError("cost_vector: all costs are 0; nothing to normalise")
    cost = torch.tensor(branches, dtype=torch.float32) + backbone_flops_16x16  # [M]
    return cost / cost.sum()
