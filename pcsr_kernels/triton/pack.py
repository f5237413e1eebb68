"""What the Triton kernels read besides the images, prepared once and cached.

Packed MLP weights. For an MLP ``[W0, b0, ..., W_{L-1}, b_{L-1}]`` (nn.Linear layout) whose
first layer reads ``[z (D), ry, rx, cell_y, cell_x]``, the exact split of the first layer
(DESIGN.md section 3)::

    W0 [z; ry; rx; cy; cx] + b0 = (W0[:, :D] z) + ry W0[:, D] + rx W0[:, D+1] + (cy W0[:, D+2] + cx W0[:, D+3] + b0)

turns its feature term into a GEMM at LR resolution (``lr_precompute``: s^2 times fewer rows
than HR pixels) and the rest into five vectors. Layout, fp32, zero padded::

    wz     [HP, D]           W0[:, :D] (rows padded)                 -> lr_precompute
    first  [5, HP]           W0[:, D], W0[:, D+1], W0[:, D+2], W0[:, D+3], b0
    wmid   [max(L-2,1), HP, HP]  W_l^T, l = 1 .. L-2 (k rows, n columns)
    bmid   [max(L-2,1), HP]
    wlast  [HP, OUT_P]       W_{L-1}^T
    blast  [OUT_P]
    pad_lo [max(L-1,1), HP]  per hidden layer: NaN in its real columns, 0 in its padded ones

``HP``: the hidden width padded to a multiple of ``BN``, the width of one output tile of a
layer (64, 32 or 16: the largest whose padding costs at most 30% more FLOPs, else the
tightest; 170 -> 192 in tiles of 64, 74 -> 80 in tiles of 16, 40 -> 48, 10 -> 16). Zero
padding is exact: a padded unit has zero weights and bias, ReLU(0) = 0, and it feeds
nothing. The kernels still zero the padded units of every hidden layer
(``mlp._relu_real``, ``tc_mlp._act``): with an infinite input, 0 * inf would make them NaN.
The columns below ``real_cols`` (:class:`PackedMLP`) are real in every hidden layer, so the
kernels skip that mask there at compile time. With a single Linear (no dot) ``HP = OUT_P``,
the output width padded to a power of two.

The cache key holds each tensor's identity (a weak reference, so a freed tensor whose
address is reused cannot hit), data pointer, version counter (bumped by every in-place
update: optimiser steps, ``load_state_dict``, ``copy_`` under ``no_grad``), shape, stride,
dtype and device. Writes through ``.data`` bypass the version counter; inference-mode
tensors have none and are packed on every call.
"""
from __future__ import annotations

import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import torch

from ..geometry import Tables, bilinear_axis


def check_dtype(t: torch.Tensor) -> None:
    """The kernels compute in fp32: fp32/fp16/bf16 inputs are fine; fp64 would lose precision silently."""
    if t.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"the triton backend computes in float32 and takes float32/float16/bfloat16 tensors, "
                        f"got {t.dtype}; use the reference or cpu backend for {t.dtype}")


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def hidden_tiling(w: int) -> tuple[int, int]:
    """Hidden width -> (HP, BN): the padded width and its output-tile width."""
    tight = -(-int(w) // 16) * 16
    for bn in (64, 32):
        hp = -(-int(w) // bn) * bn
        if hp * hp <= 1.3 * w * w or hp == tight:
            return hp, bn
    return tight, 16


@dataclass
class PackedMLP:
    D: int
    out: int            # real output width (3 RGB, or M logits)
    num_layers: int     # L
    hp: int             # padded hidden width (the padded output width when L == 1)
    bn: int             # output-tile width of the hidden layers (0 when L == 1)
    out_p: int          # padded output width (the last dot's N)
    wz: torch.Tensor
    first: torch.Tensor
    wmid: torch.Tensor
    bmid: torch.Tensor
    wlast: torch.Tensor
    blast: torch.Tensor
    pad_lo: torch.Tensor
    min_width: int      # the narrowest hidden layer (host-side: no device read)

    @property
    def num_mid(self) -> int:
        return max(0, self.num_layers - 2)

    def real_cols(self, tiles: Sequence[int]) -> int:
        return real_cols(tiles, self.min_width)


def real_cols(tiles: Sequence[int], min_width: int) -> int:
    """How many leading hidden columns are real in every layer (the narrowest has
    ``min_width``), rounded down to the end of one of ``tiles`` (a kernel's column tiles,
    in order): the kernels mask padded units only in tiles past it (a constexpr, so one
    kernel serves every width that rounds to the same value)."""
    end = 0
    for t in tiles:
        if t == 0 or end + t > min_width:
            break
        end += t
    return end


def _pack(params: Sequence[torch.Tensor], D: int, tiling=None) -> PackedMLP:
    """``tiling(widths) -> (HP, BN)`` of the hidden layers (default :func:`hidden_tiling`)."""
    L = len(params) // 2
    dev = params[0].device
    W = [params[2 * i].detach().to(torch.float32) for i in range(L)]
    b = [params[2 * i + 1].detach().to(torch.float32) for i in range(L)]
    out = W[-1].shape[0]
    if L == 1:  # the first layer is the output: no dot, any power of two will do
        HP, BN, out_p = max(2, next_pow2(out)), 0, max(2, next_pow2(out))
    else:
        HP, BN = (tiling or hidden_tiling)(max(w.shape[0] for w in W[:-1]))
        out_p = max(16, next_pow2(out))
    n0 = W[0].shape[0]
    z = dict(dtype=torch.float32, device=dev)
    wz = torch.zeros(HP, D, **z)
    wz[:n0] = W[0][:, :D]
    first = torch.zeros(5, HP, **z)
    first[:4, :n0] = W[0][:, D:D + 4].t()
    first[4, :n0] = b[0]
    wmid = torch.zeros(max(L - 2, 1), HP, HP, **z)
    bmid = torch.zeros(max(L - 2, 1), HP, **z)
    for l in range(1, L - 1):
        o, i = W[l].shape
        wmid[l - 1, :i, :o] = W[l].t()
        bmid[l - 1, :o] = b[l]
    wlast = torch.zeros(HP if L > 1 else 1, out_p, **z)
    blast = torch.zeros(out_p, **z)
    if L > 1:
        wlast[: W[-1].shape[1], :out] = W[-1].t()
        blast[:out] = b[-1]
    hidden = [w.shape[0] for w in W[:-1]] or [out]
    pad_lo = torch.zeros(len(hidden), HP, **z)
    for l, n in enumerate(hidden):
        pad_lo[l, :n] = float("nan")
    return PackedMLP(D, out, L, HP, BN, out_p, wz, first, wmid, bmid, wlast, blast, pad_lo, min(hidden))


_CACHE_SIZE = 16
_cache: OrderedDict = OrderedDict()


def _key(params, D):
    try:
        return (D,) + tuple((id(t), t.data_ptr(), t._version, tuple(t.shape), t.stride(), t.dtype, t.device)
                            for t in params)
    except RuntimeError:  # inference tensors have no version counter
        return None


def packed_mlp(params: Sequence[torch.Tensor], D: int) -> PackedMLP:
    """The packed copy of one MLP's weights, from the cache when they did not change."""
    return _cached(params, D, lambda: _pack(params, D))


def _cached(params, tag, make):
    key = _key(params, tag)
    if key is None:
        return make()
    hit = _cache.get(key)
    if hit is not None:
        refs, packed = hit
        if all(r() is t for r, t in zip(refs, params)):
            _cache.move_to_end(key)
            return packed
    packed = make()
    _cache[key] = ([weakref.ref(t) for t in params], packed)
    while len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return packed


@dataclass
class PackedTC:
    """One MLP packed for the register-chunked kernels (:mod:`.tc_mlp`): the layout of
    :class:`PackedMLP` with ``HP = sum(chunks)``, and ``wmid``/``wlast`` in the dot operand
    type of ``mode``: ``"fp32"``, ``"bf16"`` (bfloat16 tensors) or ``"bf16emu"`` (fp32
    values rounded to bfloat16, for the interpreter)."""
    base: PackedMLP
    chunks: tuple
    mode: str
    wmid: torch.Tensor
    wlast: torch.Tensor

    def __getattr__(self, name):  # D, out, num_layers, hp, out_p, wz, first, bmid, blast, num_mid
        return getattr(self.base, name)

    @property
    def one(self) -> bool:
        return self.base.num_layers == 1

    @property
    def real(self) -> int:
        """The kernels' ``REAL``: leading columns real in every hidden layer, whole chunks."""
        return self.base.real_cols(self.chunks)


WEIGHT_MODES = ("fp32", "bf16", "bf16emu")


def weight_mode(prec: str) -> str:
    """The weights' mode for a kernel PREC (see :func:`.tc_mlp.kernel_precision`)."""
    return prec if prec in ("bf16", "bf16emu") else "fp32"


def _pack_tc(params: Sequence[torch.Tensor], D: int, mode: str) -> PackedTC:
    from .tc_mlp import chunking

    L = len(params) // 2
    if L == 1:  # no dot: the output columns padded to a power of two (RGB -> 4)
        p = _pack(params, D)
        chunks = (p.hp, 0, 0, 0)
    else:
        chunks = chunking(max(params[2 * i].shape[0] for i in range(L - 1)))
        p = _pack(params, D, tiling=lambda w: (sum(chunks), 0))
    wmid, wlast = p.wmid, p.wlast
    if mode == "bf16":
        wmid, wlast = wmid.to(torch.bfloat16), wlast.to(torch.bfloat16)
    elif mode == "bf16emu":
        wmid, wlast = wmid.to(torch.bfloat16).to(torch.float32), wlast.to(torch.bfloat16).to(torch.float32)
    return PackedTC(p, chunks, mode, wmid.contiguous(), wlast.contiguous())


def packed_tc(params: Sequence[torch.Tensor], D: int, mode: str = "fp32") -> PackedTC:
    """The chunked packing of one MLP (see :class:`PackedTC`), cached as :func:`packed_mlp`."""
    assert mode in WEIGHT_MODES, mode
    return _cached(params, ("tc", D, mode), lambda: _pack_tc(params, D, mode))


def lr_precompute(feat: torch.Tensor, packs: Sequence[PackedMLP], mode: str = "fp32") -> tuple[torch.Tensor, list[int]]:
    """The first layers' feature terms of several MLPs at LR resolution, in one GEMM.

    Returns ``P [B*h*w, S]`` (row = LR pixel, channels last so that a kernel gathers one
    contiguous row per HR pixel) and each MLP's first column in it. The GEMM is fp32 (it
    follows ``torch.backends.cuda.matmul.allow_tf32``, off by default); ``mode`` "bf16"
    stores P in bfloat16 (half the bytes the kernels gather), "bf16emu" rounds it to
    bfloat16 and keeps fp32 (the interpreter has no bfloat16).
    """
    B, D, h, w = feat.shape
    wz = torch.cat([p.wz for p in packs], 0)  # [S, D]
    f = feat.to(torch.float32).reshape(B, D, h * w).transpose(1, 2)  # [B, h*w, D], a view
    P = torch.matmul(f, wz.t()).reshape(B * h * w, wz.shape[0])  # [B*h*w, S]
    if mode == "bf16":
        P = P.to(torch.bfloat16)
    elif mode == "bf16emu":
        P = P.to(torch.bfloat16).to(torch.float32)
    cols, at = [], 0
    for p in packs:
        cols.append(at)
        at += p.hp
    return P, cols


@dataclass
class Geometry:
    """Per-axis tables of one (LR size, HR size) pair (see :mod:`pcsr_kernels.geometry`)."""
    iy: torch.Tensor    # [H] int64 nearest LR row
    ix: torch.Tensor    # [W]
    ry: torch.Tensor    # [H] fp32 relative coordinate
    rx: torch.Tensor    # [W]
    cell_y: float
    cell_x: float
    by0: torch.Tensor   # [H] int64 bilinear taps and weight
    by1: torch.Tensor
    bly: torch.Tensor   # [H] fp32
    bx0: torch.Tensor   # [W]
    bx1: torch.Tensor
    blx: torch.Tensor


_geom: OrderedDict = OrderedDict()


def geometry(h: int, w: int, H: int, W: int, device) -> Geometry:
    key = (h, w, H, W, str(device))
    g = _geom.get(key)
    if g is None:
        t = Tables(h, w, H, W, device)
        by0, by1, bly = bilinear_axis(H, h, device)
        bx0, bx1, blx = bilinear_axis(W, w, device)
        g = Geometry(t.iy.contiguous(), t.ix.contiguous(), t.ry.contiguous(), t.rx.contiguous(),
                     t.cell_y, t.cell_x, by0, by1, bly, bx0, bx1, blx)
        _geom[key] = g
        while len(_geom) > _CACHE_SIZE:
            _geom.popitem(last=False)
    else:
        _geom.move_to_end(key)
    return g
