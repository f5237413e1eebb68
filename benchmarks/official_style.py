"""The authors' inference loop, re-stated: the baseline the fused kernels are timed against.

``official_route_upsample`` has the signature and results of ``torch.ops.pcsr.route_upsample``
but computes them the way PCSR's released test code does (``models/pcsr.py``,
``PCSR.forward_test``, and ``models/sampler.py``, ``LIIF_Sampler``), generalised from its two
branches (flag 1 = heavy) to M branches (branch 0 heaviest, as this project numbers them):

* a flattened coordinate grid ``[B, H*W, 2]`` and cell ``[B, H*W, 2]`` for the whole image;
* every MLP is an ``nn.Sequential`` of ``nn.Linear``/``nn.ReLU`` fed by a sampler that,
  on every call, rebuilds the LR coordinate grid and runs ``grid_sample(mode='nearest')``
  twice (features, their coordinates) on the queried pixels, then concatenates
  ``[feature, rel_coord, rel_cell]``;
* classification of all images in chunks of ``chunk // B * B`` pixels, softmax kept for
  every pixel, routing ``argmax(prob / cost**k)`` (or ADM);
* upsampling per image in chunks of ``chunk`` pixels: per branch a ``torch.where`` gather
  of the chunk's pixels of that class (a host sync for the count), the branch sampler on
  them, a scatter into the chunk's prediction, then ``grid_sample(bilinear, border)`` of
  the LR image on the chunk's coordinates added;
* refinement with full-resolution ``F.unfold`` (9 copies of the image) of the replicate-
  padded prediction and of the heavy mask.

ADM: the authors cluster the normalised heavy mass of all pixels of the call with
``fast_pytorch_kmeans``; here it is ``pcsr_kernels.reference.adm_ref`` per image (the same
K-means, as the op defines it), so the classes are comparable with the op's. Cost-aware
routing divides by ``cost**k`` as the authors do: for |k| of tens that power can under- or
overflow in float32, where the op (log space) does not; at moderate k both agree.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from pcsr_kernels.geometry import liif_coord
from pcsr_kernels.reference import adm_ref, num_heavy

CHUNK = 300000  # the authors' pixel_batch_size


def make_coord(shape: Sequence[int], flatten: bool = True, device=None) -> torch.Tensor:
    """LIIF's pixel-centre grid of `shape` on [-1, 1]^2, (y, x) last."""
    seqs = [liif_coord(n, device) for n in shape]
    ret = torch.stack(torch.meshgrid(*seqs, indexing="ij"), dim=-1)
    return ret.view(-1, ret.shape[-1]) if flatten else ret


def _mlp(params: Sequence[torch.Tensor]) -> nn.Sequential:
    """nn.Linear (+ nn.ReLU) modules holding the flat [W0, b0, W1, b1, ...] weights."""
    layers: list[nn.Module] = []
    n = len(params) // 2
    for i in range(n):
        Wt, b = params[2 * i], params[2 * i + 1]
        lin = nn.Linear(Wt.shape[1], Wt.shape[0], device=Wt.device, dtype=Wt.dtype)
        with torch.no_grad():
            lin.weight.copy_(Wt)
            lin.bias.copy_(b)
        layers.append(lin)
        if i < n - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Sampler(nn.Module):
    """LIIF sampler without feature unfolding or local ensemble (the authors' LIIF_Sampler)."""

    def __init__(self, params: Sequence[torch.Tensor]):
        super().__init__()
        self.imnet = _mlp(params)

    def make_inp(self, feat, coord, cell):
        feat_coord = make_coord(feat.shape[-2:], flatten=False, device=feat.device) \
            .permute(2, 0, 1).unsqueeze(0).expand(feat.shape[0], 2, *feat.shape[-2:])
        grid = coord.flip(-1).unsqueeze(1)
        q_feat = F.grid_sample(feat, grid, mode="nearest", align_corners=False)[:, :, 0, :].permute(0, 2, 1)
        q_coord = F.grid_sample(feat_coord, grid, mode="nearest", align_corners=False)[:, :, 0, :].permute(0, 2, 1)
        rel_coord = coord - q_coord
        rel_coord[:, :, 0] *= feat.shape[-2]
        rel_coord[:, :, 1] *= feat.shape[-1]
        rel_cell = cell.clone()
        rel_cell[:, :, 0] *= feat.shape[-2]
        rel_cell[:, :, 1] *= feat.shape[-1]
        return torch.cat([q_feat, rel_coord, rel_cell], dim=-1)

    def forward(self, feat, coord, cell):
        return self.imnet(self.make_inp(feat, coord, cell))


@torch.no_grad()
def official_route_upsample(feat: torch.Tensor, lr: torch.Tensor, out_size: Sequence[int],
                            classifier: Sequence[torch.Tensor], upsamplers: Sequence[torch.Tensor],
                            depths: Sequence[int], cost: torch.Tensor, k: float = 0.0, adaptive: bool = False,
                            refine: bool = True, chunk: int = CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """(sr [B, 3, H, W], classes [B, H, W] int64), computed as the authors' test code does."""
    B, _, h, w = feat.shape
    H, W = int(out_size[0]), int(out_size[1])
    M = len(depths)
    q = H * W
    coord = make_coord((H, W), device=feat.device).to(feat.dtype).unsqueeze(0).expand(B, q, 2)
    cell = torch.ones_like(coord)
    cell[:, :, 0] *= 2 / H
    cell[:, :, 1] *= 2 / W
    cls_sampler = Sampler(classifier)
    samplers, at = [], 0
    for d in depths:
        samplers.append(Sampler(upsamplers[at:at + 2 * d]))
        at += 2 * d

    # Classification of every pixel of every image, in chunks.
    prob = torch.zeros((B, q, M), device=feat.device, dtype=feat.dtype)
    pb = max(1, chunk // B * B)
    for l in range(0, q, pb):
        r = min(q, l + pb)
        prob[:, l:r] = F.softmax(cls_sampler(feat, coord[:, l:r], cell[:, l:r]), dim=-1)

    if adaptive:
        heavy = prob[:, :, :num_heavy(M)].sum(-1)  # [B, q]
        flag = torch.stack([adm_ref(heavy[i], M) for i in range(B)])
    else:
        flag = torch.argmax(prob / torch.pow(cost.to(prob.dtype), k).view(1, 1, M), dim=-1)  # [B, q]

    # Upsampling, per image and chunk, one torch.where gather per branch.
    preds = []
    for i in range(B):
        pred = torch.zeros((q, 3), device=feat.device, dtype=feat.dtype)
        for l in range(0, q, chunk):
            r = min(q, l + chunk)
            coord_split = coord[i:i + 1, l:r]
            cell_split = cell[i:i + 1, l:r]
            flg = flag[i, l:r]
            for j in range(M):
                idx = torch.where(flg == j)[0]
                if len(idx) > 0:
                    pred[l + idx] = samplers[j](feat[i:i + 1], coord_split[:, idx], cell_split[:, idx]).squeeze(0)
            res = F.grid_sample(lr[i:i + 1], coord_split.flip(-1).unsqueeze(1), mode="bilinear",
                                padding_mode="border", align_corners=False)[:, :, 0, :].squeeze(0).transpose(0, 1)
            pred[l:r] += res
        preds.append(pred)
    pred = torch.stack(preds, dim=0)  # [B, q, 3]

    pred = pred.transpose(1, 2).reshape(B, 3, H, W)
    flag = flag.view(B, 1, H, W)
    if refine:
        pred_unfold = F.pad(pred, (1, 1, 1, 1), mode="replicate")
        pred_unfold = F.unfold(pred_unfold, 3, padding=0).view(B, 3, 9, H, W).mean(dim=2)
        heavy_mask = (flag < num_heavy(M)).to(pred.dtype)
        heavy_unfold = F.pad(heavy_mask, (1, 1, 1, 1), mode="replicate")
        heavy_unfold = F.unfold(heavy_unfold, 3, padding=0).view(B, 1, 9, H, W).int().sum(dim=2)
        cond = (heavy_mask == 0) & (heavy_unfold > 0)
        cond[:, :, [0, -1], :] = False
        cond[:, :, :, [0, -1]] = False
        pred = torch.where(cond, pred_unfold, pred)
    return pred, flag.view(B, H, W)
