"""Exact tiled inference: images of any size in bounded memory, with the whole-image result.

    from pcsr import tiling
    sr, classes = tiling.upscale(model, lr, 4)                 # tiles only when needed
    sr, classes = tiling.upscale(model, lr, 4, max_memory=2 << 30, out_dtype=torch.uint8)

What makes a tile reproduce the whole image:

* **Features.** Each tile's backbone input is cut from the image with a halo as wide as
  the backbone's receptive field (:mod:`pcsr.footprint`), so every feature the tile uses
  sees the same input as in the whole image: real pixels at an interior edge, the
  backbone's own zero padding at the image border (the tile is cut, never padded).
* **Geometry.** The ops compute their HR-to-LR tables from the sizes they are given, so a
  tile must be a piece of the image on which those tables are the whole image's, shifted.
  With ``H / h = p / q`` in lowest terms, LR crops that start at a multiple of ``q`` rows
  and span a multiple of ``q`` rows (or end at the border) map to HR crops of exactly
  ``p / q`` times their size; integer scales have ``q = 1``. Every crop's nearest-feature
  and bilinear indices are checked against the whole image's before anything runs; where
  a tie of the nearest-feature rounding (non-integer scales only) falls differently, the
  plan is refused with :class:`TilingError` rather than run inexactly.
* **Ownership.** Every HR pixel is owned by exactly one tile. A tile's LR crop covers the
  nearest features and both bilinear taps of its owned pixels plus a one-pixel HR margin,
  so refinement's 3x3 window (classes and unrefined values) is the whole image's too.
* **ADM** normalises and clusters the heavy mass of all pixels of an image, so with more
  than one tile it runs in two passes: every tile's heavy mass into one map, the
  ``route`` op (ADM) on that map, then every tile upsampled with the image's classes.

Memory: :mod:`pcsr.memory` estimates the peak of a plan (outputs, the largest tile's
backbone activations and op buffers, the ADM map) before anything is allocated; the
automatic plan is the whole image when it fits ``max_memory`` and otherwise the largest
square tiles that do. Classes are returned as uint8 (``M <= 256``: one byte per HR pixel
instead of eight), and ``out_dtype=torch.uint8`` quantises the image tile by tile, as an
8-bit file needs it, so a 15360x8640 result takes 0.53 GB instead of 2.65 GB. When a
budget binds on CPU, glibc is told to return freed blocks to the system
(:func:`pcsr.memory.return_freed_memory`), so the resident memory is what was planned.

How close: features, indices and ownership are the whole image's exactly, and so are the
relative-coordinate tables: every backend rounds them once from their exact values, which
depend only on a pixel's phase, not on the size of the image or tile
(``pcsr_kernels/geometry.py``). On the authors' demo image the tiled output equals the
whole image's bit for bit (``benchmarks/tiling_exactness.py``); in general sums whose
blocking depends on the size (convolutions, bands) may differ in the last bits.
ADM's Lloyd steps can amplify last-bit differences of the heavy mass into a cut that
moves by ~1e-6, so a few pixels that close to the cut may change class.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Sequence

import torch

import pcsr_kernels
from pcsr_kernels.geometry import bilinear_axis, nearest_axis

from . import memory
from .memory import Estimate, TooLargeError, format_bytes

__all__ = ["upscale", "plan", "Plan", "TooLargeError", "TilingError"]


class TilingError(ValueError):
    """The image cannot be cut into tiles that reproduce the whole-image result."""


@dataclass(frozen=True)
class Span:
    """One tile along one axis. ``core``: the HR rows it owns; ``crop``: the LR rows the
    upsampling ops see; ``hr``: the HR rows that crop maps to; ``halo``: the LR rows the
    backbone sees. Half-open ranges."""
    core: tuple[int, int]
    crop: tuple[int, int]
    hr: tuple[int, int]
    halo: tuple[int, int]


@dataclass(frozen=True)
class Plan:
    """How one image of ``h x w`` LR pixels is cut: tiles are ``ys x xs`` (row-major)."""
    h: int
    w: int
    H: int
    W: int
    ys: tuple[Span, ...]
    xs: tuple[Span, ...]
    estimate: Estimate

    @property
    def tiles(self) -> int:
        return len(self.ys) * len(self.xs)


def _check_args(model, lr, scale, k, max_memory, tile, out_dtype) -> torch.Tensor:
    """Every argument checked; returns ``lr`` as the model takes it (fp16/bf16 -> float32)."""
    from .model import PCSR, _check_image

    if not isinstance(model, PCSR):
        raise TypeError(f"model must be a pcsr.PCSR, got {type(model).__name__}")
    lr = _check_image("lr", lr)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    if not math.isfinite(float(k)):
        raise ValueError(f"k must be finite, got {k}")
    if max_memory is not None and (isinstance(max_memory, bool) or not isinstance(max_memory, (int, float))
                                   or not max_memory > 0):
        raise ValueError(f"max_memory must be a positive number of bytes, got {max_memory!r}")
    if tile is not None:
        t = (tile, tile) if isinstance(tile, int) else tuple(tile)
        if len(t) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in t):
            raise ValueError(f"tile must be a positive int or (rows, cols) of LR pixels, got {tile!r}")
    if out_dtype is not None and not (out_dtype.is_floating_point or out_dtype == torch.uint8):
        raise ValueError(f"out_dtype must be a floating dtype or torch.uint8, got {out_dtype}")
    if model.training:
        raise ValueError("model is in training mode: call model.eval() first (BatchNorm would normalise "
                         "each tile with its own statistics)")
    if model.num_branches > 256:
        raise ValueError(f"classes are returned as uint8: at most 256 branches, the model has {model.num_branches}")
    return lr


# --- planning --------------------------------------------------------------------------

class _Axis:
    """The whole image's tables along one axis, and how tiles may cut it."""

    def __init__(self, n: int, N: int, radius: int, margin: int, name: str):
        self.n, self.N, self.radius, self.margin, self.name = n, N, radius, margin, name
        r = Fraction(N, n)
        self.p, self.q = r.numerator, r.denominator  # q divides n since N * q = p * n
        self.iy = nearest_axis(N, n)[0]
        self.i0, self.i1, _ = bilinear_axis(N, n)
        self._cache: dict[int, tuple[Span, ...]] = {}

    def spans(self, core: int) -> tuple[Span, ...]:
        """Tiles owning about ``core`` LR pixels each (rounded to the cut unit ``q``)."""
        units = self.n // self.q
        per = max(1, core // self.q)
        count = min(units, -(-units // per))
        if count not in self._cache:
            cuts = [(i * units) // count for i in range(count + 1)]
            self._cache[count] = tuple(self._span(self.p * u0, self.p * u1) for u0, u1 in zip(cuts, cuts[1:]))
        return self._cache[count]

    def _span(self, A0: int, A1: int) -> Span:
        n, N, p, q = self.n, self.N, self.p, self.q
        R0, R1 = max(0, A0 - self.margin), min(N, A1 + self.margin)  # rows whose values it needs
        lo = int(min(self.iy[R0:R1].min(), self.i0[R0:R1].min()))
        hi = int(max(self.iy[R0:R1].max(), self.i1[R0:R1].max())) + 1
        a, b = (lo // q) * q, min(n, -(-hi // q) * q)
        hr = (a * p // q, b * p // q)
        assert hr[0] <= R0 and R1 <= hr[1], (hr, R0, R1)
        if (a, b) != (0, n):
            self._verify(a, b, hr, R0, R1)
        return Span((A0, A1), (a, b), hr, (max(0, a - self.radius), min(n, b + self.radius)))

    def _verify(self, a: int, b: int, hr: tuple[int, int], R0: int, R1: int) -> None:
        """The ops on the crop must pick the whole image's LR pixels for rows R0..R1."""
        li, l0, l1 = (t[R0 - hr[0]:R1 - hr[0]] + a for t in _index_tables(hr[1] - hr[0], b - a))
        for what, local, whole in (("nearest LR", li, self.iy), ("bilinear tap", l0, self.i0),
                                   ("bilinear tap", l1, self.i1)):
            bad = torch.nonzero(local != whole[R0:R1])
            if bad.numel():
                r = R0 + int(bad[0, 0])
                raise TilingError(
                    f"cannot tile the {self.name} axis exactly: {self.n} LR -> {self.N} HR pixels "
                    f"(ratio {self.p}/{self.q}); for HR {self.name} {r} a tile of LR {a}..{b} picks "
                    f"{what} {int(local[r - R0])} where the whole image picks {int(whole[r])} "
                    "(a rounding tie of the non-integer scale); run it untiled or use an integer scale")

    def min_core(self) -> int:
        return self.q


@functools.lru_cache(maxsize=64)
def _index_tables(n_out: int, n_in: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ops' nearest and bilinear LR indices for one (HR, LR) size pair (tiles of one
    plan share a few sizes)."""
    i0, i1, _ = bilinear_axis(n_out, n_in)
    return nearest_axis(n_out, n_in)[0], i0, i1


def _estimate(model, ys, xs, B, H, W, T, out_T, backend, device, adaptive, refine, act_pp) -> Estimate:
    """Peak bytes of running a plan (the caller's input excluded)."""
    hd = memory.heads_of(model)
    N = H * W
    length = lambda spans, key: max(getattr(s, key)[1] - getattr(s, key)[0] for s in spans)  # noqa: E731
    hh, hw = length(ys, "halo"), length(xs, "halo")
    ch, cw = length(ys, "crop"), length(xs, "crop")
    Hc, Wc = length(ys, "hr"), length(xs, "hr")
    oh, ow = length(ys, "core"), length(xs, "core")
    outputs = B * N * (3 * out_T + 1)
    x_halo = 2 * 3 * T * hh * hw  # the cut, and its normalised copy
    backbone = int(act_pp * hh * hw) + memory.BACKBONE_SLACK
    feat = hd.D * T * hh * hw
    lr_crop = 3 * T * ch * cw
    write = 2 * 3 * T * oh * ow  # the owned part denormalised, then quantised
    single = len(ys) == 1 and len(xs) == 1
    if not adaptive or single:
        op = memory.op_bytes("route_upsample", backend, hd, 1, ch, cw, Hc, Wc, T, adaptive, refine)
        tile = x_halo + max(backbone, feat + lr_crop + op + write)
        total, parts = outputs + tile, {"outputs": outputs, "largest tile": tile}
    else:
        p1 = memory.op_bytes("classify", backend, hd, 1, ch, cw, Hc, Wc, T) + Hc * Wc * T
        p2 = (memory.op_bytes("upsample", backend, hd, 1, ch, cw, Hc, Wc, T) + Hc * Wc * 8
              + (memory.op_bytes("refine", backend, hd, 1, ch, cw, Hc, Wc, T) - memory.OP_SLACK if refine else 0))
        tile = x_halo + max(backbone, feat + lr_crop + max(p1, p2) + write)
        heavy_map = N * T  # alive through pass 1 and the clustering
        adm = N * hd.M * T + memory.op_bytes("route", backend, hd, 1, 1, 1, H, W, T, adaptive=True)
        total = outputs + heavy_map + max(tile, adm)
        parts = {"outputs": outputs, "largest tile": tile, "ADM over the image": adm}
    if device.type == "cuda":
        total = int(total * memory.CUDA_SLACK)
    return Estimate(int(total), parts)


def plan(model, lr_shape: Sequence[int], scale: float, *, adaptive: bool = False, refine: bool = True,
         max_memory: int | None = None, tile: int | tuple[int, int] | None = None,
         out_dtype: torch.dtype | None = None, device: torch.device | str = "cpu") -> Plan:
    """Choose the tiles of :func:`upscale` (see there) without running anything."""
    from .model import output_size

    B, _, h, w = (int(v) for v in lr_shape)
    H, W = output_size(h, w, scale, None)
    device = torch.device(device)
    dtype = next(model.parameters()).dtype
    T = torch.empty((), dtype=dtype).element_size()
    out_T = torch.empty((), dtype=out_dtype or dtype).element_size()
    backend = memory.backend_for(device, dtype)
    fp = memory.backbone_footprint(model, dtype)
    margin = 1 if refine else 0
    # Without an analysable graph there is no receptive field: only the whole image is exact.
    radius = fp.radius if fp is not None else (h, w)
    act = fp.act_bytes if fp is not None else memory._UNKNOWN_ACT_PER_CHANNEL * model.backbone.out_dim * T
    ay = _Axis(h, H, radius[0], margin, "row")
    ax = _Axis(w, W, radius[1], margin, "column")
    budget = int(max_memory) if max_memory is not None else memory.default_budget(device)

    def make(ty: int, tx: int) -> Plan:
        ys, xs = ay.spans(ty), ax.spans(tx)
        est = _estimate(model, ys, xs, B, H, W, T, out_T, backend, device, adaptive, refine, act)
        return Plan(h, w, H, W, ys, xs, est)

    size = f"{B}x3x{h}x{w} -> {H}x{W}"
    if tile is not None:
        ty, tx = (tile, tile) if isinstance(tile, int) else tile
        if fp is None and (ty < h or tx < w):
            raise TilingError(f"cannot tile this backbone: {memory.footprint_error(model, dtype)}")
        p = make(ty, tx)
        # An explicit tile is held to max_memory when given, else to what the machine has.
        limit = budget if max_memory is not None else memory.available_memory(device)
        if p.estimate.total > limit:
            raise TooLargeError(f"tiles of {ty}x{tx} LR pixels for {size} need about {p.estimate}, "
                                f"more than the {format_bytes(limit)} "
                                + ("of max_memory" if max_memory is not None else "available"))
        return p
    whole = make(h, w)
    if whole.estimate.total <= budget:
        return whole
    if fp is None:
        raise TooLargeError(f"upscaling {size} needs about {whole.estimate}, more than "
                            f"{format_bytes(budget)}, and this backbone cannot be tiled "
                            f"({memory.footprint_error(model, dtype)})")
    try:
        smallest = make(1, 1)
    except TilingError as e:
        raise TilingError(f"upscaling {size} needs about {whole.estimate}, more than "
                          f"{format_bytes(budget)}, so it must be tiled, but {e}") from None
    if smallest.estimate.total > budget:
        outputs = smallest.estimate.parts["outputs"]
        why = ("the outputs alone need " + format_bytes(outputs)) if outputs > budget else \
            f"even the smallest tiles need about {smallest.estimate}"
        raise TooLargeError(f"upscaling {size} does not fit in {format_bytes(budget)}: {why}"
                            + ("" if max_memory is not None else " (the default budget is "
                               f"{memory.DEFAULT_FRACTION:.0%} of the available memory; set max_memory)"))
    # Largest square core that fits; the estimate grows with the core, so bisect.
    lo, hi = 1, max(h, w)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if make(mid, mid).estimate.total <= budget:
            lo = mid
        else:
            hi = mid - 1
    return make(lo, lo)


# --- running ---------------------------------------------------------------------------

@torch.no_grad()
def upscale(model, lr: torch.Tensor, scale: float, *, k: float = 0.0, adaptive: bool = False,
            refine: bool = True, max_memory: int | None = None, tile: int | tuple[int, int] | None = None,
            progress: Callable[[int, int], None] | None = None,
            out_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Upscale ``lr [B,3,h,w]`` in [0, 1] by ``scale``, in tiles when the whole image does
    not fit ``max_memory``: ``(sr [B,3,H,W], classes [B,H,W] uint8)``, equal to
    ``model(lr, scale=scale, ...)`` to float rounding.

    Args:
        k, adaptive, refine: as :meth:`pcsr.PCSR.forward`.
        max_memory: bytes this call may allocate (the input excluded); default
            :func:`pcsr.memory.default_budget` of the input's device. ``TooLargeError``
            when the outputs or the smallest tiles do not fit.
        tile: LR pixels each tile owns, ``n`` or ``(rows, cols)`` (rounded to the cut unit
            of a non-integer scale); ``None`` chooses from ``max_memory``.
        progress: called as ``progress(done, total)`` after each tile (ADM on several
            tiles makes two passes over them: ``total`` counts both).
        out_dtype: ``sr``'s dtype; default the model's. ``torch.uint8`` gives
            ``round(clamp(x, 0, 1) * 255)``, written tile by tile. ``sr`` is otherwise not
            clamped, as ``model(lr)``.
    """
    lr = _check_args(model, lr, scale, k, max_memory, tile, out_dtype)
    p = plan(model, lr.shape, scale, adaptive=adaptive, refine=refine, max_memory=max_memory, tile=tile,
             out_dtype=out_dtype, device=lr.device)
    if lr.device.type == "cpu" and (p.tiles > 1 or max_memory is not None):
        memory.return_freed_memory()  # so that the process's resident memory is what was planned
    B = lr.shape[0]
    dtype = next(model.parameters()).dtype
    sr = torch.empty(B, 3, p.H, p.W, dtype=out_dtype or dtype, device=lr.device)
    classes = torch.empty(B, p.H, p.W, dtype=torch.uint8, device=lr.device)
    run = _Runner(model, scale, k, refine, dtype)
    passes = 2 if adaptive and p.tiles > 1 else 1
    total, done = B * p.tiles * passes, 0

    def tick():
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    tiles = [(sy, sx) for sy in p.ys for sx in p.xs]
    for b in range(B):
        img = lr[b:b + 1]
        if passes == 1:
            for sy, sx in tiles:
                out, cls = run.route_upsample(img, sy, sx, adaptive)
                _store(sr[b:b + 1], classes[b:b + 1], out, cls, sy, sx, run, out_dtype)
                tick()
            continue
        heavy = torch.empty(p.H, p.W, dtype=dtype, device=lr.device)  # [H, W]
        for sy, sx in tiles:
            run.heavy_mass(img, sy, sx, heavy)
            tick()
        classes[b] = run.adm(heavy)
        del heavy
        for sy, sx in tiles:
            out = run.upsample(img, sy, sx, classes[b])
            _store(sr[b:b + 1], None, out, None, sy, sx, run, out_dtype)
            tick()
    return sr, classes


class _Runner:
    """The model's pieces applied to one tile of one image."""

    def __init__(self, model, scale: float, k: float, refine: bool, dtype: torch.dtype):
        self.model, self.k, self.refine, self.dtype = model, float(k), refine, dtype
        # the backbone in the device's prepared form (what model(lr) runs; pcsr.inference)
        self.backbone = model._runtime_backbone(next(model.parameters()).device.type)
        self.cost = model.cost(scale)
        self.cls_params = model.classifier.flat_params()
        self.ups = [q for u in model.upsamplers for q in u.flat_params()]
        self.depths = [len(u.widths) - 1 for u in model.upsamplers]
        self.M = model.num_branches

    def features(self, img, sy: Span, sx: Span):
        """(features [1,D,crop], normalised LR [1,3,crop]) of the tile's crop."""
        (ya, yb), (xa, xb) = sy.halo, sx.halo
        x = self.model.normalise(img[:, :, ya:yb, xa:xb].to(self.dtype))  # [1, 3, halo]
        feat = self.backbone(x)  # [1, D, halo]
        rows = slice(sy.crop[0] - ya, sy.crop[1] - ya)
        cols = slice(sx.crop[0] - xa, sx.crop[1] - xa)
        return feat[:, :, rows, cols], x[:, :, rows, cols].contiguous()

    def route_upsample(self, img, sy: Span, sx: Span, adaptive: bool):
        feat, x = self.features(img, sy, sx)
        size = (sy.hr[1] - sy.hr[0], sx.hr[1] - sx.hr[0])
        return pcsr_kernels.route_upsample(feat, x, size, self.cls_params, self.ups, self.depths,
                                           self.cost.to(feat), self.k, adaptive, self.refine)

    def heavy_mass(self, img, sy: Span, sx: Span, heavy: torch.Tensor) -> None:
        feat, _ = self.features(img, sy, sx)
        size = (sy.hr[1] - sy.hr[0], sx.hr[1] - sx.hr[0])
        probs = pcsr_kernels.classify(feat, size, self.cls_params)  # [1, Hc, Wc, M]
        del feat
        own = probs[0, _rel(sy.core, sy.hr), _rel(sx.core, sx.hr), : (self.M + 1) // 2]
        heavy[sy.core[0]:sy.core[1], sx.core[0]:sx.core[1]] = own.sum(-1)

    def adm(self, heavy: torch.Tensor) -> torch.Tensor:
        """ADM of one image from its heavy-mass map [H, W] -> classes [H, W] int64. The
        route op reads only the heavy branches' summed probability, so the map goes in as
        branch 0 with the other heavy branches at zero."""
        H, W = heavy.shape
        probs = heavy.new_zeros(1, H, W, self.M)  # [1, H, W, M]
        probs[0, :, :, 0] = heavy
        return pcsr_kernels.route(probs, self.cost.to(probs), 0.0, True)[0]

    def upsample(self, img, sy: Span, sx: Span, classes: torch.Tensor) -> torch.Tensor:
        feat, x = self.features(img, sy, sx)
        cls = classes[sy.hr[0]:sy.hr[1], sx.hr[0]:sx.hr[1]].to(torch.int64)[None]  # [1, Hc, Wc]
        out = pcsr_kernels.upsample(feat, x, cls, self.ups, self.depths)
        del feat
        if self.refine:
            out = pcsr_kernels.refine(out, cls, self.M)
        return out


def _rel(core: tuple[int, int], hr: tuple[int, int]) -> slice:
    return slice(core[0] - hr[0], core[1] - hr[0])


def _store(sr_b, cls_b, out, cls, sy: Span, sx: Span, run: _Runner, out_dtype) -> None:
    """Write the tile's owned pixels of one image (``sr_b [1,3,H,W]``, ``cls_b [1,H,W]``):
    denormalised as ``PCSR.forward`` does, quantised as an 8-bit file is for uint8."""
    rows, cols = _rel(sy.core, sy.hr), _rel(sx.core, sx.hr)
    part = run.model.denormalise(out[:, :, rows, cols])  # [1, 3, owned]
    if out_dtype == torch.uint8:
        part = part.mul_(255).round_().clamp_(0, 255)
    sr_b[:, :, sy.core[0]:sy.core[1], sx.core[0]:sx.core[1]] = part
    if cls is not None:
        cls_b[:, sy.core[0]:sy.core[1], sx.core[0]:sx.core[1]] = cls[:, rows, cols]
