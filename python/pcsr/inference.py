"""How a backbone runs at inference: BatchNorm folded, memory format, channel padding and
arithmetic, chosen per device and per the package's precision setting.

The precision setting (:func:`pcsr_kernels.set_precision`, ``PCSR_PRECISION``) names the
arithmetic of the upsampler MLPs; the backbone follows the same setting:

============  ==========================================================================
``ieee``      fp32 convolutions, TF32 off (PyTorch's own default lets cuDNN use TF32)
``tf32x3``    the same as ``ieee``: cuDNN has no split-TF32 convolution, and plain fp32
              is what "error ~1e-6" asks of the backbone
``tf32``      TF32 tensor-core convolutions on CUDA; fp32 on CPU (no TF32 there)
``bf16``      bf16 autocast on CUDA and on CPU (oneDNN's bf16 convolutions); the features
              come back as fp32, and the classifier always runs in fp32
============  ==========================================================================

Layout, measured (``benchmarks/backbone_forms.py``; numbers in ``benchmarks/RESULTS.md``):
channels_last on both devices; on CUDA the channel counts are also zero-padded to
multiples of 8 per group (:mod:`pcsr.padding`: SRResNet-PCSR 58 -> 64, CARN-PCSR 13 -> 16
per group, FSRCNN's s 12 -> 16) so that cuDNN can pick its tensor-core kernels. On the
CPU padding costs time (oneDNN gains nothing from it and the padded convolutions do more
work), so it is off there.

The prepared module takes and returns ordinary (NCHW-contiguous, the input's dtype) tensors, so the
kernels and the tiling code see the same features as from the plain folded backbone.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.fx
import torch.nn as nn

from .backbones import fold_batchnorm
from .padding import pad_channels

__all__ = ["Form", "default_form", "prepare_backbone", "PreparedBackbone", "arithmetic"]

PRECISIONS = ("ieee", "tf32x3", "tf32", "bf16")


@dataclass(frozen=True)
class Form:
    """One way of running a backbone. ``pad``: channel multiple (1: none);
    ``autocast``: the autocast dtype (``None``: fp32); ``tf32``: TF32 convolutions (CUDA)."""
    channels_last: bool = True
    pad: int = 1
    autocast: torch.dtype | None = None
    tf32: bool = False

    def describe(self) -> str:
        parts = ["channels_last" if self.channels_last else "NCHW"]
        if self.pad > 1:
            parts.append(f"padded to x{self.pad}")
        parts.append({None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.autocast]
                     + (" (TF32)" if self.tf32 else ""))
        return ", ".join(parts)


def _check_precision(precision: str) -> str:
    if not isinstance(precision, str) or precision.strip().lower() not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision.strip().lower()


def default_form(device_type: str, precision: str) -> Form:
    """The fastest form that gives the plain backbone's output to the precision's rounding
    (see the module docstring)."""
    precision = _check_precision(precision)
    autocast = torch.bfloat16 if precision == "bf16" else None
    if device_type == "cuda":
        return Form(channels_last=True, pad=8, autocast=autocast, tf32=precision == "tf32")
    return Form(channels_last=True, pad=1, autocast=autocast, tf32=False)


def _conv_tf32_setter():
    """(get, set) of cuDNN's convolution TF32 switch. The newer per-backend API is used
    when torch has it: mixing it with the legacy ``allow_tf32`` flag makes torch raise."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        return (lambda: conv.fp32_precision,
                lambda on: setattr(conv, "fp32_precision", "tf32" if on else "ieee"),
                lambda v: setattr(conv, "fp32_precision", v))
    return (lambda: torch.backends.cudnn.allow_tf32,
            lambda on: setattr(torch.backends.cudnn, "allow_tf32", bool(on)),
            lambda v: setattr(torch.backends.cudnn, "allow_tf32", v))


@contextlib.contextmanager
def arithmetic(form: Form, device_type: str, benchmark: bool | None = None):
    """The form's arithmetic around a call: autocast, cuDNN's TF32 switch and (when given)
    ``cudnn.benchmark``, restored afterwards."""
    with contextlib.ExitStack() as stack:
        if device_type == "cuda":
            get, set_, restore = _conv_tf32_setter()
            old = get()
            set_(form.tf32)
            stack.callback(restore, old)
            if benchmark is not None:
                old_b = torch.backends.cudnn.benchmark
                torch.backends.cudnn.benchmark = bool(benchmark)
                stack.callback(setattr, torch.backends.cudnn, "benchmark", old_b)
        if form.autocast is not None:
            # no weight-cast cache: a cast cached across a CUDA-graph capture would outlive it
            stack.enter_context(torch.autocast(device_type, dtype=form.autocast, cache_enabled=False))
        yield


class PreparedBackbone(nn.Module):
    """A backbone in a given :class:`Form`: ``forward(x [B,3,h,w]) -> features [B,D,h,w]``
    in ``x``'s dtype and NCHW-contiguous, whatever the form computes in."""

    def __init__(self, core: nn.Module, form: Form, out_dim: int):
        super().__init__()
        self.core = core
        self.form = form
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        if self.form.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with arithmetic(self.form, x.device.type):
            y = self.core(x)
        # .contiguous(): channels_last back to NCHW, and the padded SRResNet's channel slice
        return y.to(dtype).contiguous()


def prepare_backbone(backbone: nn.Module, form: Form) -> PreparedBackbone:
    """An inference copy of ``backbone`` in ``form``: BatchNorm folded, channels padded when
    the form says so, traced with ``torch.fx`` (each activation freed after its last
    reader), weights in the form's memory format. ``backbone`` is left untouched."""
    core = pad_channels(backbone, form.pad) if form.pad > 1 else fold_batchnorm(backbone)
    out_dim = getattr(core, "out_dim", getattr(backbone, "out_dim", None))
    try:
        core = torch.fx.symbolic_trace(core)
    except Exception:  # noqa: BLE001 - an untraceable module still runs, eagerly
        pass
    if form.channels_last:
        core = core.to(memory_format=torch.channels_last)
    return PreparedBackbone(core.eval(), form, out_dim)
