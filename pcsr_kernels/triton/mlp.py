"""The fused per-pixel MLP, as Triton device functions shared by classify and upsample.

A block of BM pixels goes through every layer in one program. The first layer's
pre-activation is gathered from the LR precompute and completed with the rel-coord and
cell terms (see :mod:`.pack`). Each further layer is a K-looped matmul, ``BN`` output
columns at a time, ``BK`` = 16 inputs per ``tl.dot``; the activations between layers live
in a scratch tile private to the program (two [BM, HP] fp32 buffers, 96 KB at BM = 64,
HP = 192), written and re-read by the same thread block at once, so it stays in L1/L2:
it never reaches DRAM as a per-pixel matrix.

Why not keep the activations in registers: Triton lowers an fp32 (``ieee``) ``tl.dot``
to FMAs and holds a thread's whole slice of both operands along K in registers. For the
170-wide branch (K = 192) the register-resident version compiled for sm_90 spilled 9 KB
of stack per thread (ptxas -v; splitting the layer into 16-wide register chunks did not
help), while this loop compiles to 205 registers and no spill at BM = 64, BN = 64 and
8 warps as the 192-wide ieee branch kernel (Triton 3.6, ptxas -v; every kernel of the
package compiles for sm_90 without a spill at the launch parameters of :mod:`.config`).
"""
from __future__ import annotations

import triton
import triton.language as tl

BK = 16  # inputs per tl.dot: a thread's operand slices along K stay small


@triton.jit
def _first_layer_tile(p_ptr, row, ry, rx, first_ptr, cy, cx, mask, n0, HP: tl.constexpr, BN: tl.constexpr):
    """Columns n0 .. n0+BN of the first layer's pre-activation, [BM, BN]:
    ``P[lrpix] + ry*wy + rx*wx + (cy*wcy + cx*wcx + b0)``; row = first element of each pixel's P row."""
    c = n0 + tl.arange(0, BN)
    z = tl.load(p_ptr + row[:, None] + c[None, :], mask=mask[:, None], other=0.0)
    const = cy * tl.load(first_ptr + 2 * HP + c) + cx * tl.load(first_ptr + 3 * HP + c) + tl.load(first_ptr + 4 * HP + c)
    return (z + ry[:, None] * tl.load(first_ptr + c)[None, :] + rx[:, None] * tl.load(first_ptr + HP + c)[None, :]
            + const[None, :])


@triton.jit
def _relu_real(h, lo_ptr, n0: tl.constexpr, BN: tl.constexpr, REAL: tl.constexpr):
    """ReLU of output columns n0 .. n0+BN of a hidden layer, its padded columns set to 0;
    ``lo_ptr``: the layer's row of :attr:`.pack.PackedMLP.pad_lo`. ReLU keeps NaN (as
    torch.relu). Zeroing the padding matters once a value is not finite: a padded unit
    (zero weights) would otherwise hold 0 * inf = NaN and pass it, through the next layer's
    zero weights, to every real unit (0 * NaN = NaN) -- where the reference, which has no
    padding, may hold +-inf. How: see :func:`.tc_mlp._act` (maxnum with 0 / NaN). Columns
    below ``REAL`` are real in every layer: a tile that ends there is not touched."""
    h = tl.maximum(h, 0.0, propagate_nan=tl.PropagateNan.ALL)
    if n0 + BN > REAL:
        h = tl.maximum(h, tl.load(lo_ptr + n0 + tl.arange(0, BN))[None, :])
    return h


@triton.jit
def _mlp_block(p_ptr, row, ry, rx, first_ptr, cy, cx, mask,
               scr_ptr, wmid_ptr, bmid_ptr, wlast_ptr, blast_ptr, lo_ptr, NUM_MID,
               BM: tl.constexpr, HP: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
               OUT_P: tl.constexpr, REAL: tl.constexpr, PREC: tl.constexpr):
    """Every layer of the MLP for BM pixels: returns the last layer's output [BM, OUT_P].

    scr_ptr: this program's scratch, 2 * BM * HP floats. The barriers order the block's
    writes of a buffer before its reads, and its reads before the next overwrite.
    lo_ptr: :attr:`.pack.PackedMLP.pad_lo`, REAL the leading columns real in every hidden
    layer (whole BN tiles), for :func:`_relu_real`.
    """
    rows = tl.arange(0, BM)
    cn = tl.arange(0, BN)
    ck = tl.arange(0, BK)
    src = scr_ptr
    dst = scr_ptr + BM * HP
    tl.debug_barrier()  # the previous block's last reads of src are done
    for n0 in tl.static_range(0, HP, BN):
        h = _first_layer_tile(p_ptr, row, ry, rx, first_ptr, cy, cx, mask, n0, HP, BN)
        tl.store(src + rows[:, None] * HP + (n0 + cn)[None, :], _relu_real(h, lo_ptr, n0, BN, REAL))
    for l in range(NUM_MID):
        tl.debug_barrier()
        w = wmid_ptr + l * HP * HP
        for n0 in tl.static_range(0, HP, BN):
            acc = tl.zeros([BM, BN], dtype=tl.float32)
            for k0 in range(0, HP, BK):
                a = tl.load(src + rows[:, None] * HP + (k0 + ck)[None, :])
                acc = tl.dot(a, tl.load(w + (k0 + ck)[:, None] * HP + (n0 + cn)[None, :]), acc, input_precision=PREC)
            acc += tl.load(bmid_ptr + l * HP + n0 + cn)[None, :]
            tl.store(dst + rows[:, None] * HP + (n0 + cn)[None, :],
                     _relu_real(acc, lo_ptr + (l + 1) * HP, n0, BN, REAL))
        t = src
        src = dst
        dst = t
    tl.debug_barrier()
    co = tl.arange(0, OUT_P)
    out = tl.zeros([BM, OUT_P], dtype=tl.float32)
    for k0 in range(0, HP, BK):
        a = tl.load(src + rows[:, None] * HP + (k0 + ck)[None, :])
        out = tl.dot(a, tl.load(wlast_ptr + (k0 + ck)[:, None] * OUT_P + co[None, :]), out, input_precision=PREC)
    return out + tl.load(blast_ptr + co)[None, :]


@triton.jit
def _single_layer(p_ptr, row, ry, rx, first_ptr, cy, cx, mask, OUT_P: tl.constexpr):
    """An MLP that is one Linear: its output is the first layer's pre-activation, [BM, OUT_P]."""
    return _first_layer_tile(p_ptr, row, ry, rx, first_ptr, cy, cx, mask, 0, OUT_P, OUT_P)


@triton.jit
def _pixel_mlp(pix, HW, W, hw, w, p_ptr, p_stride, p_col, iy_ptr, ix_ptr, ry_ptr, rx_ptr, cy, cx, mask,
               first_ptr, scr_ptr, wmid_ptr, bmid_ptr, wlast_ptr, blast_ptr, lo_ptr, NUM_MID,
               ONE_LAYER: tl.constexpr, BM: tl.constexpr, HP: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
               OUT_P: tl.constexpr, REAL: tl.constexpr, PREC: tl.constexpr):
    """The MLP at BM HR pixels given by their raster index ``pix`` into B*H*W (masked lanes
    at a valid index): returns (output [BM, OUT_P], b, y, x) with b, y, x each pixel's image,
    row and column. The first layer reads the nearest LR pixel's row of P (p_stride values
    per LR pixel, this MLP's from column p_col)."""
    b = pix // HW
    r = pix - b * HW
    y = r // W
    x = r - y * W
    row = (b * hw + tl.load(iy_ptr + y) * w + tl.load(ix_ptr + x)) * p_stride + p_col
    ry = tl.load(ry_ptr + y)
    rx = tl.load(rx_ptr + x)
    if ONE_LAYER:
        out = _single_layer(p_ptr, row, ry, rx, first_ptr, cy, cx, mask, OUT_P)
    else:
        out = _mlp_block(p_ptr, row, ry, rx, first_ptr, cy, cx, mask, scr_ptr, wmid_ptr, bmid_ptr,
                         wlast_ptr, blast_ptr, lo_ptr, NUM_MID, BM, HP, BN, BK, OUT_P, REAL, PREC)
    return out, b, y, x


def check_tiles(BM: int, hp: int, bn: int, out_p: int, num_layers: int) -> None:
    """Host-side shape checks. The interpreter runs dots and aranges of any size; the GPU
    compiler wants every tile a power of two and every dot dimension >= 16."""
    def pow2(n):
        return n > 0 and n & (n - 1) == 0

    assert pow2(BM) and pow2(out_p), f"tile sizes BM = {BM}, OUT_P = {out_p} must be powers of two"
    if num_layers == 1:
        assert hp == out_p, (hp, out_p)
        return
    assert pow2(bn) and pow2(BK), f"tile sizes BN = {bn}, BK = {BK} must be powers of two"
    assert min(BM, bn, BK, out_p) >= 16, f"tl.dot needs every dimension >= 16, got BM={BM} BN={bn} BK={BK} OUT_P={out_p}"
    assert hp % bn == 0 and hp % BK == 0, f"padded width {hp} must be a multiple of BN = {bn} and BK = {BK}"
