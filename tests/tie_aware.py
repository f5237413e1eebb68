"""Comparing a backend with the reference where routing decisions can tie, and where values
may be NaN or infinite.

A backend computes the same quantities as the reference in another order (a split first
layer, other GEMM blocking, fp32 dots), so a pixel whose two best routing scores lie within
rounding of each other may go either way. Such pixels are found from the float64
reference: the *decision margin* of a pixel is how far its decision is from flipping,

* cost-aware: ``(s_1 - s_2) / max(1, |s_1|)`` for its best and second-best scores
  ``s_j = log p_j - k log cost_j`` (infinite when the rule decides: a NaN score routes to
  branch 0, an exact tie -- equal inputs, equal in every precision -- to the first index,
  and a second score of -inf cannot win);
* ADM: the distance of its heavy mass to the midpoint between its nearest and
  second-nearest centres of the last assignment step, in heavy-mass units (the values lie
  in [0, 1]): an image whose heavy masses span only rounding noise is near-tied everywhere.

A class may differ from the reference's only where the margin is below :data:`MARGIN`,
and at most at :data:`MAX_FLIP_RATE` of the pixels (a wrong kernel differs far more often,
and at pixels of any margin) -- except in an ADM image whose heavy masses span less than
:data:`MARGIN`, which rounding alone clusters (margin -1: any flip allowed). Values are compared only where the whole 3x3 neighbourhood
has the reference's classes: a flipped pixel runs another branch, and refinement spreads
it to its neighbours. NaN must be exactly where the reference has NaN; +-inf equal.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pcsr_kernels import reference

MARGIN = 1e-5
MAX_FLIP_RATE = 0.02


def to64(x):
    """float64 copies of every floating tensor in x (a tensor, list, tuple or dict)."""
    if isinstance(x, torch.Tensor):
        return x.double() if x.is_floating_point() else x
    if isinstance(x, (list, tuple)):
        return type(x)(to64(t) for t in x)
    if isinstance(x, dict):
        return {k: to64(v) for k, v in x.items()}
    return x


def score_margin(probs: torch.Tensor, cost: torch.Tensor, k: float) -> torch.Tensor:
    """Decision margin of cost-aware routing per pixel, [B, H, W] float64 (see the module doc)."""
    score = torch.log(probs.double()) - k * torch.log(cost.double())
    top = score.topk(2, dim=-1).values  # NaN sorts above everything
    s1, s2 = top[..., 0], top[..., 1]
    m = (s1 - s2) / s1.abs().clamp(min=1.0)
    # Decided by rule, not by rounding: a NaN score (branch 0), a second score of -inf, and
    # an exact tie (equal inputs tie in every precision: the first index wins).
    exact = torch.isnan(score).any(-1) | (s2 == float("-inf")) | torch.isnan(m) | (s1 == s2)
    return torch.where(exact, torch.full_like(m, float("inf")), m)


def adm_margin(probs: torch.Tensor) -> torch.Tensor:
    """Decision margin of ADM per pixel, [B, H, W] float64 (see the module doc)."""
    B, H, W, M = probs.shape
    heavy = probs.double()[..., : reference.num_heavy(M)].sum(-1).reshape(B, H * W)
    out = torch.full((B, H * W), float("inf"), dtype=torch.float64)
    for b in range(B):
        fin = torch.isfinite(heavy[b])
        if not bool(fin.any()):
            continue
        km = reference.adm_kmeans(heavy[b][fin], M)
        if km is None:  # constant image: decided by rule
            continue
        v, assign, _ = km
        d = (v[:, None] - assign[None, :]).abs().sort(dim=1).values
        span = heavy[b][fin].max() - heavy[b][fin].min()
        # An image whose heavy masses differ by rounding only is not clustered by its data
        # but by the rounding: every decision there is a tie (-1: not counted in the rate).
        out[b, fin] = (d[:, 1] - d[:, 0]) / 2 * span if span >= MARGIN else -1.0
    return out.view(B, H, W)


def decision_margin(probs64: torch.Tensor, cost: torch.Tensor, k: float, adaptive: bool) -> torch.Tensor:
    return adm_margin(probs64) if adaptive else score_margin(probs64, cost, k)


def check_classes(got: torch.Tensor, want: torch.Tensor, margin: torch.Tensor, M: int, what: str = "") -> torch.Tensor:
    """Classes in range, equal to the reference's except at near-ties (rarely). Returns the
    [B, H, W] mask of pixels whose 3x3 neighbourhood has the reference's classes."""
    assert got.shape == want.shape and got.dtype == torch.int64, (got.shape, want.shape, got.dtype)
    assert bool(((got >= 0) & (got < M)).all()), f"{what}classes outside [0, {M}): {got.unique().tolist()}"
    diff = got != want
    n = int(diff.sum())
    if n:
        far = diff & ~(margin < MARGIN)
        assert not bool(far.any()), (
            f"{what}{int(far.sum())} of {got.numel()} classes differ from the reference at decisive pixels "
            f"(margins {margin[far][:5].tolist()}, got {got[far][:5].tolist()}, want {want[far][:5].tolist()})")
        counted = int((diff & (margin >= 0)).sum())
        assert counted <= max(3, MAX_FLIP_RATE * got.numel()), (
            f"{what}{counted} of {got.numel()} near-tied classes flipped")
    spread = F.max_pool2d(diff[:, None].double(), 3, stride=1, padding=1)[:, 0] > 0
    return ~spread


def assert_close_nan_aware(got: torch.Tensor, want: torch.Tensor, mask: torch.Tensor | None = None,
                           what: str = "", **tol) -> None:
    """NaN exactly where ``want`` has NaN, +-inf equal, finite values within ``tol`` --
    over the elements where ``mask`` (broadcast to the values) is true."""
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, want.shape, got.dtype, want.dtype)
    if mask is not None:
        mask = mask.expand_as(got) if mask.dim() == got.dim() else mask[:, None].expand_as(got)
        got, want = got[mask], want[mask]
    gn, wn = torch.isnan(got), torch.isnan(want)
    assert torch.equal(gn, wn), (f"{what}NaN pattern differs: {int((gn & ~wn).sum())} NaN where the reference "
                                 f"has a number, {int((wn & ~gn).sum())} numbers where it has NaN")
    torch.testing.assert_close(got[~gn], want[~wn], msg=lambda m: what + m, **tol)


def assert_close_to_reference(got: torch.Tensor, want: torch.Tensor, want64: torch.Tensor,
                              mask: torch.Tensor | None = None, what: str = "", factor: float = 4.0,
                              **floor) -> None:
    """The flash-attention rule for inputs of any scale: ``got``'s error against the float64
    reference ``want64`` may be at most ``factor`` times the worst error the reference
    itself makes in ``want``'s dtype, plus ``floor`` (rtol, atol: a few ulps of O(1)
    values, for when the reference happens to be exact). NaN exactly where ``want`` has
    NaN and +-inf equal to it; compared where ``mask`` is true."""
    assert got.shape == want.shape == want64.shape and got.dtype == want.dtype, (
        got.shape, want.shape, want64.shape, got.dtype, want.dtype)
    if mask is not None:
        mask = mask.expand_as(got) if mask.dim() == got.dim() else mask[:, None].expand_as(got)
        got, want, want64 = got[mask], want[mask], want64[mask]
    gn, wn = torch.isnan(got), torch.isnan(want)
    assert torch.equal(gn, wn), (f"{what}NaN pattern differs: {int((gn & ~wn).sum())} NaN where the reference "
                                 f"has a number, {int((wn & ~gn).sum())} numbers where it has NaN")
    fin = torch.isfinite(want)
    assert torch.equal(got[~fin & ~wn], want[~fin & ~wn]), f"{what}infinities differ from the reference's"
    fin &= torch.isfinite(want64)
    g, w, w64 = got[fin].double(), want[fin].double(), want64[fin].double()
    ref_err = float((w - w64).abs().max()) if w.numel() else 0.0
    bound = factor * ref_err + floor.get("atol", 0.0) + floor.get("rtol", 0.0) * w64.abs()
    err = (g - w64).abs()
    bad = err > bound
    assert not bool(bad.any()), (
        f"{what}{int(bad.sum())} of {err.numel()} values off the float64 reference by up to {float(err.max()):.3g} "
        f"(allowed {factor} x the reference's own error {ref_err:.3g} + {floor}); "
        f"got {g[bad][:4].tolist()}, want {w64[bad][:4].tolist()}")
