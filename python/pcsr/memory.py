"""How much memory an inference needs, estimated before anything is allocated.

The estimates are upper bounds built from what each piece allocates:

* the backbone: peak live activations per LR pixel from its traced graph
  (:func:`pcsr.footprint.footprint`), which is how the model runs it;
* the ``torch.ops.pcsr`` ops: what each backend's implementation allocates per HR pixel and
  per LR pixel, read from its source (``pcsr_kernels/reference.py``, ``csrc/cpu/*.cpp``,
  ``pcsr_kernels/triton/route_upsample.py``, ``csrc/cuda/register_cuda.cpp``);
* the model's own tensors (the normalised input, the features, the outputs).

``tests/test_memory.py`` holds the CPU numbers (cpu and reference backends) against the
resident-set high-water mark of real runs. The GPU numbers (triton, cuda) are the same
bookkeeping of their sources and have not been measured on a GPU; the caching allocator's
rounding is covered by :data:`CUDA_SLACK`.

Budgets: :func:`available_memory` is what the machine can give now (``MemAvailable`` and
the cgroup limit on CPU, free plus cached-but-unused memory on CUDA);
:func:`default_budget` is the share of it that tiled inference plans for by default.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import torch

from pcsr_kernels import memory as _kernel_memory

from .footprint import footprint

__all__ = ["TooLargeError", "Estimate", "available_memory", "default_budget", "forward_estimate",
           "format_bytes", "op_bytes"]

# Tiled inference plans for this share of the available memory unless told otherwise:
# other programs (and the caller's own tensors, e.g. an image being encoded) need room too.
DEFAULT_FRACTION = 0.5

# Bytes every op call may take beyond its per-pixel buffers: packed weights, per-thread
# scratch of the CPU kernels (a few LR rows of features each), the allocator's rounding.
# Measured on the cpu backend at 960x1280: 1.4 MB beyond the per-pixel buffers.
OP_SLACK = 8 << 20
# oneDNN creates (and keeps) a primitive per new convolution shape: code and a small
# scratchpad, and the first call at a shape touches library code pages too. For MSRResNet
# (33 convs) at 160x160 the first call's peak exceeds the later calls' by 7 MB in one
# virtual environment and 21 MB in a freshly made one (same packages; measured 2026-11-28).
BACKBONE_SLACK = 32 << 20
# The CUDA caching allocator rounds blocks up (to 2 MiB segments for large ones) and cuDNN
# takes a workspace: a margin the CPU measurements cannot check.
CUDA_SLACK = 1.2

# pcsr_kernels.reference processes HR pixels in bands of this many pixels (CHUNK_PIXELS).
_REF_BAND = 1 << 17


class TooLargeError(ValueError):
    """An inference that does not fit in the memory it may use; the message gives the sizes
    and the bytes needed and available."""


def format_bytes(n: float) -> str:
    """``1.59 GB (1590000000 bytes)``: decimal units, and the exact count for scripts."""
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit} ({int(n)} bytes)"
    return f"{int(n)} bytes"


@dataclass
class Estimate:
    """Peak bytes of one inference and what they are made of (largest first in ``str``)."""
    total: int
    parts: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        parts = ", ".join(f"{k} {format_bytes(v)}" for k, v in sorted(self.parts.items(), key=lambda kv: -kv[1]))
        return f"{format_bytes(self.total)} ({parts})"


# --- what the machine has -----------------------------------------------------------

def available_memory(device: torch.device | str = "cpu") -> int:
    """Bytes that can be allocated now on ``device`` without swapping or failing (the ops'
    memory guard reads the same: :func:`pcsr_kernels.memory.available_bytes`)."""
    device = torch.device(device)
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"no memory estimate for {device.type} tensors (cpu and cuda only)")
    got = _kernel_memory.available_bytes(device)
    if got is None and device.type == "cpu":  # nothing readable: the free physical pages
        got = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if got is None:
        raise ValueError(f"the memory available on {device} cannot be read now (during CUDA graph capture)")
    return int(got)


def default_budget(device: torch.device | str = "cpu") -> int:
    """The default ``max_memory`` of tiled inference: :data:`DEFAULT_FRACTION` of
    :func:`available_memory`."""
    return int(DEFAULT_FRACTION * available_memory(device))


# --- the allocator ------------------------------------------------------------------

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
HEAP_THRESHOLD = 1 << 20
_heap_bounded = False


def return_freed_memory() -> bool:
    """Make glibc give every freed block of :data:`HEAP_THRESHOLD` bytes or more straight
    back to the system. Returns whether the setting is in force (glibc only).

    By default glibc raises its mmap threshold to the size of each large block freed (up
    to 32 MB), so later tensors below that size come from the heap and stay resident
    after they are freed: measured peaks then exceed the live bytes these estimates count
    by up to 45% (MSRResNet at 360x360: 187 MB resident for 132 MB live). With a fixed
    1 MiB threshold the measured peaks stay within the estimates (tests/test_memory.py),
    at the price of page faults on each new large tensor (tiled inference ~15% slower on
    the project's CPU machine). Process-wide and permanent: :func:`pcsr.tiling.upscale`
    calls it only when a memory budget actually binds.
    """
    global _heap_bounded
    if _heap_bounded:
        return True
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        _heap_bounded = bool(libc.mallopt(_M_MMAP_THRESHOLD, HEAP_THRESHOLD))
    except (OSError, AttributeError):
        return False
    return _heap_bounded


# --- the ops ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Heads:
    """The MLP widths the op buffers depend on."""
    D: int
    M: int
    first: tuple[int, ...]   # first-layer widths: classifier, then branch 0 .. M-1
    widest: int              # the widest layer of any MLP


def heads_of(model) -> Heads:
    mlps = [model.classifier, *model.upsamplers]
    return Heads(D=model.backbone.out_dim, M=model.num_branches,
                 first=tuple(m.widths[1] for m in mlps), widest=max(max(m.widths[1:]) for m in mlps))


def _round_up(v: int, m: int) -> int:
    return -(-v // m) * m


def op_bytes(op: str, backend: str, hd: Heads, B: int, h: int, w: int, H: int, W: int, T: int,
             adaptive: bool = False, refine: bool = True) -> int:
    """Peak bytes one call of ``torch.ops.pcsr.<op>`` allocates (its outputs included) for
    ``B`` images of ``h x w`` LR pixels upscaled to ``H x W``, at ``T`` bytes per value.

    ``op``: 'route_upsample' | 'classify' | 'route' | 'upsample' | 'refine'.
    """
    N, n, M, D = B * H * W, B * h * w, hd.M, hd.D
    if backend == "reference":
        band = max(W, min(N, (_REF_BAND // W) * W)) if W <= _REF_BAND else W
        # Per band: the [band, D+4] input and a branch's gathered rows, two hidden
        # activations, logits, indices. Measured (VmHWM, 240x320 -> 960x1280): 79 MB for
        # FSRCNN-PCSR's upsample bands, 101 MB for CARN-PCSR's; this gives 124 and 140.
        band_bytes = band * T * (2 * (D + 4) + 2 * hd.widest + M + 3) + band * 16
        classify = N * M * T + band_bytes
        if adaptive:  # heavy mass, normalised values, |v - c| and its argmin, float64 sums
            route = N * (M * T + 3 * T + 2 * M * T + 32)
        else:  # log(probs), the cost-weighted scores, argmax
            route = N * (3 * M * T + 8)
        upsample = N * (3 * T + 8) + band_bytes
        refine_b = N * (10 * T + 3)  # clone, heavy mask, max-pool, 3x3 mean, where (measured 9.8 T)
        per = {"classify": classify, "route": route, "upsample": upsample, "refine": refine_b,
               "route_upsample": max(classify, N * 8 + route, N * 8 + upsample,
                                     refine_b if refine else 0)}
    elif backend == "cpu":
        S = sum(_round_up(v, 16) for v in hd.first)
        tables = (H + W + D + 1) * S * T  # packed first layers: per-row/column tables
        per = {"classify": N * M * T + tables,
               "route": N * (8 + (T if adaptive else 0)),
               "upsample": N * 3 * T + tables,
               "refine": N * 3 * T,
               "route_upsample": N * (3 * T + 8 + (T if adaptive else 0)) + tables}
    elif backend == "triton":
        S = sum(max(16, _round_up(v, 64)) for v in hd.first)
        P = n * (S + D) * 4  # LR precompute in fp32, from a contiguous fp32 copy of feat
        # classes, then (heavy | sr + sorted indices | unrefined + refined sr), fp32 inside
        per = {"classify": N * M * 4 + P,
               "route": N * (8 + (4 if adaptive else 0)),
               "upsample": N * (12 + 4) + P,
               "refine": N * 12,
               "route_upsample": P + N * (8 + max(4 if adaptive else 0, 16, 24 if refine else 0))
               + (N * 3 * T if T != 4 else 0)}
    elif backend == "cuda":
        P = n * (sum(hd.first) + D) * T  # LR precompute, and feat made contiguous
        per = {"classify": N * M * T + P,
               "route": N * (8 + (T if adaptive else 0)),
               "upsample": N * (3 * T + 16) + P,
               "refine": N * 3 * T,
               "route_upsample": P + N * (3 * T + 8) + N * max(T if adaptive else 0, 8 + (3 * T if refine else 0))}
    else:
        raise ValueError(f"no memory model for backend {backend!r}")
    if op not in per:
        raise ValueError(f"unknown op {op!r}")
    return int(per[op]) + OP_SLACK


def backend_for(device: torch.device, dtype: torch.dtype | None = None) -> str:
    import pcsr_kernels.backend as kb

    return kb.resolved_name(device.type, dtype, "route_upsample")


# --- the model ------------------------------------------------------------------------

def backbone_footprint(model, dtype: torch.dtype):
    """:func:`pcsr.footprint.footprint` of the backbone the model runs at inference, or
    ``None`` (with the reason in ``model``'s cache) when its graph cannot be analysed.
    Cached on that backbone copy, which the model rebuilds when its weights change."""
    bb = model._inference_backbone()
    cache = bb.__dict__.setdefault("_pcsr_footprint", {})
    if dtype not in cache:
        try:
            cache[dtype] = footprint(bb, dtype)
        except Exception as e:  # noqa: BLE001 - untraceable or unknown layers: no analysis
            cache[dtype] = e
    fp = cache[dtype]
    return None if isinstance(fp, Exception) else fp


def footprint_error(model, dtype: torch.dtype) -> str:
    """Why :func:`backbone_footprint` gave ``None``."""
    backbone_footprint(model, dtype)
    e = model._inference_backbone().__dict__["_pcsr_footprint"][dtype]
    return f"{type(e).__name__}: {e}"


# Activation bytes per LR pixel and feature channel assumed for a backbone that cannot be
# analysed: the largest ratio of the three bundled families (CARN-M: 2288 / (52 * 4) = 11).
_UNKNOWN_ACT_PER_CHANNEL = 12


def _padding_growth(model, device: torch.device) -> float:
    """How much wider the backbone's activations are in the form ``forward`` runs on
    ``device`` (:mod:`pcsr.inference` pads channels on CUDA): the largest padded / original
    width, an upper bound on the growth of the analysed (unpadded) peak."""
    from .inference import default_form
    from .padding import padding_plan

    form = default_form(device.type, "ieee")
    plan = padding_plan(model.backbone, form.pad) if form.pad > 1 else None
    if not plan:
        return 1.0
    return max(p / w for key, (w, p) in ((k, v) for k, v in plan.items() if isinstance(v, tuple)))


def forward_estimate(model, lr_shape, H: int, W: int, dtype: torch.dtype, device: torch.device,
                     adaptive: bool = False, refine: bool = True) -> Estimate:
    """Peak bytes of ``PCSR.forward`` on one whole batch (the caller's input excluded)."""
    B, _, h, w = lr_shape
    T = torch.empty((), dtype=dtype).element_size()
    hd = heads_of(model)
    n = B * h * w
    x = 3 * T * n  # the normalised input, alive to the end
    fp = backbone_footprint(model, dtype)
    act = fp.act_bytes if fp is not None else _UNKNOWN_ACT_PER_CHANNEL * hd.D * T
    act *= _padding_growth(model, device)
    backbone = int(math.ceil(act * n)) + BACKBONE_SLACK
    feat = hd.D * T * n
    op = op_bytes("route_upsample", backend_for(device, dtype), hd, B, h, w, H, W, T, adaptive, refine)
    total = x + max(backbone, feat + op)
    if device.type == "cuda":
        total = int(total * CUDA_SLACK)
    return Estimate(total, {"backbone activations": backbone, "upsampling (outputs included)": op,
                            "features": feat, "normalised input": x})


def check_fits(what: str, est: Estimate, budget: int, hint: str = "") -> None:
    if est.total > budget:
        raise TooLargeError(f"{what} needs about {est} but {format_bytes(budget)} are available"
                            + (f"; {hint}" if hint else ""))
