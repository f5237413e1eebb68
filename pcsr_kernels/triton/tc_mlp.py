"""Per-pixel MLPs on tensor cores with the activations in registers: the device functions
shared by the dense pass (:mod:`.dense`: classifier and lightest branch) and the branch
kernels (:mod:`.branch`).

How the work is split: a program holds BM pixels. A hidden layer of padded width
``HP = C0 + C1 + C2 + C3`` lives in registers as up to four column chunks ``[BM, Ci]``
(each a power of two >= 16: 170 -> 64+64+64, 74 -> 64+16, 58 -> 64, 40 -> 32+16,
10 -> 16); the next layer's chunk ``n`` is ``relu(sum_k a_k @ W[k, n] + b[n])``, one
``tl.dot`` per (k, n) pair, so no activation ever leaves the register file and no scratch
buffer or barrier sits between layers. The first layer comes from the LR precompute
(:mod:`.pack`): ``P[lr pixel] + ry*wy + rx*wx + (cy*wcy + cx*wcx + b0)``; the last layer's
3 outputs are padded to 16 columns (a dot's N must be >= 16), or 4 for a single Linear,
which needs no dot.

Precision (``PREC``, a constexpr):
  ``"ieee"``, ``"tf32x3"``, ``"tf32"``: fp32 activations and weights, ``tl.dot``'s
  ``input_precision``; ``"bf16"``: activations cast to bf16 after each ReLU, bf16
  weights, fp32 accumulation and biases; ``"bf16emu"``: the same numbers under Triton's
  interpreter, which has no bf16: activations rounded to the nearest bf16 (ties to even)
  by integer arithmetic on their fp32 bits and kept in fp32, weights and P rounded on the
  host. A product of two bf16 values is exact in fp32, so this differs from the tensor
  cores' bf16 dot only in the order of the fp32 sums.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _round_bf16(x):
    """x rounded to the nearest bfloat16 (ties to even), as fp32."""
    u = x.to(tl.uint32, bitcast=True)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.to(tl.float32, bitcast=True)


@triton.jit
def _act(x, lo_ptr, N0: tl.constexpr, CN: tl.constexpr, REAL: tl.constexpr, PREC: tl.constexpr):
    """ReLU of the pre-activation x [BM, CN] of columns N0..N0+CN of a hidden layer, padded
    columns set to 0, then the operand type of the next dot.

    ReLU keeps NaN, as torch.relu (``tl.maximum``'s default returns the other operand on
    the GPU). Padded units are zeroed (see :func:`_mlp` for why) without a per-element
    select: a padded unit's pre-activation is 0 or NaN (products with zero weights, zero
    bias), so ``maxnum(relu(x), lo)``, with ``lo`` the layer's row of
    :attr:`.pack.PackedMLP.pad_lo` (0 in padded columns, NaN in real ones), gives 0 there
    and relu(x) in the real columns: maxnum returns its other operand when one is NaN (IEEE
    maxNum: max.f32 on the GPU, numpy's fmax under the interpreter). ``lo`` is loaded as
    the bias is, so it adds one max per element of a padded chunk and no index math; a
    select on a column compare made the sm_90 build of the widest bf16 branch spill
    (Triton 3.6: LLVM moved it past the bf16 conversion). Chunks that end at or before
    ``REAL`` hold no padding in any layer and are not touched (compile time)."""
    x = tl.maximum(x, 0.0, propagate_nan=tl.PropagateNan.ALL)
    if N0 + CN > REAL:
        x = tl.maximum(x, tl.load(lo_ptr + N0 + tl.arange(0, CN))[None, :])
    if PREC == "bf16":
        return x.to(tl.bfloat16)
    elif PREC == "bf16emu":
        return _round_bf16(x)
    else:
        return x


@triton.jit
def _dot(a, w, acc, PREC: tl.constexpr):
    if PREC == "bf16":
        return tl.dot(a, w, acc)
    elif PREC == "bf16emu":
        return tl.dot(a, w, acc, input_precision="ieee")
    else:
        return tl.dot(a, w, acc, input_precision=PREC)


@triton.jit
def _wblock(w_ptr, LD: tl.constexpr, K0: tl.constexpr, CK: tl.constexpr, N0: tl.constexpr, CN: tl.constexpr):
    """Rows K0..K0+CK, columns N0..N0+CN of a row-major [*, LD] weight matrix (k rows, n columns)."""
    k = K0 + tl.arange(0, CK)
    n = N0 + tl.arange(0, CN)
    return tl.load(w_ptr + k[:, None] * LD + n[None, :])


@triton.jit
def _col(a0, a1, a2, a3, w_ptr, LD: tl.constexpr, N0: tl.constexpr, CN: tl.constexpr,
         C0: tl.constexpr, C1: tl.constexpr, C2: tl.constexpr, C3: tl.constexpr, BM: tl.constexpr,
         PREC: tl.constexpr):
    """Columns N0..N0+CN of [a0 | a1 | a2 | a3] @ W, fp32 [BM, CN]."""
    acc = tl.zeros([BM, CN], dtype=tl.float32)
    acc = _dot(a0, _wblock(w_ptr, LD, 0, C0, N0, CN), acc, PREC)
    if C1 > 0:
        acc = _dot(a1, _wblock(w_ptr, LD, C0, C1, N0, CN), acc, PREC)
    if C2 > 0:
        acc = _dot(a2, _wblock(w_ptr, LD, C0 + C1, C2, N0, CN), acc, PREC)
    if C3 > 0:
        acc = _dot(a3, _wblock(w_ptr, LD, C0 + C1 + C2, C3, N0, CN), acc, PREC)
    return acc


@triton.jit
def _first(p_ptr, prow, ry, rx, cy, cx, mask, first_ptr, HP: tl.constexpr, N0: tl.constexpr, CN: tl.constexpr):
    """Columns N0..N0+CN of the first layer's pre-activation, fp32 [BM, CN]; ``prow`` is the
    offset of each pixel's row (and the MLP's first column) in P."""
    c = N0 + tl.arange(0, CN)
    z = tl.load(p_ptr + prow[:, None] + c[None, :], mask=mask[:, None], other=0.0).to(tl.float32)
    const = cy * tl.load(first_ptr + 2 * HP + c) + cx * tl.load(first_ptr + 3 * HP + c) + tl.load(first_ptr + 4 * HP + c)
    return (z + ry[:, None] * tl.load(first_ptr + c)[None, :] + rx[:, None] * tl.load(first_ptr + HP + c)[None, :]
            + const[None, :])


@triton.jit
def _layer(a0, a1, a2, a3, w_ptr, b_ptr, lo_ptr, C0: tl.constexpr, C1: tl.constexpr, C2: tl.constexpr,
           C3: tl.constexpr, REAL: tl.constexpr, BM: tl.constexpr, PREC: tl.constexpr):
    """One hidden layer: the next activation's chunks (absent chunks repeat chunk 0)."""
    HP: tl.constexpr = C0 + C1 + C2 + C3
    n0 = _act(_col(a0, a1, a2, a3, w_ptr, HP, 0, C0, C0, C1, C2, C3, BM, PREC)
              + tl.load(b_ptr + tl.arange(0, C0))[None, :], lo_ptr, 0, C0, REAL, PREC)
    n1 = n0
    n2 = n0
    n3 = n0
    if C1 > 0:
        n1 = _act(_col(a0, a1, a2, a3, w_ptr, HP, C0, C1, C0, C1, C2, C3, BM, PREC)
                  + tl.load(b_ptr + C0 + tl.arange(0, C1))[None, :], lo_ptr, C0, C1, REAL, PREC)
    if C2 > 0:
        n2 = _act(_col(a0, a1, a2, a3, w_ptr, HP, C0 + C1, C2, C0, C1, C2, C3, BM, PREC)
                  + tl.load(b_ptr + C0 + C1 + tl.arange(0, C2))[None, :], lo_ptr, C0 + C1, C2, REAL, PREC)
    if C3 > 0:
        n3 = _act(_col(a0, a1, a2, a3, w_ptr, HP, C0 + C1 + C2, C3, C0, C1, C2, C3, BM, PREC)
                  + tl.load(b_ptr + C0 + C1 + C2 + tl.arange(0, C3))[None, :], lo_ptr, C0 + C1 + C2, C3, REAL,
                  PREC)
    return n0, n1, n2, n3


@triton.jit
def _mlp(p_ptr, prow, ry, rx, cy, cx, mask, first_ptr, wmid_ptr, bmid_ptr, wlast_ptr, blast_ptr, lo_ptr, NUM_MID,
         BM: tl.constexpr, C0: tl.constexpr, C1: tl.constexpr, C2: tl.constexpr, C3: tl.constexpr,
         OUT_P: tl.constexpr, ONE: tl.constexpr, REAL: tl.constexpr, PREC: tl.constexpr):
    """Every layer of one MLP for BM pixels: the last layer's output, fp32 [BM, OUT_P].
    ``ONE``: the MLP is a single Linear, its output is the first layer (C0 == OUT_P).

    The padded units of every hidden layer are kept exactly 0 (:func:`_act`, ``lo_ptr``:
    :attr:`.pack.PackedMLP.pad_lo`, ``REAL``: :attr:`.pack.PackedTC.real`). Their zero
    weights do not do it once a value is not finite: a padded unit would hold 0 * inf = NaN
    (from P's padded columns, 0 * feat, when feat holds an infinity; from an infinite unit
    of the previous layer) and pass it through the next layer's zero weights to every real
    unit (0 * NaN = NaN), where the reference, which has no padding, may hold a number or
    +-inf."""
    HP: tl.constexpr = C0 + C1 + C2 + C3
    if ONE:
        out = _first(p_ptr, prow, ry, rx, cy, cx, mask, first_ptr, HP, 0, OUT_P)
    else:
        a0 = _act(_first(p_ptr, prow, ry, rx, cy, cx, mask, first_ptr, HP, 0, C0), lo_ptr, 0, C0, REAL, PREC)
        a1 = a0
        a2 = a0
        a3 = a0
        if C1 > 0:
            a1 = _act(_first(p_ptr, prow, ry, rx, cy, cx, mask, first_ptr, HP, C0, C1), lo_ptr, C0, C1, REAL, PREC)
        if C2 > 0:
            a2 = _act(_first(p_ptr, prow, ry, rx, cy, cx, mask, first_ptr, HP, C0 + C1, C2), lo_ptr, C0 + C1, C2,
                      REAL, PREC)
        if C3 > 0:
            a3 = _act(_first(p_ptr, prow, ry, rx, cy, cx, mask, first_ptr, HP, C0 + C1 + C2, C3), lo_ptr,
                      C0 + C1 + C2, C3, REAL, PREC)
        for l in range(NUM_MID):
            a0, a1, a2, a3 = _layer(a0, a1, a2, a3, wmid_ptr + l * HP * HP, bmid_ptr + l * HP, lo_ptr + (l + 1) * HP,
                                    C0, C1, C2, C3, REAL, BM, PREC)
        out = _col(a0, a1, a2, a3, wlast_ptr, OUT_P, 0, OUT_P, C0, C1, C2, C3, BM, PREC)
        out += tl.load(blast_ptr + tl.arange(0, OUT_P))[None, :]
    return out


@triton.jit
def _coords(pix, HW, W, hw, w, iy_ptr, ix_ptr, ry_ptr, rx_ptr, IDX64: tl.constexpr):
    """HR pixel index (b*H + y)*W + x -> (b, r = y*W + x, y, x, LR pixel row b*h*w + iy*w + ix,
    ry, rx). int32 arithmetic unless ``IDX64`` (then pix must be int64)."""
    if IDX64:
        pix = pix.to(tl.int64)
    else:
        pix = pix.to(tl.int32)
    b = pix // HW
    r = pix - b * HW
    y = r // W
    x = r - y * W
    iy = tl.load(iy_ptr + y)
    ix = tl.load(ix_ptr + x)
    if IDX64:
        lrow = b * hw + iy * w + ix
    else:
        lrow = (b * hw + iy * w + ix).to(tl.int32)
    return b, r, y, x, lrow, tl.load(ry_ptr + y), tl.load(rx_ptr + x)


@triton.jit
def _store_rgb(res, mask, b, r, y, x, HW, hw, w, lr_ptr, by0_ptr, by1_ptr, bly_ptr, bx0_ptr, bx1_ptr, blx_ptr,
               out_ptr, OUT_P: tl.constexpr):
    """out[b, c, y, x] = res[:, c] + bilinear(lr)[b, c, y, x] for c < 3 (align_corners=False,
    separable taps from tables, as F.interpolate)."""
    col = tl.arange(0, OUT_P)
    m2 = mask[:, None] & (col < 3)[None, :]
    y0 = tl.load(by0_ptr + y)
    y1 = tl.load(by1_ptr + y)
    x0 = tl.load(bx0_ptr + x)
    x1 = tl.load(bx1_ptr + x)
    ly = tl.load(bly_ptr + y)[:, None]
    lx = tl.load(blx_ptr + x)[:, None]
    lrc = lr_ptr + (b * 3 * hw)[:, None] + col[None, :] * hw  # [BM, OUT_P] channel planes
    v00 = tl.load(lrc + (y0 * w + x0)[:, None], mask=m2, other=0.0)
    v01 = tl.load(lrc + (y0 * w + x1)[:, None], mask=m2, other=0.0)
    v10 = tl.load(lrc + (y1 * w + x0)[:, None], mask=m2, other=0.0)
    v11 = tl.load(lrc + (y1 * w + x1)[:, None], mask=m2, other=0.0)
    base = (1.0 - ly) * ((1.0 - lx) * v00 + lx * v01) + ly * ((1.0 - lx) * v10 + lx * v11)
    tl.store(out_ptr + (b * 3 * HW + r)[:, None] + col[None, :] * HW, res + base, mask=m2)


# --- host side --------------------------------------------------------------------------------

MAX_CHUNKS = 4


def chunking(width: int) -> tuple[int, int, int, int]:
    """Hidden width -> register chunk widths (C0, C1, C2, C3), 0 = absent.

    Full chunks of B = 64 (B = the next power of two of width/4 above 256 wide), then the
    rest as one power of two >= 16, or two when that pads less and at most one full chunk
    was taken (fewer, wider dots otherwise): 170 -> 64+64+64, 74 -> 64+16, 58 -> 64,
    40 -> 32+16, 20 -> 32, 10 -> 16."""
    width = int(width)
    assert width >= 1, width
    base = 64 if width <= MAX_CHUNKS * 64 else triton.next_power_of_2(-(-width // MAX_CHUNKS))
    full = min(width // base, MAX_CHUNKS)
    rem = width - full * base
    out = [base] * full
    if rem > 0:
        one = max(16, triton.next_power_of_2(rem))
        hi = max(16, 1 << (rem.bit_length() - 1))
        two = [hi] + ([max(16, triton.next_power_of_2(rem - hi))] if rem > hi else [])
        out += two if full <= 1 and sum(two) < one else [one]
    assert len(out) <= MAX_CHUNKS and sum(out) >= width, (width, out)
    return tuple(out + [0] * (MAX_CHUNKS - len(out)))


def check_chunks(BM: int, chunks, out_p: int, one: bool) -> None:
    """Host-side shape checks: the interpreter runs any shape, the GPU compiler wants every
    tile a power of two and every dot dimension >= 16."""
    def pow2(n):
        return n > 0 and n & (n - 1) == 0

    assert pow2(BM) and BM >= 16, f"BM = {BM} must be a power of two >= 16"
    assert pow2(out_p), f"OUT_P = {out_p} must be a power of two"
    if one:
        assert chunks[0] == out_p and not any(chunks[1:]), (chunks, out_p)
        return
    assert out_p >= 16, f"tl.dot needs N >= 16, got OUT_P = {out_p}"
    for c in chunks:
        assert c == 0 or (pow2(c) and c >= 16), f"chunk widths must be powers of two >= 16, got {chunks}"
    assert chunks[0] > 0


def kernel_precision(precision: str, interpreting: bool) -> str:
    """The kernels' PREC constexpr for an op precision."""
    return "bf16emu" if precision == "bf16" and interpreting else precision


def needs_int64(*extents: int) -> bool:
    """Whether any element offset the kernels form (pixels, output values, P entries, LR
    values) can reach 2^31: then their index math runs in int64."""
    return max(extents) >= 2 ** 31 - 1
