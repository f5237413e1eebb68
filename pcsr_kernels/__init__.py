"""pcsr_kernels: the ``torch.ops.pcsr`` operators of pixel-level routed super-resolution.

Public functions (thin wrappers over ``torch.ops.pcsr.<op>.default``):

    route_upsample(feat, lr, out_size, classifier, upsamplers, depths, cost, k=0.,
                   adaptive=False, refine=True, precision=None)
                                                    -> (sr [B,3,H,W], classes [B,H,W] int64)
    classify(feat, out_size, classifier)            -> probs [B,H,W,M]
    route(probs, cost, k=0., adaptive=False)        -> classes [B,H,W] int64
    upsample(feat, lr, classes, upsamplers, depths, precision=None) -> sr [B,3,H,W] (unrefined)
    refine(sr, classes, num_branches)               -> sr [B,3,H,W]

``feat [B,D,h,w]`` are the backbone's LR features, ``lr [B,3,h,w]`` the (normalised) LR
image; weights are flat lists of nn.Linear ``(W [out,in], b [out])`` pairs, the
classifier's first layer taking ``D+4`` inputs and its last giving M logits; upsampler
branch 0 is the heaviest, ``depths[j]`` its number of Linear layers. The pure-PyTorch
specification of each op is ``pcsr_kernels.reference.<op>_ref``.

Backends: see :mod:`pcsr_kernels.backend` (``PCSR_BACKEND`` / :func:`set_backend`).
Gradients: ``classify``, ``upsample``, ``refine`` and ``route_upsample`` are differentiable
on every backend, at the classes the forward chose (:mod:`pcsr_kernels.autograd`).
Precision of the upsampler MLPs on the triton backend (``"ieee"`` default, ``"tf32x3"``,
``"tf32"``, ``"bf16"``; the classifier is always fp32): the ``precision`` argument, else
:func:`set_precision` / ``PCSR_PRECISION``; see :mod:`pcsr_kernels.precision`.
"""
from __future__ import annotations

from typing import Sequence

import torch

_EXT_ERROR: str | None = None
try:  # the compiled extension: op schemas, and the C++/CUDA kernels when built with them
    from . import _C  # noqa: F401
except ImportError as e:  # the package still works: schemas come from Python, reference backend
    _EXT_ERROR = f"{type(e).__name__}: {e}"


def extension_error() -> str | None:
    """Why the compiled extension did not load (None when it did)."""
    return _EXT_ERROR


def extension_loaded() -> bool:
    return _EXT_ERROR is None


from . import autograd, backend, ops  # noqa: E402
from .backend import get_backend, set_backend, use_backend  # noqa: E402,F401
from .precision import PRECISIONS, get_precision, set_precision, use_precision  # noqa: E402,F401

ops.register_all()
autograd.register_all()  # gradients of every backend's ops: pcsr_kernels.autograd

# Optional fast backends register themselves on import; a missing dependency only makes
# that backend unavailable (backend.availability says why).
for _mod in ("cpu_backend", "triton_backend", "cuda_backend"):
    try:
        __import__(f"{__name__}.{_mod}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{_mod}":
            raise


def route_upsample(feat: torch.Tensor, lr: torch.Tensor, out_size: Sequence[int],
                   classifier: Sequence[torch.Tensor], upsamplers: Sequence[torch.Tensor],
                   depths: Sequence[int], cost: torch.Tensor, k: float = 0.0,
                   adaptive: bool = False, refine: bool = True,
                   precision: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Classify, route, upsample and refine every HR pixel. See the module docstring."""
    return torch.ops.pcsr.route_upsample.default(
        feat, lr, list(out_size), list(classifier), list(upsamplers), list(depths), cost,
        float(k), bool(adaptive), bool(refine), precision)


def classify(feat: torch.Tensor, out_size: Sequence[int], classifier: Sequence[torch.Tensor]) -> torch.Tensor:
    """Branch probabilities of every HR pixel, [B, H, W, M]."""
    return torch.ops.pcsr.classify.default(feat, list(out_size), list(classifier))


def route(probs: torch.Tensor, cost: torch.Tensor, k: float = 0.0, adaptive: bool = False) -> torch.Tensor:
    """Cost-aware argmax (or ADM when ``adaptive``) of [B, H, W, M] probabilities."""
    return torch.ops.pcsr.route.default(probs, cost, float(k), bool(adaptive))


def upsample(feat: torch.Tensor, lr: torch.Tensor, classes: torch.Tensor,
             upsamplers: Sequence[torch.Tensor], depths: Sequence[int], precision: str | None = None) -> torch.Tensor:
    """Routed MLP residual plus bilinear(lr) for given classes, [B, 3, H, W]."""
    return torch.ops.pcsr.upsample.default(feat, lr, classes, list(upsamplers), list(depths), precision)


def refine(sr: torch.Tensor, classes: torch.Tensor, num_branches: int) -> torch.Tensor:
    """Smooth light pixels that touch heavy ones (3x3 mean), border untouched."""
    return torch.ops.pcsr.refine.default(sr, classes, int(num_branches))


__all__ = ["route_upsample", "classify", "route", "upsample", "refine", "set_backend",
           "get_backend", "use_backend", "set_precision", "get_precision", "use_precision", "PRECISIONS",
           "extension_loaded", "extension_error"]
