"""FLOPs the computation really performs, beside the paper's count (:mod:`pcsr.flops`).

The paper's rules charge a transposed convolution per *output* element, like a
convolution producing that output: FSRCNN's 9x9 stride-4 tail is charged 16x the
multiply-adds it performs, which is most of FSRCNN's paper count, so the paper's FLOP
ratio of FSRCNN-PCSR to FSRCNN (~0.4) says nothing about the time either takes. The count
here is what this package executes (2 FLOPs per multiply-add, as the paper):

    Conv2d            2 * prod(kernel) * (C_in / groups) * numel(output)     (as the paper)
    ConvTranspose2d   2 * prod(kernel) * (C_out / groups) * numel(input)     (each input
                      element is multiplied into one kernel-sized patch per output channel)
    Linear            2 * in * out * rows                                     (as the paper)
    BatchNorm         0: folded into the preceding convolution at inference
    PReLU             numel (one multiply per element)
    PCSR's MLPs       the first layer split as the kernels run it (DESIGN.md section 3):
                      ``W_z z`` once per LR pixel (for the classifier and every branch), the
                      4 coordinate/cell inputs per HR pixel, the other layers per HR pixel
                      (classifier on every pixel, each branch on its own pixels)

Not counted (as in the paper): activations, additions of residuals, interpolation (the
bilinear base, PixelShuffle), routing, K-means and refinement -- each a few FLOPs per
pixel against thousands for the networks.
"""
from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
import torch.nn as nn

__all__ = ["count_real_flops", "mlp_real_flops", "pcsr_real_flops", "network_real_flops"]


def _leaf(module: nn.Module, inputs: tuple, output) -> int:
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        kernel = math.prod(module.kernel_size)
        return 2 * kernel * (module.out_channels // module.groups) * inputs[0].numel()
    if isinstance(module, nn.modules.conv._ConvNd):
        kernel = math.prod(module.kernel_size)
        return 2 * kernel * (module.in_channels // module.groups) * output.numel()
    if isinstance(module, nn.Linear):
        return 2 * module.in_features * module.out_features * (inputs[0].numel() // module.in_features)
    if isinstance(module, nn.PReLU):
        return inputs[0].numel()
    return 0  # BatchNorm (folded), activations, shuffles: see the module docstring


def count_real_flops(module: nn.Module, shape: Sequence[int]) -> int:
    """Executed FLOPs of ``module`` on an input of ``shape``, counted on a meta-device copy
    (shapes only, no arithmetic)."""
    meta = copy.deepcopy(module).to("meta").eval()
    total = 0

    def hook(mod, args, output):
        nonlocal total
        total += _leaf(mod, args, output)

    for m in meta.modules():
        if next(m.children(), None) is None:
            m.register_forward_hook(hook)
    with torch.no_grad():
        meta(torch.zeros(*shape, device="meta"))
    return total


def mlp_real_flops(widths: Sequence[int], n_hr: int, n_lr: int, coord_inputs: int = 4) -> int:
    """An MLP ``[D + coord_inputs, h_1, ..., out]`` with its first layer split: ``W_z z`` on
    ``n_lr`` LR pixels, the coordinate inputs and the other layers on ``n_hr`` HR pixels."""
    widths = list(widths)
    d = widths[0] - coord_inputs
    first = 2 * d * widths[1] * n_lr + 2 * coord_inputs * widths[1] * n_hr
    rest = sum(2 * a * b * n_hr for a, b in zip(widths[1:-1], widths[2:]))
    return first + rest


def pcsr_real_flops(model, lr_shape: Sequence[int], classes: torch.Tensor) -> int:
    """Executed FLOPs of one PCSR inference: backbone (BatchNorm folded), classifier on every
    HR pixel, each branch on its pixels, first layers split at LR resolution."""
    B, _, h, w = lr_shape
    n_lr = B * h * w
    total = count_real_flops(model.backbone, lr_shape)
    total += mlp_real_flops(model.classifier.widths, classes.numel(), n_lr)
    counts = torch.bincount(classes.reshape(-1).to(torch.int64), minlength=model.num_branches).tolist()
    for u, n in zip(model.upsamplers, counts):
        total += mlp_real_flops(u.widths, int(n), n_lr)
    return total


def network_real_flops(model, lr_shape: Sequence[int]) -> int:
    """Executed FLOPs of an original network (:class:`pcsr.model.SRModel`)."""
    return count_real_flops(model.net, lr_shape)
