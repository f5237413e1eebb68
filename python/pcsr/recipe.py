"""The training recipe (DESIGN.md §1): the paper's variants, the per-phase network and
which parameters it trains, the loss, the learning-rate schedule, validation.

Phases, for a model with M upsamplers (branch 0 the heaviest):

* phase 0: backbone + upsampler 0, ``L1(bilinear(lr) + U_0, hr)``;
* phase j >= 1: everything trained so far is frozen (``requires_grad=False``, eval mode, so
  BatchNorm keeps its statistics); upsampler j and the classifier (new at j = 1) are trained
  on the soft mixture over the branches ``0..j``::

      pred  = bilinear(lr) + sum_{i<=j} p_i U_i,   p = softmax(classifier logits 0..j)
      loss  = w_recon * L1(pred, hr) + w_avg * L_avg
      L_avg = 1/2 sum_{i<=j} |sum_n p_ni - N/(j+1)| / (N/(j+1))     (N pixels of the batch)

  For two branches this is the authors' term exactly, ``|sum_n p_n,heavy - N/2| / (N/2)``:
  the sum over the branches counts every misplaced unit of probability twice (once where
  it is in excess, once where it is missing), hence the 1/2. Without it L_avg weighs twice
  what the authors' recipe gives it. Under DDP the sums run over the global batch (a
  differentiable all-reduce), as on one process.

``heavy_share`` (``pcsr train --heavy-share``; default off, the authors' balance) moves
the targets: the heavy branches of the phase (the first ceil((j+1)/2)) together get that
share of the mass, the light ones the rest. The balance is what places the classifier's
threshold: at convergence the heavy share of the training pixels is the share whose gain
from the heavy branch is largest, so on a data set where fewer pixels than the share gain
anything (flat art, soft photographs) the threshold falls among flat pixels, and there
the only systematic difference left is the sub-pixel position.

The frozen modules stay in eval mode for the whole phase, validation included (CARN's
BatchNorm must neither normalise with batch statistics nor update its running ones).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import hr_coord
from .metrics import psnr
from .model import PCSR, make_mlp_input

# The paper's variants (x4): backbone arguments, branch widths (heaviest first), classifier,
# and the authors' learning rate.
VARIANTS = {
    "fsrcnn": dict(backbone_args={"d": 48, "s": 12, "m": 4}, upsamplers=[[58] * 4, [10] * 3], classifier=[], lr=1e-3),
    "carn": dict(backbone_args={"nf": 52, "group": 4}, upsamplers=[[74] * 4, [20] * 3], classifier=[10, 10], lr=2e-4),
    "srresnet": dict(backbone_args={"nf": 58, "nb": 16}, upsamplers=[[170] * 4, [40] * 3], classifier=[20, 20],
                     lr=2e-4),
}


def branch_widths(heavy: Sequence[int], light: Sequence[int], M: int) -> list[list[int]]:
    """M branches from the variant's heavy and light MLPs: width and depth interpolated
    linearly (rounded) from heavy (branch 0) to light (branch M-1)."""
    if M == 2:
        return [list(heavy), list(light)]
    out = []
    for j in range(M):
        t = j / (M - 1)
        depth = round(len(heavy) + (len(light) - len(heavy)) * t)
        width = round(heavy[0] + (light[0] - heavy[0]) * t)
        out.append([width] * depth)
    return out


# --- the per-phase network (what DDP wraps) ---------------------------------------------------

class PhaseNet(nn.Module):
    """PCSR restricted to phase ``phase``: branches ``0..phase`` (the classifier from 1 on).

    Frozen parts run without autograd, so phase j >= 1 costs one backbone forward and the
    frozen MLPs' forwards plus the trainable MLPs' forward and backward.

    With ``amp`` (a dtype, e.g. ``torch.bfloat16``) the backbone and the MLPs run under
    autocast; the residuals and probabilities come out in float32 and the bilinear base,
    the mixture and the loss stay in float32 (a bf16 sum ``base + residual`` would round
    the output to 1/256 of its value, coarser than the errors being trained away).
    """

    def __init__(self, model: PCSR, phase: int, channels_last: bool = False, amp: torch.dtype | None = None):
        super().__init__()
        self.model, self.phase, self.channels_last, self.amp = model, phase, channels_last, amp

    def forward(self, lr: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor):
        m, j = self.model, self.phase
        x = m.normalise(lr)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        base = F.grid_sample(x, coord.flip(-1).unsqueeze(1), mode="bilinear", padding_mode="border",
                             align_corners=False)[:, :, 0, :].permute(0, 2, 1)  # [B, Q, 3]
        with torch.autocast(x.device.type, dtype=self.amp or torch.bfloat16, enabled=self.amp is not None):
            if j == 0:
                inp = make_mlp_input(m.backbone(x), coord, cell)  # [B, Q, D+4]
                return m.denormalise_points(base + m.upsamplers[0](inp).float()), None
            with torch.no_grad():
                inp = make_mlp_input(m.backbone(x), coord, cell)
                frozen = [m.upsamplers[i](inp).float() for i in range(j)]
            logits = m.classifier(inp)[..., :j + 1].float()
            trained = m.upsamplers[j](inp).float()
        probs = torch.softmax(logits, dim=-1)  # [B, Q, j+1]
        preds = torch.stack(frozen + [trained], dim=2)  # [B, Q, j+1, 3]
        pred = base + (probs.unsqueeze(-1) * preds).sum(2)
        return m.denormalise_points(pred), probs


def set_phase(model: PCSR, phase: int) -> list[nn.Parameter]:
    """Freeze / unfreeze for ``phase``; returns the trainable parameters (in a fixed order)."""
    for p in model.parameters():
        p.requires_grad_(False)
    model.train()
    if phase == 0:
        trainable = [model.backbone, model.upsamplers[0]]
    else:
        model.backbone.eval()
        for i in range(phase):
            model.upsamplers[i].eval()
        trainable = [model.upsamplers[phase], model.classifier]
    params = [p for mod in trainable for p in mod.parameters()]
    for p in params:
        p.requires_grad_(True)
    return params


def phase_loss(pred, probs, gt, cfg, world: int = 1) -> tuple[torch.Tensor, dict]:
    """The phase's loss on this rank's share of the batch (``cfg``: the weights ``w_recon``
    and ``w_avg``). With ``world > 1`` (an initialised process group, equal shares), L_avg
    is taken over the global batch: the per-branch probability sums are all-reduced with a
    differentiable all-reduce, so that after DistributedDataParallel averages the gradients
    they equal one process's gradient on the whole batch (L1 is a mean, which DDP's
    averaging already makes global)."""
    l1 = (pred - gt).abs().mean()
    if probs is None:
        return l1, {"l1": float(l1.detach())}
    A = probs.shape[-1]
    sums = probs.reshape(-1, A).sum(0)
    if world > 1:
        import warnings

        from torch.distributed.nn.functional import all_reduce  # differentiable (sums the gradients)

        with warnings.catch_warnings():  # deprecated in favour of a private API; still supported
            warnings.simplefilter("ignore", FutureWarning)
            sums = all_reduce(sums)
    n = probs[..., 0].numel() * world  # N over the global batch
    target = torch.full((A,), n / A, dtype=sums.dtype, device=sums.device)
    share = getattr(cfg, "heavy_share", None)
    if share is not None:  # the heavy branches (the first ceil(A/2)) share `share` of the mass
        nh = (A + 1) // 2
        target[:nh] = share * n / nh
        target[nh:] = (1 - share) * n / (A - nh)
    l_avg = (sums - target).abs().sum() / (2 * n / A)
    return cfg.w_recon * l1 + cfg.w_avg * l_avg, {"l1": float(l1.detach()), "l_avg": float(l_avg.detach())}


def cosine_lr(step: int, total: int, lr: float, lr_min: float) -> float:
    """Learning rate before step ``step`` (0-based) of ``total``: cosine from lr to lr_min."""
    return lr_min + (lr - lr_min) * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


# --- validation -----------------------------------------------------------------------------------

@torch.no_grad()
def predict_phase(model: PCSR, lr: torch.Tensor, scale: int, phase: int, chunk: int = 65536) -> torch.Tensor:
    """Full-image SR with the branches of ``phase`` only and hard (argmax) routing among them;
    at the last phase this is the real inference path (``model.forward``, k = 0, refinement).
    Every module's train/eval mode is restored afterwards, one by one: a plain
    ``model.train()`` would put the frozen backbone of phase j >= 1 back in training mode."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        if phase >= model.num_branches - 1:
            return model(lr, scale=scale)[0]
        B, _, h, w = lr.shape
        H, W = h * scale, w * scale
        x = model.normalise(lr)
        feat = model.backbone(x)
        coord = hr_coord(H, W).to(lr).unsqueeze(0).expand(B, -1, -1)
        cell = torch.tensor([2.0 / H, 2.0 / W]).to(lr).expand(B, H * W, 2)
        out = []
        for s in range(0, H * W, chunk):
            c, ce = coord[:, s:s + chunk], cell[:, s:s + chunk]
            inp = make_mlp_input(feat, c, ce)
            base = F.grid_sample(x, c.flip(-1).unsqueeze(1), mode="bilinear", padding_mode="border",
                                 align_corners=False)[:, :, 0, :].permute(0, 2, 1)
            if phase == 0:
                res = model.upsamplers[0](inp)
            else:
                cls = model.classifier(inp)[..., :phase + 1].argmax(-1)  # [B, q]
                preds = torch.stack([model.upsamplers[i](inp) for i in range(phase + 1)], dim=2)
                res = torch.gather(preds, 2, cls[..., None, None].expand(-1, -1, 1, 3))[:, :, 0]
            out.append(model.denormalise_points(base + res))
        return torch.cat(out, 1).transpose(1, 2).reshape(B, 3, H, W)
    finally:
        for m, mode in modes:
            m.training = mode


def validate(model: PCSR, pairs, scale: int, phase: int, device) -> float:
    vals = [psnr(predict_phase(model, lr.to(device), scale, phase), hr.to(device), shave=scale) for lr, hr in pairs]
    return sum(vals) / len(vals)

