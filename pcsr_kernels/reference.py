"""The pure-PyTorch reference of every pcsr op: the specification the kernels are held to.

Every function here has the signature of its ``torch.ops.pcsr`` op and computes it with
plain PyTorch, in ``feat``'s dtype, in bounded memory: HR pixels are processed in bands
of rows, so no per-pixel input matrix of the whole image is ever built.

Per HR pixel ``(y, x)`` of an image ``b`` (see :mod:`pcsr_kernels.geometry`)::

    inp   = [feat[b, :, iy[y], ix[x]], ry[y], rx[x], cell_y, cell_x]        # [D+4]
    probs = softmax(classifier(inp))                                         # [M]
    class = argmax_j  log(probs_j) - k * log(cost_j)      (cost-aware routing; 0 if a score is NaN)
          | ADM on the image's heavy mass                  (adaptive=True; 0 where it is not finite)
    sr    = U_class(inp) + bilinear(lr)[b, :, y, x]
    sr    = mean_3x3(sr)  where the pixel is light, touches a heavy pixel and is not on
            the image border                                                  (refine)

Branch 0 is the heaviest; branches ``j < (M+1)//2`` are heavy, the rest light.
``argmax p_j / cost_j**k`` of the paper is evaluated in log space: the same decision,
without the overflow of ``cost**k`` for |k| of a few tens.

Non-finite values (the policy every backend follows): NaN and +-inf in ``feat``, ``lr``
or any weight propagate to the output pixels they reach exactly as these functions
compute them (F.linear, torch.relu -- which keeps NaN --, softmax, the bilinear taps of
:func:`bilinear_rows`, the 3x3 mean); a routing decision that cannot be made (a NaN
score, a non-finite heavy mass) goes to branch 0; every class stays in [0, M) and every
output pixel is written. ``cost`` must be finite and > 0 and ``k`` finite (ValueError
otherwise).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from . import validate
from .geometry import Tables, bilinear_axis

# Pixels per band: large enough that the matmuls are efficient, small enough that the
# per-band input matrix ([n, D+4] plus one hidden activation) stays a few tens of MB.
CHUNK_PIXELS = 1 << 17

# ADM: the authors' K-means stops after 20 Lloyd steps or when the summed squared
# centre shift is at most 1e-4.
ADM_MAX_STEPS = 20
ADM_TOL = 1e-4


def num_heavy(M: int) -> int:
    """Branches 0 .. num_heavy(M)-1 are heavy."""
    return (M + 1) // 2


def mlp_ref(x: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
    """Linear -> ReLU per hidden layer, then a final Linear. x [n, in] -> [n, out]."""
    last = len(params) - 2
    for i in range(0, len(params), 2):
        x = F.linear(x, params[i], params[i + 1])
        if i != last:
            x = torch.relu(x)
    return x


def _bands(H: int, W: int):
    rows = max(1, CHUNK_PIXELS // W)
    for y0 in range(0, H, rows):
        yield y0, min(H, y0 + rows)


def _band_inputs(feat_b: torch.Tensor, t: Tables, y0: int, y1: int) -> torch.Tensor:
    """The MLP inputs of HR rows y0..y1 of one image: [(y1-y0)*W, D+4]."""
    D = feat_b.shape[0]
    W = t.ix.shape[0]
    r = y1 - y0
    z = feat_b[:, t.iy[y0:y1]][:, :, t.ix]  # [D, r, W]
    z = z.permute(1, 2, 0).reshape(r * W, D)
    rel = torch.stack(
        [t.ry[y0:y1, None].expand(r, W), t.rx[None, :].expand(r, W)], dim=-1
    ).reshape(r * W, 2).to(feat_b.dtype)
    cell = feat_b.new_tensor([t.cell_y, t.cell_x]).expand(r * W, 2)
    return torch.cat([z, rel, cell], dim=1)


def classify_ref(feat: torch.Tensor, out_size: Sequence[int], classifier: Sequence[torch.Tensor]) -> torch.Tensor:
    """Probabilities over the M branches for every HR pixel: [B, H, W, M]."""
    B, D, h, w = validate.check_feat(feat)
    H, W = validate.check_out_size(out_size)
    widths = validate.check_mlp("classifier", classifier, D + 4, None, feat.dtype, feat.device)
    M = widths[-1]
    t = Tables(h, w, H, W, feat.device)
    probs = feat.new_empty(B, H, W, M)
    for b in range(B):
        for y0, y1 in _bands(H, W):
            logits = mlp_ref(_band_inputs(feat[b], t, y0, y1), classifier)
            probs[b, y0:y1] = torch.softmax(logits, dim=-1).view(y1 - y0, W, M)
    return probs


def adm_ref(heavy_mass: torch.Tensor, M: int) -> torch.Tensor:
    """Adaptive decision (ADM) for one image: 1-D K-means of the heavy mass into M clusters.

    heavy_mass [N] -> branch per value [N] int64, the cluster with the highest centre
    going to branch 0.

    M = 2 follows the authors' code step by step: values min-max normalised; the first
    Lloyd step from a single centre leaves the centres at (mean, 0); then Lloyd steps
    (nearest centre, ties to the lower index; an empty cluster's centre becomes 0) until
    the summed squared centre shift is <= 1e-4 or 20 steps in all; the labels are those of
    the last assignment. M > 2 (not in the authors' code): centres start evenly spaced at
    (2j+1)/(2M) on the normalised values, an empty cluster keeps its centre, and the same
    stopping rule applies. A constant image (max == min) sends every pixel to the lightest
    branch, since the cluster that holds the smallest value is the light one.

    Non-finite values (NaN, +-inf) take no part: they are left out of the min-max
    normalisation and of every count and sum, and their pixels go to branch 0 (when the
    decision is unknown, spend the compute). An image with no finite value is all branch
    0; one whose finite values are all equal sends those to the lightest branch. With
    every value finite this is exactly the authors' algorithm above.
    """
    s = heavy_mass.reshape(-1)
    finite = torch.isfinite(s)
    if bool(finite.all()):
        return _adm_finite(s, M)
    out = torch.zeros(s.shape, dtype=torch.int64, device=s.device)
    if bool(finite.any()):
        out[finite] = _adm_finite(s[finite], M)
    return out


def _adm_finite(s: torch.Tensor, M: int) -> torch.Tensor:
    """ADM of finite values s [N], N >= 1 (see adm_ref)."""
    km = adm_kmeans(s, M)
    if km is None:
        return torch.full(s.shape, M - 1, dtype=torch.int64, device=s.device)
    v, assign, centres = km
    labels = torch.argmin((v[:, None] - assign[None, :]).abs(), dim=1)  # ties -> lower index
    # Rank clusters by centre, highest -> branch 0. The last update made each centre the
    # mean of its labelled values, so for M = 2 this is the authors' rule "the cluster
    # holding the smallest value is light".
    order = torch.argsort(centres, descending=True, stable=True)  # order[r] = cluster of rank r
    rank = torch.empty_like(order)
    rank[order] = torch.arange(M, device=v.device)
    return rank[labels]


def adm_kmeans(s: torch.Tensor, M: int):
    """The K-means of :func:`adm_ref` on finite values s [N]: ``(v, assign, centres)`` --
    the normalised values, the centres of the last assignment step (each value's label is
    its nearest ``assign`` centre) and the final centres (which rank the clusters) -- or
    None for a constant image. Exposed so that tests can measure how close each value lies
    to a decision boundary."""
    lo, hi = s.min(), s.max()
    if not bool(hi > lo):
        return None
    v = (s - lo) / (hi - lo)
    if M == 2:
        centres = torch.stack([_cluster_mean(v.sum(dtype=torch.float64), v.numel(), v.dtype),
                               torch.zeros((), dtype=v.dtype, device=v.device)])
        empty_to_zero = True
    else:
        centres = (2 * torch.arange(M, dtype=v.dtype, device=v.device) + 1) / (2 * M)
        empty_to_zero = False
    assign = centres
    for _ in range(ADM_MAX_STEPS - 1):
        assign = centres
        labels = torch.argmin((v[:, None] - centres[None, :]).abs(), dim=1)  # ties -> lower index
        # Integer counts and float64 sums: exact counts at any image size (fp32 stops
        # counting at 2^24 pixels, which an 8K image passes), and one rounding per centre.
        counts = torch.bincount(labels, minlength=M)
        sums = torch.zeros(M, dtype=torch.float64, device=v.device).scatter_add_(0, labels, v.double())
        new = torch.where(counts > 0, _cluster_mean(sums, counts.clamp(min=1), v.dtype),
                          torch.zeros_like(centres) if empty_to_zero else centres)
        shift = float(((new - centres) ** 2).sum())
        centres = new
        if shift <= ADM_TOL:
            break
    return v, assign, centres


def _cluster_mean(sums, counts, dtype):
    return (sums / counts).to(dtype)


def route_ref(probs: torch.Tensor, cost: torch.Tensor, k: float = 0.0, adaptive: bool = False) -> torch.Tensor:
    """Branch per pixel from probabilities [B, H, W, M] -> [B, H, W] int64.

    Cost-aware: ``argmax_j score_j`` with ``score_j = log(probs_j) - k * log(cost_j)``,
    the first index on ties; +inf and -inf compare as numbers. A pixel whose score vector
    holds a NaN goes to branch 0, the heaviest: when the decision is unknown, spend the
    compute. (torch.argmax alone would pick the first NaN's index.) Softmax output is all
    NaN as soon as one logit is NaN or +inf, or every logit is -inf, so such a pixel of
    route_upsample goes to branch 0. Adaptive: :func:`adm_ref` per image.
    """
    B, H, W, M = validate.route_args(probs, cost, k)
    if adaptive:
        heavy = probs[..., : num_heavy(M)].sum(-1)  # [B, H, W]
        return torch.stack([adm_ref(heavy[b], M).view(H, W) for b in range(B)])
    score = torch.log(probs) - k * torch.log(cost.to(probs.dtype))
    return torch.argmax(score, dim=-1).masked_fill_(torch.isnan(score).any(-1), 0)


def upsample_ref(feat: torch.Tensor, lr: torch.Tensor, classes: torch.Tensor,
                 upsamplers: Sequence[torch.Tensor], depths: Sequence[int]) -> torch.Tensor:
    """Routed MLP residual + bilinear(lr), unrefined: [B, 3, H, W]."""
    B, _, h, w, H, W, branches = validate.upsample_args(feat, lr, classes, upsamplers, depths)
    t = Tables(h, w, H, W, feat.device)
    ty = bilinear_axis(H, h, feat.device, lr.dtype)
    tx = bilinear_axis(W, w, feat.device, lr.dtype)
    sr = lr.new_empty(B, 3, H, W)
    for y0, y1 in _bands(H, W):
        sr[:, :, y0:y1] = bilinear_rows(lr, ty, tx, y0, y1)
    for b in range(B):
        for y0, y1 in _bands(H, W):
            inp = _band_inputs(feat[b], t, y0, y1)
            cls = classes[b, y0:y1].reshape(-1)
            res = inp.new_zeros(inp.shape[0], 3)
            for j, br in enumerate(branches):
                idx = torch.nonzero(cls == j).squeeze(1)
                if idx.numel():
                    res[idx] = mlp_ref(inp[idx], br)
            sr[b, :, y0:y1] += res.t().reshape(3, y1 - y0, W)
    return sr


def bilinear_rows(lr: torch.Tensor, ty, tx, y0: int, y1: int) -> torch.Tensor:
    """Rows y0..y1 of the bilinear upsampling of lr [B, C, h, w], [B, C, y1-y0, W]:
    ``(1-ly) ((1-lx) x00 + lx x01) + ly ((1-lx) x10 + lx x11)`` with the taps of
    :func:`~pcsr_kernels.geometry.bilinear_axis` -- the values of ``F.interpolate(bilinear,
    align_corners=False)`` (equal to the authors' grid_sample with border padding) up to
    rounding, written out so that the non-finite case is specified too: every tap is
    multiplied by its weight, so an infinite tap of weight 0 gives NaN, on every backend
    (F.interpolate's own result then depends on its internal loop order)."""
    i0y, i1y, ly = (a[y0:y1] for a in ty)
    i0x, i1x, lx = tx
    ly = ly[:, None]  # [r, 1]
    r0, r1 = lr[:, :, i0y], lr[:, :, i1y]  # [B, C, r, w]
    top = (1 - lx) * r0[..., i0x] + lx * r0[..., i1x]
    bottom = (1 - lx) * r1[..., i0x] + lx * r1[..., i1x]
    return (1 - ly) * top + ly * bottom


def refine_ref(sr: torch.Tensor, classes: torch.Tensor, num_branches: int) -> torch.Tensor:
    """Pixel-wise refinement: a light pixel with a heavy pixel in its 3x3 neighbourhood
    takes the mean of the 3x3 neighbourhood of ``sr``; border rows/columns never change.

    Because the border is never refined, every refined pixel's window lies inside the
    image, so the authors' replicate padding never influences the result.
    """
    _, H, W = validate.refine_args(sr, classes, num_branches)
    out = sr.clone(memory_format=torch.contiguous_format)  # every op returns contiguous outputs
    if H < 3 or W < 3:
        return out
    heavy = (classes < num_heavy(num_branches)).to(sr.dtype)[:, None]  # [B, 1, H, W]
    near_heavy = F.max_pool2d(heavy, 3, stride=1)[:, 0] > 0  # [B, H-2, W-2], interior pixels
    cond = near_heavy & (heavy[:, 0, 1:-1, 1:-1] == 0)
    mean = F.avg_pool2d(sr, 3, stride=1)  # [B, 3, H-2, W-2]
    out[:, :, 1:-1, 1:-1] = torch.where(cond[:, None], mean, sr[:, :, 1:-1, 1:-1])
    return out


def route_upsample_ref(feat: torch.Tensor, lr: torch.Tensor, out_size: Sequence[int],
                       classifier: Sequence[torch.Tensor], upsamplers: Sequence[torch.Tensor],
                       depths: Sequence[int], cost: torch.Tensor, k: float = 0.0,
                       adaptive: bool = False, refine: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole PCSR upsampling stage: ``(sr [B,3,H,W], classes [B,H,W] int64)``."""
    M, H, W, _ = validate.route_upsample_args(feat, lr, out_size, classifier, upsamplers, depths, cost, k)
    probs = classify_ref(feat, (H, W), classifier)
    classes = route_ref(probs, cost, k, adaptive)
    del probs
    sr = upsample_ref(feat, lr, classes, upsamplers, depths)
    if refine:
        sr = refine_ref(sr, classes, M)
    return sr, classes
