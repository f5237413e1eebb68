"""Shared checks of the Triton route_upsample kernels against a float64 reference
(``test_triton_kernels.py``, ``test_triton_precision.py``).

* Outputs poisoned: every buffer the Triton launchers allocate with ``torch.empty`` /
  ``torch.empty_like`` is filled with NaN (floats) or the largest value of its integer
  type, so a pixel that no kernel writes shows up as NaN or as a class outside [0, M).
* Classes, tie-aware: a class may differ from the float64 reference's only where the
  reference's decision margin (best minus second-best score ``log p_j - k log cost_j``)
  is below ``MARGIN``, and at most at ``max(1, RATE * N)`` pixels.
* Values on the MLP residual, not on sr (the bilinear base dominates sr and hides
  errors): ``||sr - sr64|| / ||sr64 - bilinear64||`` over the pixels whose whole 3x3
  neighbourhood has the reference's classes (refinement spreads a flipped class to its
  neighbours), against PLAN.md section 4's bounds.
"""
from __future__ import annotations

import contextlib
import types

import torch
import torch.nn.functional as F

import pcsr_kernels
from pcsr_kernels import reference

MARGIN = 1e-5
RATE = 1e-4
# ||delta|| / ||residual|| (PLAN.md section 4). The interpreter runs every dot in fp32, so
# "tf32" and "tf32x3" are held to the ieee bound there and to their own on a GPU; bf16
# runs (emulated, see pcsr_kernels.triton.tc_mlp) under the interpreter too.
REL_BOUND = {"ieee": 1e-5, "tf32x3": 1e-5, "tf32": 2e-3, "bf16": 1e-2}


def triton_devices() -> list:
    """pytest params "cpu" (the interpreter) and "cuda", each skipped where Triton cannot run."""
    import pytest

    from pcsr_kernels import backend

    out = []
    for dev in ("cpu", "cuda"):
        ok, why = backend.availability("triton", dev)
        out.append(pytest.param(dev, marks=pytest.mark.skipif(not ok, reason=f"triton on {dev}: {why}"), id=dev))
    return out


def bound(precision: str, device: str) -> float:
    if device == "cpu" and precision in ("tf32", "tf32x3"):
        return REL_BOUND["ieee"]
    return REL_BOUND[precision]


def _poisoned(t: torch.Tensor) -> torch.Tensor:
    if t.is_floating_point():
        return t.fill_(float("nan"))
    if t.dtype == torch.bool:
        return t
    return t.fill_(torch.iinfo(t.dtype).max)


class _PoisonTorch(types.ModuleType):
    """``torch`` as the launcher modules see it, with ``empty``/``empty_like`` poisoned."""

    def __init__(self):
        super().__init__("torch")

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def empty(*a, **k):
        return _poisoned(torch.empty(*a, **k))

    @staticmethod
    def empty_like(*a, **k):
        return _poisoned(torch.empty_like(*a, **k))


@contextlib.contextmanager
def poisoned_outputs():
    """Every ``torch.empty`` of the Triton launchers returns NaN / max-int filled memory."""
    from pcsr_kernels.triton import branch, dense, refine, route_upsample, upsample

    mods = (branch, dense, refine, route_upsample, upsample)
    old = [m.torch for m in mods]
    fake = _PoisonTorch()
    for m in mods:
        m.torch = fake
    try:
        yield
    finally:
        for m, o in zip(mods, old):
            m.torch = o


def to64(p: dict) -> dict:
    return {k: ([t.double() for t in v] if isinstance(v, list) and v and torch.is_tensor(v[0])
                else v.double() if torch.is_tensor(v) else v) for k, v in p.items()}


def triton_route_upsample(p: dict, **kw):
    with pcsr_kernels.use_backend("triton"), poisoned_outputs():
        return pcsr_kernels.route_upsample(**p, **kw)


def decision_margin(p64: dict, k: float) -> torch.Tensor:
    """Best minus second-best routing score per pixel, float64 [B, H, W]."""
    probs = reference.classify_ref(p64["feat"], p64["out_size"], p64["classifier"])
    score = torch.log(probs) - k * torch.log(p64["cost"])
    top = score.topk(2, dim=-1).values
    return top[..., 0] - top[..., 1]


def check_classes(cls: torch.Tensor, cls64: torch.Tensor, margin: torch.Tensor | None, M: int) -> torch.Tensor:
    """Asserts the tie-aware rule; returns the pixels whose class matches."""
    assert cls.dtype == torch.int64 and cls.shape == cls64.shape
    assert bool(((cls >= 0) & (cls < M)).all()), f"classes outside [0, {M}): {cls.unique().tolist()}"
    same = cls == cls64
    bad = ~same
    if margin is None:
        assert not bool(bad.any()), f"{int(bad.sum())} of {cls.numel()} classes differ"
    else:
        nbad = int(bad.sum())
        assert nbad <= max(1, RATE * cls.numel()), f"{nbad} of {cls.numel()} classes differ"
        if nbad:
            assert float(margin[bad].max()) < MARGIN, f"a class differs at a decision margin {float(margin[bad].max())}"
    return same


def residual_error(sr: torch.Tensor, sr64: torch.Tensor, lr64: torch.Tensor, same: torch.Tensor,
                   refine: bool) -> float:
    """||sr - sr64|| / ||sr64 - bilinear64|| over the comparable pixels."""
    H, W = sr.shape[-2:]
    base = F.interpolate(lr64, size=(H, W), mode="bilinear", align_corners=False)
    ok = same
    if refine:  # the whole 3x3 neighbourhood (replicate at the border) must agree
        ok = -F.max_pool2d(-F.pad(same[:, None].double(), (1, 1, 1, 1), mode="replicate"), 3, stride=1)[:, 0] > 0
    ok = ok[:, None].expand_as(sr)
    delta = (sr.double() - sr64)[ok]
    res = (sr64 - base)[ok]
    assert ok.float().mean() > 0.5, "too few comparable pixels"
    return float(delta.norm() / res.norm())
