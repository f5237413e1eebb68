"""MATLAB-style bicubic resize (``imresize(x, scale)`` with the default ``'bicubic'`` method).

This is how PCSR makes its LR images (training pairs, evaluation, the demo) and its bicubic
baseline, so the LR a model sees here must be the LR the authors' models saw.

The math, per axis (in length ``n``, out length ``m``, scale ``s``)::

    cubic(t) = 1.5|t|^3 - 2.5|t|^2 + 1             |t| <= 1       (Keys, a = -0.5)
             = -0.5|t|^3 + 2.5|t|^2 - 4|t| + 2      1 < |t| <= 2
             = 0                                    otherwise
    pos_i    = (i + 0.5) / s - 0.5                  output index i -> input coordinate
    h(t)     = cubic(s * t) if s < 1 (antialiasing: the kernel is stretched by 1/s)
               cubic(t)     otherwise
    w_ij     = h(pos_i - j) / sum_j' h(pos_i - j')  over the taps j of output i
    y_i      = sum_j w_ij * x[mirror(j)]

with ``ceil(4 / s) + 2`` taps (``4 + 2`` when upscaling) starting at
``floor(pos_i) - taps // 2 + 1``, and indices outside ``[0, n)`` mirrored with the edge sample
repeated (``-1 -> 0``, ``-2 -> 1``, ``n -> n - 1``; MATLAB's ``symmetric`` rule, applied modulo
``2n`` so that any tap count works).  The height is resized first, then the width.  With
``scale`` given, the output size is ``ceil(n * scale)`` and the weights use ``scale`` itself;
with ``size`` given, each axis uses ``s = m / n``.  An axis whose scale is exactly 1 is copied.

Float in, float out: no clamping and no quantisation, so values may overshoot [0, 1].
"""

from __future__ import annotations

import math

import torch

__all__ = ["imresize", "resize_weights"]


def _cubic(t: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    at = t.abs()
    at2 = at * at
    at3 = at2 * at
    near = (1.5 * at3 - 2.5 * at2 + 1.0) * (at <= 1)
    far = (-0.5 * at3 + 2.5 * at2 - 4.0 * at + 2.0) * ((at > 1) & (at <= 2))
    return near + far


def resize_weights(in_len: int, out_len: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Tap indices and weights of one axis: ``y[i] = sum_k w[k, i] * x[idx[k, i]]``.

    Returns ``(idx [K, out_len] int64, w [K, out_len] float64)`` on the CPU, with every index
    already mirrored into ``[0, in_len)``.  Taps whose weight is zero for every output are
    dropped (adding an exact zero changes nothing, so the result is unaffected).
    """
    # float64 throughout: the weights are then exact to ~1e-16 whatever the image dtype,
    # and are cast once when applied.
    taps = 4
    stretch = 1.0
    if scale < 1:
        stretch = scale
        taps = math.ceil(taps / scale)
    taps += 2  # one spare tap either side, as MATLAB allows, so rounding never cuts the support

    pos = (torch.arange(out_len, dtype=torch.float64) + 0.5) / scale - 0.5  # [out]
    first = torch.floor(pos) - (taps // 2) + 1  # [out]
    j = first.unsqueeze(0) + torch.arange(taps, dtype=torch.float64).unsqueeze(1)  # [K, out]
    w = _cubic((pos.unsqueeze(0) - j) * stretch)  # [K, out]
    w = w / w.sum(dim=0, keepdim=True)

    # Mirror with the edge repeated: the sequence 0..n-1, n-1..0 repeats with period 2n.
    period = 2 * in_len
    jm = torch.remainder(j.long(), period)
    idx = torch.where(jm < in_len, jm, period - 1 - jm)

    keep = (w != 0).any(dim=1)
    return idx[keep].contiguous(), w[keep].contiguous()


def _resize_rows(x: torch.Tensor, out_len: int, scale: float) -> torch.Tensor:
    """Resize ``x [N, H, W]`` along H, the axis whose slices are contiguous rows."""
    idx, w = resize_weights(x.shape[1], out_len, scale)  # [K, out_len] each
    idx = idx.to(x.device)
    w = w.to(device=x.device, dtype=x.dtype).unsqueeze(-1)  # [K, out_len, 1]
    if torch.is_grad_enabled() and x.requires_grad:
        # out= variants do not record autograd history; this path allocates per tap.
        out = x.index_select(1, idx[0]) * w[0]
        for k in range(1, idx.shape[0]):
            out = out + x.index_select(1, idx[k]) * w[k]
        return out
    # One gather per tap into a reused buffer: memory stays at two output-sized buffers and
    # no allocation happens in the loop (5x faster on CPU than allocating per tap).  A dense
    # [out, in] matmul would do in/taps times more work (x4 down: 4*out columns vs 18 taps).
    buf = x.new_empty(x.shape[0], out_len, x.shape[2])  # [N, out_len, W]
    out = torch.zeros_like(buf)
    for k in range(idx.shape[0]):
        torch.index_select(x, 1, idx[k], out=buf)
        out.addcmul_(buf, w[k])
    return out


def _resize_axis(x: torch.Tensor, dim: int, out_len: int, scale: float) -> torch.Tensor:
    """Resize ``x [N, H, W]`` along ``dim`` (1 = height, 2 = width)."""
    if dim == 1:
        return _resize_rows(x, out_len, scale)
    # Gathering whole rows is much faster than gathering columns, so the width pass runs on
    # the transposed image; the transposes cost less than the strided gathers they avoid.
    xt = x.transpose(1, 2).contiguous()  # [N, W, H]
    return _resize_rows(xt, out_len, scale).transpose(1, 2).contiguous()


def _check_scale(scale) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise ValueError(f"imresize: scale must be a number, got {type(scale).__name__}")
    scale = float(scale)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"imresize: scale must be finite and > 0, got {scale}")
    return scale


def imresize(
    x: torch.Tensor,
    scale: float | None = None,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """MATLAB ``imresize(x, scale)`` / ``imresize(x, [H, W])``, bicubic, antialiased when shrinking.

    Args:
        x: ``[C, H, W]`` or ``[B, C, H, W]``, float32 or float64, any device.
        scale: output size ``ceil(H * scale) x ceil(W * scale)``; the weights use ``scale``.
        size: ``(H_out, W_out)``; axis scales are ``H_out / H`` and ``W_out / W``.
            Give exactly one of ``scale`` and ``size``.

    Returns:
        A tensor of ``x``'s rank, dtype and device, ``[..., H_out, W_out]``; values are not
        clamped.  Differentiable with respect to ``x``.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"imresize: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (3, 4):
        raise ValueError(
            f"imresize: x must be [C, H, W] or [B, C, H, W], got shape {tuple(x.shape)}"
        )
    if x.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"imresize: x must be float32 or float64, got {x.dtype}")
    h, w = x.shape[-2:]
    if h < 1 or w < 1:
        raise ValueError(f"imresize: x must have H, W >= 1, got shape {tuple(x.shape)}")
    if (scale is None) == (size is None):
        raise ValueError(
            f"imresize: give exactly one of scale and size, got scale={scale!r}, size={size!r}"
        )

    if scale is not None:
        scale = _check_scale(scale)
        out_h, out_w = math.ceil(h * scale), math.ceil(w * scale)
        scale_h = scale_w = scale
    else:
        if (
            not isinstance(size, (tuple, list))
            or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in size)
        ):
            raise ValueError(f"imresize: size must be a pair of ints (H_out, W_out), got {size!r}")
        out_h, out_w = size
        if out_h < 1 or out_w < 1:
            raise ValueError(f"imresize: size must be >= 1 on both axes, got {tuple(size)}")
        scale_h, scale_w = out_h / h, out_w / w

    lead = x.shape[:-2]
    y = x.reshape(-1, h, w)  # [N, H, W]
    resized = False
    if scale_h != 1:
        y = _resize_axis(y, 1, out_h, scale_h)
        resized = True
    if scale_w != 1:
        y = _resize_axis(y, 2, out_w, scale_w)
        resized = True
    if not resized:
        y = y.clone()  # never hand back an alias of the input
    return y.reshape(*lead, out_h, out_w)
